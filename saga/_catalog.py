"""The catalog: every action a plan may name, declared once next to its activity.

```python
# activities/payments.py
@compensable
@activity.defn
async def charge_payment(self, inp: ChargeInput) -> ChargeResult: ...

# compensations/payments.py
@compensates(PaymentActivities.charge_payment)
@activity.defn
async def refund_payment(self, inp: ChargeInput, result: ChargeResult | None) -> ...: ...
```

The decorator reads the action's input and output models from the type hints, names
the action ``system.verb`` from the module and the function (``activities.payments`` +
``charge_payment`` -> ``payments.charge``) unless ``action=`` says otherwise, and
registers it in :data:`catalog`.
"""

from __future__ import annotations

import dataclasses
import enum
import importlib
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
from saga._settings import Settings
from saga._systems import CardVaultFactory, ReaderFactory, Seed, activity_sources

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


class StepResult(BaseModel):
    """What a forward action returns: at least the id of the effect in its system (a
    PaymentIntent, a reservation, an issue), which the ledger records for the step."""

    external_id: str | None = Field(None, description="The effect's id in its system.")


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
    _readers: dict[str, ReaderFactory] = field(default_factory=dict)
    _seeds: dict[str, Seed] = field(default_factory=dict)
    _card_vaults: dict[str, CardVaultFactory] = field(default_factory=dict)

    def add_card_vault(self, action: str, vault: CardVaultFactory) -> None:
        """Register how card numbers in ``action``'s arguments become payment method ids."""
        self._card_vaults[action] = vault

    def card_vaults(self) -> dict[str, CardVaultFactory]:
        return dict(self._card_vaults)

    def add_reader(self, action: str, reader: ReaderFactory) -> None:
        """Register how reconciliation reads the effects of ``action`` (its system's
        :class:`~saga.Reconciler`, made from settings)."""
        self._readers[action] = reader

    def readers(self) -> dict[str, ReaderFactory]:
        """Reconciliation readers by action name."""
        return dict(self._readers)

    def add_seed(self, system: str, seed: Seed) -> None:
        """Register what `saga dev` and the demo prepare in ``system``."""
        self._seeds[system] = seed

    def seeds(self) -> dict[str, Seed]:
        return dict(self._seeds)

    def load_systems(self, settings: Settings) -> None:
        """Import the systems ``settings`` configures (``SAGA_ACTIVITIES``, by name):
        importing a system declares its actions, readers and seeding here."""
        for module, _ in activity_sources(settings):
            importlib.import_module(module)

    def prepare_systems(self, settings: Settings) -> None:
        """Run every configured system's dev seeding (idempotent)."""
        self.load_systems(settings)
        for seed in self.seeds().values():
            seed.prepare(settings)

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

    def check_compensations(self, activity_names: Iterable[str] | None = None) -> None:
        """Refuse a compensable action whose compensation was never declared (its
        system's ``compensations`` module was not imported): among the actions carried
        by ``activity_names``, or all of them."""
        names = None if activity_names is None else set(activity_names)
        missing = [
            spec
            for spec in self
            if spec.kind is ActionKind.COMPENSABLE
            and spec.compensation is None
            and (names is None or spec.activity_name in names)
        ]
        if missing:
            raise CatalogError(
                "; ".join(
                    f"action {spec.name!r} ({spec.activity_name}) is compensable but has no "
                    "compensation: its system's compensations module was not imported "
                    f"(e.g. compensations.{spec.name.split('.')[0]})"
                    for spec in missing
                )
            )

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


@dataclass(frozen=True)
class StepOptions:
    """How a step runs and how its compensation runs: one set of options for every
    decorator (``@compensable``, ``@pivot``, ``@read_only``, ``@compensated_by``)."""

    delivery: Delivery = Delivery.EXACTLY_ONCE
    start_to_close_timeout: timedelta = timedelta(seconds=60)
    heartbeat_timeout: timedelta | None = DEFAULT_HEARTBEAT_TIMEOUT
    """For the step and its compensation; ``None`` turns heartbeats off."""
    retry_policy: RetryPolicy = field(default_factory=lambda: DEFAULT_RETRY)
    compensation_timeout: timedelta = timedelta(seconds=60)
    compensation_retry_policy: RetryPolicy = field(
        default_factory=lambda: DEFAULT_COMPENSATION_RETRY
    )

    def spec_fields(self) -> dict[str, Any]:
        """The options as :class:`ActionSpec` fields."""
        return {
            "delivery": Delivery(self.delivery),
            "start_to_close_timeout": self.start_to_close_timeout,
            "heartbeat_timeout": self.heartbeat_timeout,
            "retry_policy": self.retry_policy,
            "compensation_timeout": self.compensation_timeout,
            "compensation_retry_policy": self.compensation_retry_policy,
        }


