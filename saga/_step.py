"""The mechanism under every action: ledger-backed, exactly-once step execution.

A worker interceptor wraps each catalog activity. Forward steps: claim the idempotency
key in the ledger; if the key already succeeded, return the recorded result without
calling the action; otherwise call it, then record result and external id. An
at-most-once action claims its point of no return (``StepContext.delivering``); a retry
that finds the claim of an attempt with no recorded success does not run it again but
fails with ``DeliveryUncertain`` and the evidence, and the workflow parks the step.
Compensations: hand the compensation the forward result from the ledger when the
workflow has none (the forward step's response was lost), then record the outcome.
Actions read their step's identity with :func:`current_step`.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import os
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from pydantic import BaseModel
from temporalio import activity
from temporalio.common import RetryPolicy
from temporalio.exceptions import ApplicationError
from temporalio.worker import (
    ActivityInboundInterceptor,
    ExecuteActivityInput,
    Interceptor,
)

from saga._catalog import ActionSpec, Catalog, Delivery, catalog
from saga._errors import SagaError, StepAlreadyCompensated
from saga._ledger import Ledger, StepRow, StepSnapshot

COMPENSATE = ":compensate:"
RESEND = ":resend:"
"""``<step id>:resend:<round>``: the activity id of an operator's "do it again" of a step
parked as uncertain (round 0, the plain step id, is the saga's own run of it)."""
DELIVERY_UNCERTAIN = "DeliveryUncertain"
"""Error type of an at-most-once step that an earlier attempt may have delivered; its
details are the evidence (a dict) and the external id the attempt recorded."""


@dataclass(frozen=True)
class StepContext:
    """Who the running action is, as the ledger knows it."""

    saga_id: str
    step_id: str
    action: str
    idempotency_key: str
    """``<saga id>/<step id>``: the same for every attempt and for the compensation."""
    attempt: int
    compensating: bool
    ledger: Ledger
    recorded_external_id: str | None = None
    """External id the ledger already holds for this step (from an earlier attempt that
    called :meth:`record_external_id`, or the forward step's, when compensating)."""
    delivery: Delivery = Delivery.EXACTLY_ONCE
    round: int = 0
    """0, or the operator's n-th "do it again" of a step parked as uncertain."""
    worker: str = ""

    async def record_external_id(self, external_id: str) -> None:
        """Write the external id now, before the action returns (narrows lost responses)."""
        await self.ledger.call(self.ledger.record_external_id, self.idempotency_key, external_id)

    async def delivering(self, external_id: str | None = None, **evidence: str) -> None:
        """Call right before the point after which the effect may have happened (for an
        email: before the DATA command). Records durably that this attempt may deliver,
        with ``evidence`` an operator can check (a message id, the server).

        For an at-most-once action this is a claim: when another attempt of the step got
        here first, raises a non-retryable ``DeliveryUncertain`` error instead, and the
        saga parks the step for an operator. A failure before this call delivered
        nothing, so it is retried as usual.
        """
        found = await self.ledger.call(
            self.ledger.claim_delivery,
            self.idempotency_key,
            self.round,
            self.attempt,
            {"worker": self.worker, **evidence},
            external_id,
            self.delivery is Delivery.AT_MOST_ONCE,
        )
        if found is not None:
            raise uncertain(self.action, found)

    async def nothing_delivered(self) -> None:
        """After :meth:`delivering`: the attempt learnt that it delivered nothing after all
        (the receiver refused it), so a retry may deliver."""
        await self.ledger.call(
            self.ledger.release_delivery, self.idempotency_key, self.round, self.attempt
        )


_current: contextvars.ContextVar[StepContext] = contextvars.ContextVar("saga_step")


def current_step() -> StepContext:
    """The step the calling action runs for; only inside a saga activity."""
    try:
        return _current.get()
    except LookupError:
        raise SagaError("current_step() called outside a saga step") from None


def idempotency_key(saga_id: str, step_id: str) -> str:
    return f"{saga_id}/{step_id}"


class LostResponse(Exception):
    """Injected by a fault hook: the action took effect, its response is dropped."""


@dataclass
class Faults:
    """Fault hooks for tests: drop the response of an action's first attempt(s).

    ``lose_response["payments.charge"] = 1`` makes the first attempt of every
    ``payments.charge`` step take effect and then fail before the ledger records it,
    exactly as if the worker died right after the external call.
    """

    lose_response: dict[str, int]

    @classmethod
    def parse(cls, text: str) -> Faults:
        out: dict[str, int] = {}
        for part in filter(None, (p.strip() for p in text.split(","))):
            action, _, times = part.partition("=")
            out[action] = int(times or 1)
        return cls(lose_response=out)


def uncertain(action: str, row: StepSnapshot) -> ApplicationError:
    """The error that parks an at-most-once step whose attempt ``row.delivering_attempt``
    may have delivered: a message that says so, and the evidence as details."""
    since = row.delivering_since.isoformat(timespec="seconds") if row.delivering_since else "?"
    if row.status == StepRow.FAILED and row.error and not row.error.startswith(DELIVERY_UNCERTAIN):
        ended = f"then failed ({row.error})"
    else:
        ended = "no outcome recorded (its worker died or stopped, or it is still running)"
    evidence: dict[str, Any] = {
        **(row.delivery_evidence or {}),  # worker, and what the action named
        "attempt": row.delivering_attempt,
        "started_at": since,
        "ended": ended,
    }
    if row.delivery_round:
        evidence["round"] = row.delivery_round
    worker = evidence.get("worker") or "an unknown worker"
    return ApplicationError(
        f"{action} may already have taken effect: attempt {row.delivering_attempt} began "
        f"delivering at {since} on {worker}, {ended}; not repeated, an operator decides",
        evidence,
        row.external_id,
        type=DELIVERY_UNCERTAIN,
        non_retryable=True,
    )


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


def _message(exc: BaseException) -> str:
    kind = exc.type if isinstance(exc, ApplicationError) and exc.type else type(exc).__name__
    return f"{kind}: {exc}" if str(exc) else kind


def _lost(exc: BaseException) -> bool:
    """Whether the attempt is lost rather than failed, and so leaves the ledger as it is.

    Lost: the server gave the attempt up (a time-out: the next attempt finds this one
    still running and counts it against the retry budget if it ran out its start-to-close
    time-out); the worker shuts down and hands the step back. A cancel the workflow asked
    for is a failure, but one that spends no budget. (An injected lost response is a
    failure: in the world it is a read time-out or a reset connection.)
    """
    if isinstance(exc, asyncio.CancelledError):
        details = activity.cancellation_details()
        return details is None or not details.cancel_requested
    return False


def _counts(exc: BaseException) -> bool:
    """Whether a failed attempt spends the retry budget (a cancel the workflow asked for
    does not, nor does an attempt that stopped short of repeating a delivery)."""
    if isinstance(exc, ApplicationError) and exc.type == DELIVERY_UNCERTAIN:
        return False
    return not isinstance(exc, asyncio.CancelledError)


def _given_up(
    exc: BaseException, failures: int | None, policy: RetryPolicy
) -> ApplicationError | None:
    """The final, non-retryable error once a retryable failure used the last attempt."""
    budget = policy.maximum_attempts
    if failures is None or budget <= 0 or failures < budget or not _counts(exc):
        return None
    if isinstance(exc, ApplicationError):
        if exc.non_retryable or exc.type in (policy.non_retryable_error_types or ()):
            return None
        kind = exc.type or type(exc).__name__
    else:
        kind = type(exc).__name__
    return ApplicationError(
        f"{exc} (failed {failures} times; out of retries)", type=kind, non_retryable=True
    )


def _timed_out(what: str, failures: int, timeout: timedelta) -> ApplicationError:
    return ApplicationError(
        f"{what} timed out (start-to-close {timeout.total_seconds():g}s); "
        f"failed {failures} times, out of retries",
        type="StartToCloseTimeout",
        non_retryable=True,
    )


@contextlib.asynccontextmanager
async def _heartbeating(spec: ActionSpec) -> AsyncIterator[None]:
    """Heartbeat while the action or its compensation runs: a worker that dies mid-step
    is noticed within the heartbeat time-out, and a workflow cancel reaches it promptly.

    The first beat comes after one interval, so a short step sends none.
    """
    if spec.heartbeat_timeout is None:
        yield
        return
    interval = max(spec.heartbeat_timeout.total_seconds() / 4, 0.1)

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


class _StepInbound(ActivityInboundInterceptor):
    def __init__(
        self, next: ActivityInboundInterceptor, ledger: Ledger, cat: Catalog, faults: Faults
    ) -> None:
        super().__init__(next)
        self._ledger = ledger
        self._catalog = cat
        self._faults = faults

    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        info = activity.info()
        if info.is_local:
            return await super().execute_activity(input)
        spec = self._catalog.by_activity(info.activity_type)
        if spec is None:
            comp = self._compensation_spec(info.activity_type)
            if comp is None:
                return await super().execute_activity(input)
            return await self._compensate(comp, input)
        return await self._forward(spec, input)

    def _context(
        self,
        spec: ActionSpec,
        step_id: str,
        compensating: bool,
        row: StepSnapshot | None,
        round_: int = 0,
    ) -> StepContext:
        info = activity.info()
        saga_id = info.workflow_id or ""
        return StepContext(
            saga_id=saga_id,
            step_id=step_id,
            action=spec.name,
            idempotency_key=idempotency_key(saga_id, step_id),
            attempt=info.attempt,
            compensating=compensating,
            ledger=self._ledger,
            recorded_external_id=row.external_id if row is not None else None,
            delivery=spec.delivery,
            round=round_,
            worker=_worker_identity(),
        )

    def _compensation_spec(self, activity_type: str) -> ActionSpec | None:
        for spec in self._catalog:
            if spec.compensation == activity_type:
                return spec
        return None

    async def _failed(
        self, exc: BaseException, policy: RetryPolicy, record: Callable[..., int | None], *args: Any
    ) -> ApplicationError | None:
        """Record a failed attempt with ``record(*args, message, counts)`` on the ledger;
        the final error once it spent the last of the budget. A lost attempt (given up by
        the server, or handed back by a stopping worker) records nothing."""
        if _lost(exc):
            return None
        failures = await asyncio.shield(
            self._ledger.call(record, *args, _message(exc), _counts(exc))
        )
        return _given_up(exc, failures, policy)

    async def _forward(self, spec: ActionSpec, input: ExecuteActivityInput) -> Any:
        info = activity.info()
        saga_id = info.workflow_id or ""
        step_id, _, resend = info.activity_id.partition(RESEND)
        round_ = int(resend or 0)
        key = idempotency_key(saga_id, step_id)
        ledger = self._ledger
        try:
            prior = await ledger.call(
                ledger.begin_step,
                key,
                saga_id,
                step_id,
                spec.name,
                info.attempt,
                spec.start_to_close_timeout,
                round_,
            )
        except StepAlreadyCompensated as exc:
            raise ApplicationError(
                str(exc), type="StepAlreadyCompensated", non_retryable=True
            ) from None
        if prior is not None and prior.status == "succeeded":
            activity.logger.info("step %s already succeeded; returning recorded result", key)
            if spec.output_model is not None and prior.result is not None:
                return spec.output_model.model_validate(prior.result)
            return prior.result
        if (
            spec.delivery is Delivery.AT_MOST_ONCE
            and prior is not None
            and prior.delivering_attempt is not None
        ):
            # An earlier attempt may have delivered and no outcome says it did not.
            parked = uncertain(spec.name, prior)
            await ledger.call(ledger.fail_step, key, f"{DELIVERY_UNCERTAIN}: {parked}", False)
            raise parked
        budget = spec.retry_policy.maximum_attempts
        if prior is not None and 0 < budget <= prior.failures:  # the last one timed out
            final = _timed_out(f"step {step_id}", prior.failures, spec.start_to_close_timeout)
            await ledger.call(ledger.fail_step, key, str(final), False)
            raise final
        ctx = self._context(spec, step_id, False, prior, round_)
        token = _current.set(ctx)
        try:
            async with _heartbeating(spec):
                result = await super().execute_activity(input)
            if round_ == 0 and self._faults.lose_response.get(spec.name, 0) >= info.attempt:
                raise LostResponse(f"injected fault: response of {key} lost")
        except BaseException as exc:
            gave_up = await self._failed(exc, spec.retry_policy, ledger.fail_step, key)
            if gave_up is not None:
                raise gave_up from exc
            raise
        finally:
            _current.reset(token)
        await self._ledger.call(self._ledger.finish_step, key, _dump(result), _external_id(result))
        return result

    async def _compensate(self, spec: ActionSpec, input: ExecuteActivityInput) -> Any:
        info = activity.info()
        saga_id = info.workflow_id or ""
        step_id, _, round_ = info.activity_id.partition(COMPENSATE)
        key = idempotency_key(saga_id, step_id)
        ledger = self._ledger
        record = await ledger.call(
            ledger.begin_compensation, key, int(round_ or 1), spec.compensation_timeout
        )
        policy = spec.compensation_retry_policy
        if record is not None and 0 < policy.maximum_attempts <= record.compensation_failures:
            final = _timed_out(
                f"compensation of step {step_id}",
                record.compensation_failures,
                spec.compensation_timeout,
            )
            await ledger.call(ledger.finish_compensation, key, "failed", None, str(final), False)
            raise final
        args = list(input.args)
        if (
            len(args) == 2
            and args[1] is None
            and record is not None
            and record.result is not None
            and spec.output_model is not None
        ):
            args[1] = spec.output_model.model_validate(record.result)
            input.args = args
        ctx = self._context(spec, step_id, True, record)
        token = _current.set(ctx)
        try:
            async with _heartbeating(spec):
                result = await super().execute_activity(input)
        except BaseException as exc:
            gave_up = await self._failed(
                exc, policy, ledger.finish_compensation, key, "failed", None
            )
            if gave_up is not None:
                raise gave_up from exc
            raise
        finally:
            _current.reset(token)
        await self._ledger.call(
            self._ledger.finish_compensation, key, "compensated", _dump(result), None
        )
        return result


class LedgerInterceptor(Interceptor):
    """Worker interceptor that puts every catalog activity on the ledger."""

    def __init__(
        self, ledger: Ledger, cat: Catalog = catalog, faults: Faults | None = None
    ) -> None:
        self._ledger = ledger
        self._catalog = cat
        self._faults = faults or Faults({})

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        return _StepInbound(next, self._ledger, self._catalog, self._faults)
