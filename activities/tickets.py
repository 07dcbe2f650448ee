"""`tickets.create`: open a Redmine issue; undone by closing it (or deleting it).

Redmine has no idempotency keys. The ticket's description ends with the line
``saga-key: <idempotency key>``, the issue id is written to the ledger as soon as
Redmine answers, and a retry (a later attempt, or any attempt that finds an id in the
ledger) first looks for the step's issue and adopts it instead of opening a second one.

A look-up cannot see a create that Redmine is still processing (an earlier attempt gave
up waiting, or its worker died mid-request), so after creating or adopting, every
attempt settles: of all the issues carrying the step's marker it keeps the oldest and
removes the others. The create waits long for Redmine's answer (``CREATE_TIMEOUT``) so
that a slow Redmine does not cause such a retry in the first place.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import httpx
from temporalio import activity
from temporalio.common import RetryPolicy
from temporalio.exceptions import ApplicationError

from compensations.tickets import (
    CREATE_TIMEOUT,
    HTTP_TIMEOUT,
    CloseResult,
    Redmine,
    TicketCompensation,
    TicketCompensations,
    TicketInput,
    TicketResult,
    marker,
)
from saga import Settings, StepContext, compensated_by, current_step

__all__ = [
    "CloseResult",
    "Redmine",
    "TicketActivities",
    "TicketInput",
    "TicketResult",
    "build",
    "marker",
]


class TicketActivities:
    """Forward activities of the tickets system, bound to the Redmine client."""

    def __init__(self, redmine: Redmine, default_project: str) -> None:
        self.redmine = redmine
        self.default_project = default_project

    @property
    def configured(self) -> bool:
        """False without a Redmine URL and key: plans using tickets.create are then
        refused at validation (see ``saga_worker_capabilities``)."""
        return self.redmine.http is not None

    async def aclose(self) -> None:
        """Close the Redmine client (shared with the compensation) when the worker stops."""
        await self.redmine.aclose()

    @compensated_by(
        TicketCompensations.close_ticket,
        # Redmine slows down badly under load: a longer budget than the default 5 tries.
        retry_policy=RetryPolicy(
            initial_interval=timedelta(seconds=1),
            backoff_coefficient=2.0,
            maximum_interval=timedelta(seconds=30),
            maximum_attempts=10,
        ),
    )
    @activity.defn
    async def create_ticket(self, inp: TicketInput) -> TicketResult:
        """Open a ticket in Redmine for people to act on (undone by closing it)."""
        step = current_step()
        line = marker(step.idempotency_key)
        if step.attempt > 1 or step.recorded_external_id:
            existing = await self.redmine.find(step.recorded_external_id, line)
            if existing is not None:
                activity.logger.info(
                    "adopting issue %s of %s", existing["id"], step.idempotency_key
                )
                return await self._settle(
                    step, line, str(existing["id"]), recorded=step.recorded_external_id
                )
        issue: dict[str, Any] = {
            "project_id": inp.project or self.default_project,
            "subject": inp.subject,
            "description": f"{inp.description.rstrip()}\n\n{line}" if inp.description else line,
        }
        if inp.priority:
            issue["priority_id"] = await self._priority_id(inp.priority)
        if inp.assignee:
            issue["assigned_to_id"] = await self._user_id(inp.assignee)
        body = await self.redmine.call(
            "POST", "/issues.json", json={"issue": issue}, http_timeout=CREATE_TIMEOUT
        )
        issue_id = (body or {}).get("issue", {}).get("id")
        if issue_id is None:
            raise RuntimeError("Redmine created the issue but did not say its id")
        await step.record_external_id(str(issue_id))
        return await self._settle(step, line, str(issue_id), recorded=str(issue_id))

    async def _settle(
        self, step: StepContext, line: str, issue_id: str, *, recorded: str | None
    ) -> TicketResult:
        """Leave exactly one ticket for the step: the oldest, removing any later copy.

        A copy exists when an earlier attempt's create landed in Redmine after this
        attempt looked for it (its request was still being processed when the attempt
        gave up, or its worker died mid-request). Every attempt settles after creating
        or adopting, and all pick the same survivor, the lowest issue id, which goes to
        the ledger unless it is the id the ledger already holds (``recorded``).
        """
        marked = {str(i["id"]) for i in await self.redmine.issues_with_marker(line)}
        keep, *copies = sorted(marked | {issue_id}, key=int)
        for copy in copies:
            activity.logger.warning(
                "removing issue %s: a second ticket for %s (keeping %s)",
                copy, step.idempotency_key, keep,
            )  # fmt: skip
            await self.redmine.remove_duplicate(copy, keep)
        if keep != recorded:
            await step.record_external_id(keep)
        return self._result(keep)

    def _result(self, issue_id: Any) -> TicketResult:
        return TicketResult(external_id=str(issue_id), url=self.redmine.issue_url(issue_id))

    async def _priority_id(self, name: str) -> int:
        body = await self.redmine.call("GET", "/enumerations/issue_priorities.json")
        priorities = (body or {}).get("issue_priorities", [])
        for p in priorities:
            if str(p.get("name", "")).lower() == name.strip().lower():
                return int(p["id"])
        known = ", ".join(str(p.get("name")) for p in priorities)
        raise ApplicationError(
            f"unknown priority {name!r}; Redmine has: {known}",
            type="TicketRejected",
            non_retryable=True,
        )

    async def _user_id(self, who: str) -> int:
        """The id of the active user whose login or full name is ``who``."""
        wanted = who.strip().lower()
        body = await self.redmine.call(
            "GET", "/users.json", params=httpx.QueryParams(name=who.strip())
        )
        for user in (body or {}).get("users", []):
            full = f"{user.get('firstname', '')} {user.get('lastname', '')}".strip().lower()
            if wanted in (str(user.get("login", "")).lower(), full):
                return int(user["id"])
        raise ApplicationError(
            f"unknown assignee {who!r}: no Redmine user has that login or name",
            type="TicketRejected",
            non_retryable=True,
        )


def build(settings: Settings) -> list[Callable[..., Any]]:
    """The tickets system's activities, on the Redmine that `settings` names.

    Without ``redmine_url`` and ``redmine_api_key`` the activities are still registered
    (so a saga started before can still be compensated or fail clearly, with a
    non-retryable ``TicketsNotConfigured``), but the worker reports tickets.create as not
    configured and new plans that use it are refused before any step runs.
    """
    mode = TicketCompensation(settings.ticket_compensation)
    http = None
    if settings.redmine_url and settings.redmine_api_key:
        http = httpx.AsyncClient(
            base_url=settings.redmine_url,
            headers={"X-Redmine-API-Key": settings.redmine_api_key},
            timeout=HTTP_TIMEOUT,
        )
    redmine = Redmine(http, settings.redmine_url or "")
    forward = TicketActivities(redmine, settings.redmine_project)
    undo = TicketCompensations(redmine, mode)
    return [forward.create_ticket, undo.close_ticket]
