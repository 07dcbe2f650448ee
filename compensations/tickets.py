"""Undo `tickets.create`: close the step's Redmine issue with a note, or delete it.

This module also holds what both directions of the tickets system share: the action's
input and output models and :class:`Redmine`, the few REST calls they make. The
forward module (`activities/tickets.py`) imports them from here, because its
``@compensated_by`` needs :class:`TicketCompensations` at import time.

Redmine has no idempotency keys, so every ticket carries its step's key as the last
line of its description (:func:`marker`); a retry or a compensation that has no issue
id finds the ticket by that line.
"""

from __future__ import annotations

import asyncio
import enum
from typing import Any

import httpx
from pydantic import BaseModel, ConfigDict, Field
from temporalio import activity
from temporalio.exceptions import ApplicationError

from saga import StepContext, current_step

MARKER_PREFIX = "saga-key: "
HTTP_TIMEOUT = httpx.Timeout(15.0, connect=5.0)
CREATE_TIMEOUT = httpx.Timeout(45.0, connect=5.0)
"""Creating waits longer than other calls: giving up on a create that Redmine is still
processing is what makes a retry race it (the activity's own timeout is 60 s)."""
SEARCH_LIMIT = 100


def marker(idempotency_key: str) -> str:
    """The description line that ties a Redmine issue to its saga step."""
    return f"{MARKER_PREFIX}{idempotency_key}"


def carries_marker(issue: dict[str, Any], line: str) -> bool:
    """Whether the issue's description has ``line`` as one of its lines, exactly."""
    description = issue.get("description") or ""
    return any(part.strip() == line for part in str(description).splitlines())


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


class TicketResult(BaseModel):
    external_id: str = Field(description="The Redmine issue id.")
    url: str = Field(description="Where people see the ticket.")


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


