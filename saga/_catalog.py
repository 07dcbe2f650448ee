"""The catalog: every action a plan may name, declared once next to its activity.

```python
@compensated_by(refund_payment)
@activity.defn
async def charge_payment(self, inp: ChargeInput) -> ChargeResult: ...
```

The decorator reads the action's input and output models from the type hints, names
the action ``system.verb`` from the module and the function (``activities.payments`` +
``charge_payment`` -> ``payments.charge``) unless ``action=`` says otherwise, and
registers it in :data:`catalog`.
"""

from __future__ import annotations

import enum
import inspect
import typing
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, TypeVar, overload

from pydantic import BaseModel, ConfigDict, Field
from temporalio.common import RetryPolicy

from saga._errors import CatalogError
from saga._money import money_fields

F = TypeVar("F", bound=Callable[..., Any])

DEFAULT_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=30),
    maximum_attempts=5,
)
DEFAULT_COMPENSATION_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=30),
    maximum_attempts=10,
)


DEFAULT_HEARTBEAT_TIMEOUT = timedelta(seconds=5)
"""Every step and compensation heartbeats (the ledger interceptor beats for it): a worker
that dies mid-step is noticed within this, and another worker retries the step."""


def unbounded(policy: RetryPolicy) -> RetryPolicy:
    """``policy`` as given to Temporal: the same back-off, no cap on attempts.

    Temporal counts an attempt lost with its worker (a heartbeat time-out) like any
    other; the ledger interceptor counts only real failures against the policy's
    ``maximum_attempts``, so a worker dying does not spend a step's retry budget.
    """
    return RetryPolicy(
        initial_interval=policy.initial_interval,
        backoff_coefficient=policy.backoff_coefficient,
        maximum_interval=policy.maximum_interval,
        maximum_attempts=0,
        non_retryable_error_types=policy.non_retryable_error_types,
    )


class ActionKind(enum.StrEnum):
    """How a step relates to undoing the saga."""

    COMPENSABLE = "compensable"
    """Has a compensation that undoes it."""
    PIVOT = "pivot"
    """Cannot be undone (an email sent): every compensable step must come before it."""
    READ_ONLY = "read_only"
    """Changes nothing, so there is nothing to undo."""


class Delivery(enum.StrEnum):
    """What a step promises when a retry follows an attempt whose outcome was lost."""

    EXACTLY_ONCE = "exactly_once"
    """The ledger and the action's own look-up by idempotency key make the effect happen
    once however often the step runs (the action finds and adopts an earlier effect)."""
    AT_LEAST_ONCE = "at_least_once"
    """A retry does it again; the receiver gets a stable id (the idempotency key) to drop
    the duplicate by, if it does."""
    AT_MOST_ONCE = "at_most_once"
    """A retry that finds an earlier attempt which may have taken effect does not repeat
    it: the step is parked for an operator (the action marks the point of no return with
    :meth:`saga.StepContext.delivering`)."""


@dataclass(frozen=True)
class ActionSpec:
    """What the engine knows about one action."""

    name: str
    activity_name: str
    kind: ActionKind
    description: str
    input_model: type[BaseModel]
    output_model: type[BaseModel] | None
    compensation: str | None = None
    delivery: Delivery = Delivery.EXACTLY_ONCE
    start_to_close_timeout: timedelta = timedelta(seconds=60)
    heartbeat_timeout: timedelta | None = DEFAULT_HEARTBEAT_TIMEOUT
    """For the step and its compensation; ``None`` turns heartbeats off."""
    retry_policy: RetryPolicy = field(default_factory=lambda: DEFAULT_RETRY)
    """Its ``maximum_attempts`` is the budget of real failures (see :func:`unbounded`)."""
    compensation_timeout: timedelta = timedelta(seconds=60)
    compensation_retry_policy: RetryPolicy = field(
        default_factory=lambda: DEFAULT_COMPENSATION_RETRY
    )
    builtin: bool = False

    @property
    def money(self) -> dict[str, str]:
        """The input's :data:`~saga.Amount` and :data:`~saga.Currency` fields, by name."""
        return money_fields(self.input_model)

    def amounts(self, args: dict[str, Any]) -> list[int]:
        """The amounts in validated ``args``: what the policy counts."""
        return [args[f] for f, kind in self.money.items() if kind == "amount" and f in args]

    def currencies(self, args: dict[str, Any]) -> list[str]:
        return [args[f] for f, kind in self.money.items() if kind == "currency" and f in args]

    def describe(self) -> dict[str, Any]:
        """JSON-ready description: what a planner needs to write a valid step."""
        return {
            "action": self.name,
            "kind": self.kind.value,
            "description": self.description,
            "compensation": self.compensation,
            "delivery": self.delivery.value,
            "args_schema": self.input_model.model_json_schema(),
        }


