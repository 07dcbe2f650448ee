"""Undo `tickets.create`: close the step's Redmine issue with a note, or delete it.

The tickets system itself (models, the Redmine client, the step marker) lives in
`activities/tickets.py`; this module holds only the undo and declares it with
``@compensates``.
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, Field
from temporalio import activity

from activities.tickets import (
    Redmine,
    TicketActivities,
    TicketInput,
    TicketResult,
    marker,
    redmine_client,
)
from saga import Settings, StepContext, compensates, current_step


class CloseOutcome(enum.StrEnum):
    CLOSED = "closed"
    DELETED = "deleted"
    ALREADY_CLOSED = "already_closed"
    NOT_FOUND = "not_found"


class CloseResult(BaseModel):
    outcome: CloseOutcome
    external_id: str | None = Field(None, description="The issue acted on, if any.")
    duplicates: list[str] = Field(
        default_factory=list,
        description="Other issues carrying the step's marker, undone the same way.",
    )


class TicketCompensation(enum.StrEnum):
    """How `tickets.create` is undone (``Settings.ticket_compensation``)."""

    CLOSE = "close"
    DELETE = "delete"


class TicketCompensations:
    """Compensations of the tickets system, bound to the Redmine client."""

    def __init__(
        self, redmine: Redmine, mode: TicketCompensation = TicketCompensation.CLOSE
    ) -> None:
        self.redmine = redmine
        self.mode = mode

    async def aclose(self) -> None:
        """Close the Redmine client when the worker stops."""
        await self.redmine.aclose()

    @compensates(TicketActivities.create_ticket)
    @activity.defn
    async def close_ticket(self, inp: TicketInput, result: TicketResult | None) -> CloseResult:
        """Close the step's ticket with a note saying why (or delete it); no-op if none.

        The ticket is found by the recorded issue id and by the step's marker line, so
        this works when the forward step's result was lost (``result`` is None). Every
        issue carrying the marker is undone, so a copy left by a retried create that
        landed late does not outlive the saga.
        """
        step = current_step()
        key = step.idempotency_key
        known = result.external_id if result is not None else step.recorded_external_id
        found: dict[str, dict[str, Any]] = {}
        if known:
            recorded = await self.redmine.issue(known)
            if recorded is not None:
                found[str(recorded["id"])] = recorded
        for issue in await self.redmine.issues_with_marker(marker(key)):
            found.setdefault(str(issue["id"]), issue)
        if not found:
            activity.logger.info("close %s: no ticket, nothing to undo", key)
            return CloseResult(outcome=CloseOutcome.NOT_FOUND)
        main = known if known in found else min(found, key=int)
        outcomes = {i: await self._undo(step, i, found[i]) for i in sorted(found, key=int)}
        return CloseResult(
            outcome=outcomes[main],
            external_id=main,
            duplicates=[i for i in outcomes if i != main],
        )

    async def _undo(self, step: StepContext, issue_id: str, issue: dict[str, Any]) -> CloseOutcome:
        key = step.idempotency_key
        if self.mode is TicketCompensation.DELETE:
            await self.redmine.delete(issue_id)
            activity.logger.info("close %s: deleted issue %s", key, issue_id)
            return CloseOutcome.DELETED
        if await self.redmine.is_closed(issue):
            activity.logger.info("close %s: issue %s already closed", key, issue_id)
            return CloseOutcome.ALREADY_CLOSED
        await self.redmine.close(issue_id, await compensation_note(step))
        activity.logger.info("close %s: closed issue %s", key, issue_id)
        return CloseOutcome.CLOSED


async def compensation_note(step: StepContext) -> str:
    """The journal note: which saga was undone, and the failure (from the ledger) that
    made it unwind."""
    steps = await asyncio.to_thread(step.saga_steps)
    failed = next((s for s in steps if s.status == "failed" and s.error), None)
    if failed is not None:
        why = f"step {failed.step_id!r} ({failed.action}) failed: {failed.error}"
    else:
        why = "it was cancelled or a step failed without a recorded error"
    return (
        f"Closed automatically: saga {step.saga_id} was compensated because {why}. "
        f"This ticket was opened by its step {step.step_id!r} and is no longer needed."
    )


def build(settings: Settings) -> list[Callable[..., Any]]:
    """The undo of `tickets.create`, on the Redmine `settings` names (a client of its own)."""
    mode = TicketCompensation(settings.ticket_compensation)
    return [TicketCompensations(redmine_client(settings), mode).close_ticket]
