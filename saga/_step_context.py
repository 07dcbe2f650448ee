"""What a running action knows of its step: :class:`StepContext`, via :func:`current_step`.

The context gives the action its identity (saga, step, idempotency key, attempt, round),
the external id an earlier attempt recorded, and the few writes an action makes about
its own step: the external id early, and the point of no return of a delivery. The
ledger itself stays underneath.
"""

from __future__ import annotations

import contextvars
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from temporalio.exceptions import ApplicationError

from saga._catalog import Delivery
from saga._errors import SagaError
from saga._ledger import Ledger, StepRow, StepSnapshot
from saga._step_header import DELIVERY_UNCERTAIN


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
    recorded_external_id: str | None = None
    """External id the ledger already holds for this step (from an earlier attempt that
    called :meth:`record_external_id`, or the forward step's, when compensating)."""
    delivery: Delivery = Delivery.EXACTLY_ONCE
    round: int = 0
    """0, or the operator's n-th "do it again" of a step parked as uncertain."""
    worker: str = ""
    _ledger: Ledger | None = field(default=None, repr=False, compare=False)

    def _records(self) -> Ledger:
        if self._ledger is None:
            raise SagaError(f"step {self.step_id}: no ledger behind this step context")
        return self._ledger

    async def record_external_id(self, external_id: str) -> None:
        """Write the external id now, before the action returns (narrows lost responses)."""
        ledger = self._records()
        await ledger.call(ledger.record_external_id, self.idempotency_key, external_id)

    async def delivering(self, external_id: str | None = None, **evidence: str) -> None:
        """Call right before the point after which the effect may have happened (for an
        email: before the DATA command). Records durably that this attempt may deliver,
        with ``evidence`` an operator can check (a message id, the server).

        For an at-most-once action this is a claim: when another attempt of the step got
        here first, raises a non-retryable ``DeliveryUncertain`` error instead, and the
        saga parks the step for an operator. A failure before this call delivered
        nothing, so it is retried as usual.
        """
        ledger = self._records()
        found = await ledger.call(
            ledger.claim_delivery,
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
        ledger = self._records()
        await ledger.call(ledger.release_delivery, self.idempotency_key, self.round, self.attempt)

    async def sending(self, lands_within: timedelta) -> None:
        """Call right before sending a request whose effect the receiver may apply even
        if this attempt never hears back (its worker dies, it is cancelled or gives up
        waiting), for up to ``lands_within``. Until :meth:`answered`, or that long, the
        step's compensation waits before it looks for the effect, so it does not find
        nothing and leave a late effect standing.

        Raises a non-retryable ``StepAlreadyCompensated`` error, and nothing may be sent,
        when the step's compensation already began (this attempt outlived its saga's
        wait for it).
        """
        ledger = self._records()
        until = datetime.now(UTC) + lands_within
        if not await ledger.call(ledger.sending, self.idempotency_key, self.attempt, until):
            raise ApplicationError(
                f"step {self.step_id} of saga {self.saga_id} is being compensated; "
                "this late attempt sends nothing",
                type="StepAlreadyCompensated",
                non_retryable=True,
            )

    async def answered(self) -> None:
        """The request of :meth:`sending` was answered (with success or a refusal):
        nothing of it is still on its way."""
        ledger = self._records()
        await ledger.call(ledger.answered, self.idempotency_key, self.attempt)

    def saga_steps(self) -> list[StepSnapshot]:
        """The steps of this saga as the ledger records them (read-only; blocking, so
        async code calls it in a thread)."""
        return self._records().steps(self.saga_id)


_current: contextvars.ContextVar[StepContext] = contextvars.ContextVar("saga_step")


def current_step() -> StepContext:
    """The step the calling action runs for; only inside a saga activity."""
    try:
        return _current.get()
    except LookupError:
        raise SagaError("current_step() called outside a saga step") from None


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