# -- the REST calls --------------------------------------------------------------------
class Redmine:
    """Redmine's REST API over an authenticated client (base URL and API key header).

    Errors: a 4xx answer (validation, unknown project, bad key) raises a non-retryable
    ``ApplicationError(type="TicketRejected")`` carrying Redmine's own messages; 408,
    429 and 5xx answers, timeouts and connection errors propagate as retryable
    exceptions. Temporal's retry policy is the only retry layer.
    """

    def __init__(self, http: httpx.AsyncClient | None, public_url: str = "") -> None:
        self.http = http
        self.public_url = public_url.rstrip("/")
        self._closed_status: int | None = None
        self._closed_ids: frozenset[int] = frozenset()

    async def aclose(self) -> None:
        """Close the HTTP client's connections (the worker's owner calls it at shutdown)."""
        if self.http is not None:
            await self.http.aclose()

    def issue_url(self, issue_id: int | str) -> str:
        return f"{self.public_url}/issues/{issue_id}"

    async def call(
        self,
        method: str,
        path: str,
        *,
        json: dict[str, Any] | None = None,
        params: httpx.QueryParams | None = None,
        missing_ok: bool = False,
        http_timeout: httpx.Timeout | None = None,
    ) -> dict[str, Any] | None:
        """One REST call; its JSON body (``{}`` when empty), or None for a 404 if allowed."""
        if self.http is None:
            raise ApplicationError(
                "Redmine is not configured: set SAGA_REDMINE_URL and SAGA_REDMINE_API_KEY",
                type="TicketsNotConfigured",
                non_retryable=True,
            )
        response = await self.http.request(
            method, path, json=json, params=params, timeout=http_timeout or self.http.timeout
        )
        if response.status_code == 404 and missing_ok:
            return None
        if response.status_code in (408, 429) or response.status_code >= 500:
            response.raise_for_status()  # transient: Temporal retries the activity
        if response.status_code >= 400:
            raise ApplicationError(
                f"Redmine refused {method} {path} (HTTP {response.status_code}): "
                + "; ".join(_errors(response)),
                type="TicketRejected",
                non_retryable=True,
            )
        if not response.content.strip():
            return {}
        body = response.json()
        return body if isinstance(body, dict) else {}

    async def issue(self, issue_id: str) -> dict[str, Any] | None:
        """The issue with this id, or None when there is none (deleted, never made)."""
        if not issue_id.isdigit():
            return None
        body = await self.call("GET", f"/issues/{issue_id}.json", missing_ok=True)
        return None if body is None else _dict(body.get("issue"))

    async def find(self, issue_id: str | None, line: str) -> dict[str, Any] | None:
        """The step's issue: by the id the ledger holds first, else by its marker line.

        An id from the ledger is trusted as is (people may edit the description), and
        only a missing issue falls back to the marker search.
        """
        if issue_id:
            issue = await self.issue(issue_id)
            if issue is not None:
                return issue
        return await self.find_by_marker(line)

    async def find_by_marker(self, line: str) -> dict[str, Any] | None:
        """The oldest issue, open or closed, in any project, whose description has ``line``."""
        matches = await self.issues_with_marker(line)
        return matches[0] if matches else None

    async def issues_with_marker(self, line: str) -> list[dict[str, Any]]:
        """Every issue, open or closed, whose description has ``line``, oldest first."""
        body = await self.call(
            "GET",
            "/issues.json",
            params=httpx.QueryParams(
                [
                    ("f[]", "status_id"),
                    ("op[status_id]", "*"),
                    ("f[]", "description"),
                    ("op[description]", "~"),
                    ("v[description][]", line),
                    ("sort", "id"),
                    ("limit", SEARCH_LIMIT),
                ]
            ),
        )
        issues = [_dict(i) for i in (body or {}).get("issues", [])]
        # `~` is a LIKE on words: keep only issues with exactly this line.
        return [i for i in issues if carries_marker(i, line)]

    async def remove_duplicate(self, issue_id: str, original: str) -> None:
        """Delete a second ticket of a step; where deleting is refused, close it instead,
        with a note naming the original."""
        try:
            await self.delete(issue_id)
        except ApplicationError:
            await self.close(
                issue_id,
                f"Closed automatically: a duplicate of #{original}, "
                "opened twice by a retried saga step.",
            )

    async def delete(self, issue_id: str) -> None:
        """Delete the issue (one already gone counts as deleted)."""
        await self.call("DELETE", f"/issues/{issue_id}.json", missing_ok=True)

    async def close(self, issue_id: str, note: str) -> None:
        """Move the issue to the Closed status, with ``note`` in its journal."""
        await self.call(
            "PUT",
            f"/issues/{issue_id}.json",
            json={"issue": {"status_id": await self.closed_status_id(), "notes": note}},
        )

    async def closed_status_id(self) -> int:
        """The id of the status named Closed (or else the first closed status)."""
        if self._closed_status is None:
            body = await self.call("GET", "/issue_statuses.json")
            statuses = [_dict(s) for s in (body or {}).get("issue_statuses", [])]
            closed = [s for s in statuses if s.get("is_closed")]
            if not closed:
                raise ApplicationError(
                    "Redmine has no closed issue status",
                    type="TicketRejected",
                    non_retryable=True,
                )
            named = [s for s in closed if str(s.get("name", "")).lower() == "closed"]
            self._closed_status = int((named or closed)[0]["id"])
            self._closed_ids = frozenset(int(s["id"]) for s in closed)
        return self._closed_status

    async def is_closed(self, issue: dict[str, Any]) -> bool:
        """Whether the issue's status is a closed one (issue lists omit ``is_closed``)."""
        status = _dict(issue.get("status"))
        if "is_closed" in status:
            return bool(status["is_closed"])
        await self.closed_status_id()
        return int(status.get("id", 0)) in self._closed_ids


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _errors(response: httpx.Response) -> list[str]:
    """Redmine's own error messages (``{"errors": [...]}``), or the status text."""
    try:
        body = response.json()
    except ValueError:
        body = None
    errors = body.get("errors") if isinstance(body, dict) else None
    if isinstance(errors, list) and errors:
        return [str(e) for e in errors]
    return [response.reason_phrase or f"HTTP {response.status_code}"]


# -- the compensation ------------------------------------------------------------------
class TicketCompensations:
    """Compensations of the tickets system, bound to the Redmine client."""

    def __init__(
        self, redmine: Redmine, mode: TicketCompensation = TicketCompensation.CLOSE
    ) -> None:
        self.redmine = redmine
        self.mode = mode

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
