"""The tickets system, and its action `tickets.create`: open a Redmine issue.

This module is the system's home: the action's models, the marker that ties an issue
to its step, the forward action, the reconciliation reader, and `build()`, which lists
every action of the system. Beside it, only for size: :class:`Redmine` (the few REST
calls the system makes, and their error mapping) in `activities/_redmine.py`, and the
read-only look-ups `tickets.find_open` and `tickets.assignable_users` in
`activities/tickets_lookups.py`. Its undo (closing or deleting the issue) is in
`compensations/tickets.py`.

Redmine has no idempotency keys. The ticket's description ends with the line
``saga-key: <idempotency key>`` (:func:`marker`), the issue id is written to the ledger
as soon as Redmine answers, and a retry (a later attempt, or any attempt that finds an
id in the ledger) first looks for the step's issue and adopts it instead of opening a
second one.

A look-up cannot see a create that Redmine is still processing (an earlier attempt gave
up waiting, or its worker died mid-request), so after creating or adopting, every
attempt settles: of all the issues carrying the step's marker it keeps the oldest and
removes the others. The create waits long for Redmine's answer
(``Settings.redmine_create_timeout``) so that a slow Redmine does not cause such a retry
in the first place, and marks its request as on its way until the answer comes
(``StepContext.sending``): an undo that follows a create with no answer waits for the
issue it may still open before it looks.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import httpx
from pydantic import BaseModel, ConfigDict, Field
from temporalio import activity
from temporalio.common import RetryPolicy
from temporalio.exceptions import ApplicationError

from activities._redmine import (
    SEARCH_LIMIT,
    Redmine,
    as_dict,
    redmine_client,
)
from activities.tickets_lookups import TicketLookups
from saga import (
    Effect,
    Settings,
    StepContext,
    StepOptions,
    StepResult,
    SystemUnavailable,
    catalog,
    compensable,
    current_step,
)

__all__ = [
    "MARKER_PREFIX",
    "Redmine",
    "TicketActivities",
    "TicketInput",
    "TicketLookups",
    "TicketResult",
    "build",
    "marker",
    "redmine_client",
]

MARKER_PREFIX = "saga-key: "
LANDING_MARGIN = 5.0
"""Seconds a create that got no answer may land after its own time-out (Redmine may
still be writing the issue when the client gives up)."""


def marker(idempotency_key: str) -> str:
    """The description line that ties a Redmine issue to its saga step."""
    return f"{MARKER_PREFIX}{idempotency_key}"


# -- the action's models ---------------------------------------------------------------
class TicketInput(BaseModel):
    """Open a ticket (a Redmine issue) for people to act on."""

    model_config = ConfigDict(extra="forbid")
    subject: str = Field(min_length=1, max_length=255, description="One-line summary.")
    description: str | None = Field(
        None, max_length=20_000, description="Optional text of the ticket."
    )
    priority: str | None = Field(
        None,
        max_length=60,
        description="Redmine priority name (Low, Normal, High, Urgent, Immediate); "
        "default: Redmine's default priority.",
    )
    assignee: str | None = Field(
        None,
        max_length=255,
        description="Login or full name of a project member to assign it to, e.g. `ops`.",
    )
    project: str | None = Field(
        None,
        max_length=100,
        description="Redmine project identifier; default: the configured project.",
    )


class TicketResult(StepResult):
    external_id: str = Field(description="The Redmine issue id.")
    url: str = Field(description="Where people see the ticket.")


class TicketActivities:
    """Forward activities of the tickets system, bound to the Redmine client."""

    def __init__(
        self, redmine: Redmine, default_project: str, create_timeout: float = 45.0
    ) -> None:
        self.redmine = redmine
        self.default_project = default_project
        self.create_timeout = httpx.Timeout(create_timeout, connect=min(create_timeout, 5.0))
        self.lands_within = timedelta(seconds=create_timeout + LANDING_MARGIN)

    @property
    def configured(self) -> bool:
        """False without a Redmine URL and key: plans using tickets.create are then
        refused at validation (see ``saga_worker_capabilities``)."""
        return self.redmine.http is not None

    async def aclose(self) -> None:
        """Close the Redmine client when the worker stops."""
        await self.redmine.aclose()

    @compensable(
        options=StepOptions(
            # Redmine slows down badly under load: a longer budget than the default 5 tries.
            retry_policy=RetryPolicy(
                initial_interval=timedelta(seconds=1),
                backoff_coefficient=2.0,
                maximum_interval=timedelta(seconds=30),
                maximum_attempts=10,
            ),
            summary="ticket: {subject}",
        )
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
        # Redmine may open the issue after this attempt stops waiting (it is cancelled,
        # gives up or its worker dies): until an answer comes, the undo waits for it.
        await step.sending(self.lands_within)
        try:
            body = await self.redmine.call(
                "POST", "/issues.json", json={"issue": issue}, http_timeout=self.create_timeout
            )
        except (httpx.TransportError, asyncio.CancelledError):
            raise  # no answer: the issue may still be opened
        except BaseException:
            await step.answered()
            raise
        issue_id = (body or {}).get("issue", {}).get("id")
        if issue_id is None:
            raise RuntimeError("Redmine created the issue but did not say its id")
        await step.record_external_id(str(issue_id))
        await step.answered()
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
    """Every action of the tickets system: `tickets.create` and the look-ups
    `tickets.find_open` and `tickets.assignable_users`, on the Redmine that `settings`
    names (the action and the look-ups each with a client of their own).

    Without ``redmine_url`` and ``redmine_api_key`` the activities are still registered
    (so a saga started before can still fail clearly, with a non-retryable
    ``TicketsNotConfigured``), but the worker reports them as not configured and new
    plans that use them are refused before any step runs.
    """
    lookups = TicketLookups(redmine_client(settings), settings.redmine_project)
    return [
        TicketActivities(
            redmine_client(settings), settings.redmine_project, settings.redmine_create_timeout
        ).create_ticket,
        lookups.find_open_tickets,
        lookups.list_assignable_users,
    ]


# -- what reconciliation reads -----------------------------------------------------------
def markers_of(issue: dict[str, Any]) -> list[str]:
    """The idempotency keys an issue's description carries (its ``saga-key:`` lines)."""
    lines = str(issue.get("description") or "").splitlines()
    return [
        ln.strip()[len(MARKER_PREFIX) :].strip()
        for ln in lines
        if ln.strip().startswith(MARKER_PREFIX)
    ]