@dataclass
class Catalog:
    """Actions by name, and by the Temporal activity name that carries them."""

    _by_name: dict[str, ActionSpec] = field(default_factory=dict)
    _by_activity: dict[str, ActionSpec] = field(default_factory=dict)

    def register(self, spec: ActionSpec) -> None:
        try:
            spec.money  # noqa: B018 - money the policy could not read is refused here
        except TypeError as exc:
            raise CatalogError(f"action {spec.name!r}: {exc}") from None
        existing = self._by_name.get(spec.name)
        if existing is not None and existing.activity_name != spec.activity_name:
            raise CatalogError(
                f"action {spec.name!r} is declared twice "
                f"({existing.activity_name} and {spec.activity_name})"
            )
        self._by_name[spec.name] = spec
        self._by_activity[spec.activity_name] = spec

    def get(self, name: str) -> ActionSpec | None:
        return self._by_name.get(name)

    def by_activity(self, activity_name: str) -> ActionSpec | None:
        return self._by_activity.get(activity_name)

    def names(self) -> list[str]:
        return sorted(self._by_name)

    def __iter__(self) -> Iterator[ActionSpec]:
        return iter(sorted(self._by_name.values(), key=lambda s: s.name))

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def only(self, names: Iterable[str]) -> Catalog:
        """A catalog of these actions (and the built-in ones) only."""
        keep = set(names)
        out = Catalog()
        for spec in self:
            if spec.builtin or spec.name in keep:
                out.register(spec)
        return out

    def json_schema(self) -> dict[str, Any]:
        """The catalog as JSON schema, one entry per action (the agent reads this)."""
        return {"actions": [spec.describe() for spec in self]}


catalog = Catalog()
"""The process-wide catalog that the decorators register into."""


def activity_name(fn: Callable[..., Any]) -> str:
    """The Temporal activity name of ``fn`` (an ``@activity.defn``), or CatalogError."""
    defn = getattr(fn, "__temporal_activity_definition", None)
    name = getattr(defn, "name", None)
    if not name:
        raise CatalogError(
            f"{getattr(fn, '__qualname__', fn)!r} is not an activity: "
            "put @activity.defn under the saga decorator"
        )
    return str(name)


def _models(fn: Callable[..., Any]) -> tuple[type[BaseModel], type[BaseModel] | None]:
    hints = typing.get_type_hints(fn)
    params = [p for p in inspect.signature(fn).parameters if p != "self"]
    if not inspect.iscoroutinefunction(fn):
        raise CatalogError(f"{fn.__qualname__}: saga actions must be async activities")
    if not params:
        raise CatalogError(f"{fn.__qualname__}: an action takes one pydantic input model")
    inp = hints.get(params[0])
    if not (isinstance(inp, type) and issubclass(inp, BaseModel)):
        raise CatalogError(f"{fn.__qualname__}: its input must be a pydantic model")
    out = hints.get("return")
    if not (isinstance(out, type) and issubclass(out, BaseModel)):
        out = None
    return inp, out


def _derive_name(fn: Callable[..., Any]) -> str:
    system = fn.__module__.rsplit(".", 1)[-1]
    verb = fn.__name__.split("_", 1)[0]
    return f"{system}.{verb}"


def _declare(
    fn: Callable[..., Any],
    kind: ActionKind,
    compensation: Callable[..., Any] | None,
    action: str | None,
    options: dict[str, Any],
) -> None:
    inp, out = _models(fn)
    comp_name = None
    if compensation is not None:
        comp_name = activity_name(compensation)
        comp_params = [p for p in inspect.signature(compensation).parameters if p != "self"]
        if len(comp_params) != 2:
            raise CatalogError(
                f"{compensation.__qualname__}: a compensation takes (input, result | None)"
            )
    catalog.register(
        ActionSpec(
            name=action or _derive_name(fn),
            activity_name=activity_name(fn),
            kind=kind,
            description=inspect.cleandoc(fn.__doc__ or "").split("\n\n")[0],
            input_model=inp,
            output_model=out,
            compensation=comp_name,
            **options,
        )
    )