def _check_compensation(compensation: Callable[..., Any]) -> str:
    name = activity_name(compensation)
    params = [p for p in inspect.signature(compensation).parameters if p != "self"]
    if len(params) != 2:
        raise CatalogError(
            f"{compensation.__qualname__}: a compensation takes (input, result | None)"
        )
    return name


def _declare(
    fn: Callable[..., Any],
    kind: ActionKind,
    compensation: Callable[..., Any] | None,
    action: str | None,
    options: StepOptions,
) -> None:
    inp, out = _models(fn)
    catalog.register(
        ActionSpec(
            name=action or _derive_name(fn),
            activity_name=activity_name(fn),
            kind=kind,
            description=inspect.cleandoc(fn.__doc__ or "").split("\n\n")[0],
            input_model=inp,
            output_model=out,
            compensation=None if compensation is None else _check_compensation(compensation),
            **options.spec_fields(),
        )
    )


@overload
def compensable(fn: F, /) -> F: ...


@overload
def compensable(
    fn: None = None, /, *, action: str | None = None, options: StepOptions | None = None
) -> Callable[[F], F]: ...


def compensable(
    fn: F | None = None, /, *, action: str | None = None, options: StepOptions | None = None
) -> F | Callable[[F], F]:
    """Declare a forward action that can be undone; its undo declares itself with
    :func:`compensates` in the system's ``compensations`` module, which the forward
    module does not import. Until then the action has no compensation, and a worker
    that would run it is refused (:meth:`Catalog.check_compensations`).

    Bare (``@compensable``) or with options: ``@compensable(options=StepOptions(...))``;
    the compensation's own time-out and retries may be given here or by ``@compensates``.
    """

    def decorate(fn: F) -> F:
        _declare(fn, ActionKind.COMPENSABLE, None, action, options or StepOptions())
        return fn

    return decorate if fn is None else decorate(fn)


def compensates(
    forward: Callable[..., Any],
    *,
    timeout: timedelta | None = None,
    retry_policy: RetryPolicy | None = None,
) -> Callable[[F], F]:
    """Declare the activity that undoes ``forward`` (an ``@compensable`` activity), from
    the compensation's side:

    ```python
    @compensates(PaymentActivities.charge_payment, timeout=timedelta(minutes=2))
    @activity.defn
    async def refund_payment(self, inp: ChargeInput, result: ChargeResult | None): ...
    ```

    It is called as ``compensation(input, result)``, ``result`` being the forward step's
    recorded result or ``None`` when none was recorded (the step failed, timed out or was
    cancelled, and may or may not have taken effect): it must then find the effect by
    the step's idempotency key, or do nothing. ``timeout`` and ``retry_policy`` are the
    compensation's own (default: what ``@compensable`` said).
    """

    def decorate(fn: F) -> F:
        forward_name = activity_name(forward)
        spec = catalog.by_activity(forward_name)
        if spec is None or spec.kind is not ActionKind.COMPENSABLE:
            raise CatalogError(
                f"{getattr(fn, '__qualname__', fn)!r} compensates {forward_name!r}, "
                "which is not declared @compensable"
            )
        changes: dict[str, Any] = {"compensation": _check_compensation(fn)}
        if timeout is not None:
            changes["compensation_timeout"] = timeout
        if retry_policy is not None:
            changes["compensation_retry_policy"] = retry_policy
        catalog.register(dataclasses.replace(spec, **changes))
        return fn

    return decorate


def compensated_by(
    compensation: Callable[..., Any],
    *,
    action: str | None = None,
    options: StepOptions | None = None,
    **option_fields: Any,
) -> Callable[[F], F]:
    """Declare a forward activity and the activity that undoes it, from the forward side
    (when both live together, as in tests; a system declares its undo with
    :func:`compensates` instead, so its forward module does not import its undo).

    The options are a :class:`StepOptions` or its fields as keywords
    (``retry_policy=...``); the compensation is called as for :func:`compensates`.
    """
    opts = dataclasses.replace(options or StepOptions(), **option_fields)

    def decorate(fn: F) -> F:
        _declare(fn, ActionKind.COMPENSABLE, compensation, action, opts)
        return fn

    return decorate


class _Uncompensated:
    """``@pivot`` / ``@read_only``, bare or with options: ``@pivot(delivery=...)`` or
    ``@pivot(options=StepOptions(...))``."""

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
        options: StepOptions | None = None,
        delivery: Delivery = ...,
        start_to_close_timeout: timedelta = ...,
        heartbeat_timeout: timedelta | None = ...,
        retry_policy: RetryPolicy = ...,
    ) -> Callable[[F], F]: ...

    def __call__(
        self,
        fn: F | None = None,
        /,
        *,
        action: str | None = None,
        options: StepOptions | None = None,
        **option_fields: Any,
    ) -> F | Callable[[F], F]:
        opts = dataclasses.replace(options or StepOptions(), **option_fields)

        def decorate(fn: F) -> F:
            _declare(fn, self._kind, None, action, opts)
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
