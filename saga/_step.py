"""The mechanism under every action: ledger-backed, exactly-once step execution.

A worker interceptor wraps each saga activity. Forward steps: claim the idempotency
key in the ledger; if the key already succeeded, return the recorded result without
calling the action; otherwise call it, then record result and external id. An
at-most-once action claims its point of no return (``StepContext.delivering``); a retry
that finds the claim of an attempt with no recorded success does not run it again but
fails with ``DeliveryUncertain`` and the evidence, and the workflow parks the step.
Compensations: hand the compensation the forward result from the ledger when the
workflow has none (the forward step's response was lost), then record the outcome.
Which step an activity runs for comes in its ``saga-step`` header (saga._step_header).
Actions read their step's identity with :func:`current_step`.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import socket
import typing
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel
from temporalio import activity
from temporalio.exceptions import ApplicationError
from temporalio.worker import (
    ActivityInboundInterceptor,
    ExecuteActivityInput,
    Interceptor,
    WorkflowInboundInterceptor,
    WorkflowInterceptorClassInput,
)

from saga._catalog import Catalog, Delivery, catalog
from saga._errors import StepAlreadyCompensated
from saga._faults import Faults, LostResponse
from saga._ledger import Ledger
from saga._ledger_schema import utcnow
from saga._metrics import SagaMetrics
from saga._models import Retry
from saga._step_context import StepContext, _current, current_step, uncertain
from saga._step_failures import (
    IN_FLIGHT,
    counts,
    given_up,
    lost,
    message,
    recorded,
    timed_out,
)
from saga._step_header import (
    COMPENSATE,
    DELIVERY_UNCERTAIN,
    RESEND,
    StepHeader,
    StepHeaderInbound,
    read_header,
    step_from_ids,
)

__all__ = [
    "COMPENSATE",
    "DELIVERY_UNCERTAIN",
    "RESEND",
    "Faults",
    "LedgerInterceptor",
    "StepContext",
    "current_step",
    "idempotency_key",
    "uncertain",
]


def idempotency_key(saga_id: str, step_id: str) -> str:
    return f"{saga_id}/{step_id}"


def _worker_identity() -> str:
    try:
        return activity.client().identity
    except RuntimeError:
        return f"{os.getpid()}@{socket.gethostname()}"


def _dump(value: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, dict):
        return value
    return {"value": value}


def _external_id(result: Any) -> str | None:
    ext = getattr(result, "external_id", None)
    if ext is None and isinstance(result, dict):
        ext = result.get("external_id")
    return None if ext is None else str(ext)


@contextlib.asynccontextmanager
async def _heartbeating(heartbeat_timeout: timedelta | None) -> AsyncIterator[None]:
    """Heartbeat while the action or its compensation runs: a worker that dies mid-step
    is noticed within the heartbeat time-out, and a workflow cancel reaches it promptly.

    The first beat comes after one interval, so a short step sends none.
    """
    if heartbeat_timeout is None:
        yield
        return
    interval = max(heartbeat_timeout.total_seconds() / 4, 0.1)

    async def beat() -> None:
        while True:
            await asyncio.sleep(interval)
            activity.heartbeat()

    task = asyncio.create_task(beat())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(BaseException):
            await task


def _result_model(fn: Callable[..., Any], compensating: bool) -> type[BaseModel] | None:
    """The forward step's result model: what ``fn`` returns, or (a compensation) what its
    second parameter takes."""
    try:
        hints = typing.get_type_hints(fn)
        params = [p for p in inspect.signature(fn).parameters if p != "self"]
    except (NameError, TypeError, ValueError):
        return None
    if compensating:
        hint = hints.get(params[1]) if len(params) > 1 else None
    else:
        hint = hints.get("return")
    for candidate in (hint, *typing.get_args(hint)):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


class _StepInbound(ActivityInboundInterceptor):
    def __init__(
        self,
        next: ActivityInboundInterceptor,
        ledger: Ledger,
        cat: Catalog,
        faults: Faults,
        metrics: SagaMetrics,
    ) -> None:
        super().__init__(next)
        self._ledger = ledger
        self._catalog = cat
        self._faults = faults
        self._metrics = metrics
        self._models: dict[tuple[Any, bool], type[BaseModel] | None] = {}

    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        info = activity.info()
        if info.is_local:
            return await super().execute_activity(input)
        step = read_header(input.headers) or step_from_ids(
            info.activity_type, info.activity_id, self._catalog
        )
        if step is None:
            return await super().execute_activity(input)
        if step.compensating:
            return await self._compensate(step, input)
        return await self._forward(step, input)

    def _result_model(self, step: StepHeader, fn: Callable[..., Any]) -> type[BaseModel] | None:
        key = (fn, step.compensating)
        if key not in self._models:
            model = _result_model(fn, step.compensating)
            if model is None:  # an untyped compensation: the forward action's model
                spec = self._catalog.get(step.action)
                model = spec.output_model if spec is not None else None
            self._models[key] = model
        return self._models[key]

    def _context(self, step: StepHeader, recorded_external_id: str | None) -> StepContext:
        info = activity.info()
        saga_id = info.workflow_id or ""
        return StepContext(
            saga_id=saga_id,
            step_id=step.step_id,
            action=step.action,
            idempotency_key=idempotency_key(saga_id, step.step_id),
            attempt=info.attempt,
            compensating=step.compensating,
            recorded_external_id=recorded_external_id,
            delivery=step.delivery,
            round=0 if step.compensating else step.round,
            worker=_worker_identity(),
            _ledger=self._ledger,
        )

    async def _failed(
        self, exc: BaseException, retry: Retry, record: Callable[..., int | None], *args: Any
    ) -> ApplicationError | None:
        """Record a failed attempt with ``record(*args, message, counts)`` on the ledger;
        the final error once it spent the last of the budget. A lost attempt (given up by
        the server, or handed back by a stopping worker) records nothing."""
        if lost(exc):
            return None
        failures = await asyncio.shield(self._ledger.call(record, *args, message(exc), counts(exc)))
        return given_up(exc, failures, retry)

    async def _forward(self, step: StepHeader, input: ExecuteActivityInput) -> Any:
        info = activity.info()
        saga_id = info.workflow_id or ""
        key = idempotency_key(saga_id, step.step_id)
        ledger = self._ledger
        try:
            prior = await ledger.call(
                ledger.begin_step,
                key,
                saga_id,
                step.step_id,
                step.action,
                info.attempt,
                step.timeout,
                step.round,
            )
        except StepAlreadyCompensated as exc:
            raise ApplicationError(
                str(exc), type="StepAlreadyCompensated", non_retryable=True
            ) from None
        if prior is not None and prior.status == "succeeded":
            activity.logger.info("step %s already succeeded; returning recorded result", key)
            model = self._result_model(step, input.fn)
            if model is not None and prior.result is not None:
                return model.model_validate(prior.result)
            return prior.result
        if (
            step.delivery is Delivery.AT_MOST_ONCE
            and prior is not None
            and prior.delivering_attempt is not None
        ):
            # An earlier attempt may have delivered and no outcome says it did not.
            parked = uncertain(step.action, prior)
            await ledger.call(ledger.fail_step, key, f"{DELIVERY_UNCERTAIN}: {parked}", False)
            raise parked
        budget = step.retry.maximum_attempts
        if prior is not None and 0 < budget <= prior.failures:
            if prior.status == "failed" and prior.error:
                # The last attempt failed and its answer was lost (the server had given
                # the attempt up meanwhile): say what it failed with.
                raise recorded(prior.error)
            final = timed_out(f"step {step.step_id}", prior.failures, step.timeout)
            await ledger.call(ledger.fail_step, key, str(final), False)
            raise final
        token = _current.set(self._context(step, prior.external_id if prior else None))
        try:
            async with _heartbeating(step.heartbeat_timeout):
                with self._metrics.timing(step.action, compensating=False):
                    result = await super().execute_activity(input)
            lose = self._faults.lose_response.get(step.action, 0)
            if step.round == 0 and lose >= info.attempt:
                raise LostResponse(f"injected fault: response of {key} lost")
        except BaseException as exc:
            gave_up = await self._failed(exc, step.retry, ledger.fail_step, key)
            if gave_up is not None:
                raise gave_up from exc
            raise
        finally:
            _current.reset(token)
        await self._ledger.call(self._ledger.finish_step, key, _dump(result), _external_id(result))
        return result

    async def _until_landed(self, key: str, until: datetime, budget: timedelta | None) -> None:
        """Wait while a forward request of the step may still land (an attempt sent it
        and never heard back, see ``StepContext.sending``), so the compensation does not
        look for the effect too soon, find nothing and leave a late one standing. Ends
        early when the attempt is answered; a wait longer than this attempt's own time
        ends it with a retryable ``InFlight`` error that spends no retry budget."""
        loop = asyncio.get_running_loop()
        stop = loop.time() + max((budget or timedelta(minutes=1)).total_seconds() - 5, 1)
        activity.logger.info(
            "compensation of %s waits: a request of the step may land until %s", key, until
        )
        landing: datetime | None = until
        while landing is not None and (left := (landing - utcnow()).total_seconds()) > 0:
            if loop.time() >= stop:
                raise ApplicationError(
                    f"a request of step {key} may still land until "
                    f"{landing.isoformat(timespec='seconds')}; waiting for it",
                    type=IN_FLIGHT,
                )
            await asyncio.sleep(min(left, 1.0, max(stop - loop.time(), 0.01)))
            landing = await self._ledger.call(self._ledger.in_flight_until, key)

    async def _compensate(self, step: StepHeader, input: ExecuteActivityInput) -> Any:
        info = activity.info()
        key = idempotency_key(info.workflow_id or "", step.step_id)
        ledger = self._ledger
        claim = await ledger.call(ledger.begin_compensation, key, step.round, step.timeout)
        if claim is not None and claim.done:
            activity.logger.info("compensation of %s already done; returning its outcome", key)
            return claim.compensation_result()
        retry = step.retry
        if claim is not None and 0 < retry.maximum_attempts <= claim.failures:
            final = timed_out(f"compensation of step {step.step_id}", claim.failures, step.timeout)
            await ledger.call(ledger.finish_compensation, key, "failed", None, str(final), False)
            raise final
        args = list(input.args)
        if len(args) == 2 and args[1] is None and claim is not None:
            result = claim.result()  # the forward step's answer was lost: the ledger has it
            model = self._result_model(step, input.fn) if result is not None else None
            if model is not None:
                args[1] = model.model_validate(result)
                input.args = args
        token = _current.set(self._context(step, claim.external_id if claim else None))
        try:
            async with _heartbeating(step.heartbeat_timeout):
                if claim is not None and claim.in_flight_until is not None:
                    await self._until_landed(key, claim.in_flight_until, step.timeout)
                with self._metrics.timing(step.action, compensating=True):
                    result = await super().execute_activity(input)
        except BaseException as exc:
            gave_up = await self._failed(
                exc, retry, ledger.finish_compensation, key, "failed", None
            )
            if gave_up is not None:
                raise gave_up from exc
            raise
        finally:
            _current.reset(token)
        await self._ledger.call(
            self._ledger.finish_compensation, key, "compensated", _dump(result), None
        )
        if step.round == 1 and self._faults.lose_undo_response.get(step.action, 0) >= info.attempt:
            raise LostResponse(f"injected fault: response of the compensation of {key} lost")
        return result


class LedgerInterceptor(Interceptor):
    """Worker interceptor that puts every saga activity on the ledger; on the workflow
    side it sends each step's identity to its activity in the ``saga-step`` header."""

    def __init__(
        self,
        ledger: Ledger,
        cat: Catalog = catalog,
        faults: Faults | None = None,
        metrics: SagaMetrics | None = None,
    ) -> None:
        self._ledger = ledger
        self._catalog = cat
        self._faults = faults or Faults({})
        self._metrics = metrics or SagaMetrics()

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        return _StepInbound(next, self._ledger, self._catalog, self._faults, self._metrics)

    def workflow_interceptor_class(
        self, input: WorkflowInterceptorClassInput
    ) -> type[WorkflowInboundInterceptor]:
        return StepHeaderInbound