def compensated_by(
    compensation: Callable[..., Any],
    *,
    action: str | None = None,
    delivery: Delivery = Delivery.EXACTLY_ONCE,
    start_to_close_timeout: timedelta = timedelta(seconds=60),
    heartbeat_timeout: timedelta | None = DEFAULT_HEARTBEAT_TIMEOUT,
    retry_policy: RetryPolicy = DEFAULT_RETRY,
    compensation_timeout: timedelta = timedelta(seconds=60),
    compensation_retry_policy: RetryPolicy = DEFAULT_COMPENSATION_RETRY,
) -> Callable[[F], F]:
    """Declare a forward activity and the activity that undoes it.

    The compensation is called as ``compensation(input, result)`` where ``result`` is
    the forward step's recorded result, or ``None`` when none was recorded (the step
    failed, timed out or was cancelled, and may or may not have taken effect): it must
    then find the effect by the step's idempotency key, or do nothing.

    ``delivery`` says what a retry after a lost outcome does (see :class:`Delivery`).
    """

    def decorate(fn: F) -> F:
        _declare(
            fn,
            ActionKind.COMPENSABLE,
            compensation,
            action,
            {
                "delivery": Delivery(delivery),
                "start_to_close_timeout": start_to_close_timeout,
                "heartbeat_timeout": heartbeat_timeout,
                "retry_policy": retry_policy,
                "compensation_timeout": compensation_timeout,
                "compensation_retry_policy": compensation_retry_policy,
            },
        )
        return fn

    return decorate


class _Uncompensated:
    """``@pivot`` / ``@read_only``, bare or with options: ``@pivot(delivery=...)``."""

    def __init__(self, kind: ActionKind) -> None:
        self._kind = kind

    @overload
    def __call__(self, fn: F, /) -> F: ...

    @overload
    def __call__(
        self,
        fn: None = None,
        /,
        *,
        action: str | None = None,
        delivery: Delivery = Delivery.EXACTLY_ONCE,
        start_to_close_timeout: timedelta = timedelta(seconds=60),
        heartbeat_timeout: timedelta | None = DEFAULT_HEARTBEAT_TIMEOUT,
        retry_policy: RetryPolicy = DEFAULT_RETRY,
    ) -> Callable[[F], F]: ...

    def __call__(
        self,
        fn: F | None = None,
        /,
        *,
        action: str | None = None,
        delivery: Delivery = Delivery.EXACTLY_ONCE,
        start_to_close_timeout: timedelta = timedelta(seconds=60),
        heartbeat_timeout: timedelta | None = DEFAULT_HEARTBEAT_TIMEOUT,
        retry_policy: RetryPolicy = DEFAULT_RETRY,
    ) -> F | Callable[[F], F]:
        def decorate(fn: F) -> F:
            _declare(
                fn,
                self._kind,
                None,
                action,
                {
                    "delivery": Delivery(delivery),
                    "start_to_close_timeout": start_to_close_timeout,
                    "heartbeat_timeout": heartbeat_timeout,
                    "retry_policy": retry_policy,
                },
            )
            return fn

        return decorate if fn is None else decorate(fn)


pivot = _Uncompensated(ActionKind.PIVOT)
"""Declare an irreversible action: ``@pivot`` above ``@activity.defn``; one that no
receiver can de-duplicate says so: ``@pivot(delivery=Delivery.AT_MOST_ONCE)``."""

read_only = _Uncompensated(ActionKind.READ_ONLY)
"""Declare an action that changes nothing: ``@read_only`` above ``@activity.defn``."""


class WaitInput(BaseModel):
    """Pause the saga on a durable timer."""

    model_config = ConfigDict(extra="forbid")
    seconds: float = Field(gt=0, le=7 * 24 * 3600, description="How long to wait.")


WAIT = ActionSpec(
    name="saga.wait",
    activity_name="",
    kind=ActionKind.READ_ONLY,
    description="Wait for a number of seconds on a durable timer before the next step.",
    input_model=WaitInput,
    output_model=None,
    builtin=True,
)
catalog.register(WAIT)