class TicketsReader:
    """The issues of the configured Redmine project that carry a step's marker, for
    `saga reconcile` (read-only; a read that fails transiently is tried again)."""

    system = "tickets"

    def __init__(self, settings: Settings) -> None:
        self._project = settings.redmine_project
        self._redmine = redmine_client(settings)
        self.where = "-"
        if self._redmine.http is not None:
            self.where = f"{settings.redmine_url} project {settings.redmine_project}"
        self._closed: set[int] = set()

    def _effect(self, issue: dict[str, Any], key: str) -> Effect:
        status = as_dict(issue.get("status"))
        closed = bool(status.get("is_closed")) or int(status.get("id", 0)) in self._closed
        state = f"issue {issue['id']} {status.get('name', '?')}"
        return Effect(self.system, key, str(issue["id"]), not closed, state)

    async def effects(self, saga_prefix: str) -> list[Effect]:
        if self._redmine.http is None:
            raise SystemUnavailable("Redmine not configured")
        body = await self._redmine.read("/issue_statuses.json") or {}
        statuses = body.get("issue_statuses", [])
        self._closed = {int(s["id"]) for s in statuses if s.get("is_closed")}
        found: list[Effect] = []
        offset = 0
        while True:
            page = await self._redmine.read(
                "/issues.json",
                httpx.QueryParams(
                    [
                        ("project_id", self._project),
                        ("f[]", "status_id"),
                        ("op[status_id]", "*"),
                        ("f[]", "description"),
                        ("op[description]", "~"),
                        ("v[description][]", MARKER_PREFIX.strip()),
                        ("sort", "id"),
                        ("limit", SEARCH_LIMIT),
                        ("offset", offset),
                    ]
                ),
            )
            if page is None:
                raise SystemUnavailable(f"no project {self._project!r} (or no access)")
            issues = page.get("issues", [])
            found += [self._effect(i, key) for i in issues for key in markers_of(i)]
            offset += len(issues)
            if not issues or offset >= int(page.get("total_count", 0)):
                return found

    async def lookup(self, external_id: str) -> Effect | None:
        if self._redmine.http is None or not external_id.isdigit():
            return None
        issue = (await self._redmine.read(f"/issues/{external_id}.json") or {}).get("issue")
        if not isinstance(issue, dict):
            return None
        keys = markers_of(issue)
        return self._effect(issue, keys[0] if keys else "")

    async def aclose(self) -> None:
        await self._redmine.aclose()


catalog.add_reader("tickets.create", TicketsReader)
