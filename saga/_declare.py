"""Declaring actions: the decorators that put an activity in the catalog.

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

A decorator reads the action's input and output models from the type hints, names the
action ``system.verb`` from the module and the function (``activities.payments`` +
``charge_payment`` -> ``payments.charge``) unless ``action=`` says otherwise, and
registers it in :data:`saga.catalog`.
"""

from __future__ import annotations

import dataclasses
import inspect
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, TypeVar, overload

from pydantic import BaseModel
from temporalio.common import RetryPolicy

from saga._catalog import (
    DEFAULT_COMPENSATION_RETRY,
    DEFAULT_HEARTBEAT_TIMEOUT,
    DEFAULT_RETRY,
    ActionKind,
    ActionSpec,
    Delivery,
    activity_name,
    catalog,
)
from saga._errors import CatalogError

F = TypeVar("F", bound=Callable[..., Any])


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
    summary: str | None = None
    """How a saga's one-line summary names the step: a format string over its arguments,
    e.g. ``"{quantity} x {sku}"``; an amount reads with its currency (``25.00 EUR``).
    Default: the action's name. Personal data is masked; it is shown and indexed."""

    def spec_fields(self) -> dict[str, Any]:
        """The options as :class:`ActionSpec` fields."""
        return {
            "delivery": Delivery(self.delivery),
            "start_to_close_timeout": self.start_to_close_timeout,
            "heartbeat_timeout": self.heartbeat_timeout,
            "retry_policy": self.retry_policy,
            "compensation_timeout": self.compensation_timeout,
            "compensation_retry_policy": self.compensation_retry_policy,
            "summary": self.summary,
        }


def _first_paragraph(fn: Callable[..., Any]) -> str:
    """A function's docstring, first paragraph, on one line: its words for people."""
    return " ".join(inspect.cleandoc(fn.__doc__ or "").split("\n\n")[0].split())


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
            undo=None if compensation is None else _first_paragraph(compensation),
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
        changes: dict[str, Any] = {
            "compensation": _check_compensation(fn),
            "undo": _first_paragraph(fn),
        }
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
        summary: str | None = ...,
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
