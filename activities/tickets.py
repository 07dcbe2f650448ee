"""The tickets system, and its action `tickets.create`: open a Redmine issue.

This module is the system's home: the action's models, :class:`Redmine` (the few REST
calls the system makes, and its error mapping), the marker that ties an issue to its
step, and the forward action. Its undo (closing or deleting the issue) is in
`compensations/tickets.py`.

Redmine has no idempotency keys. The ticket's description ends with the line
``saga-key: <idempotency key>`` (:func:`marker`), the issue id is written to the ledger
as soon as Redmine answers, and a retry (a later attempt, or any attempt that finds an
id in the ledger) first looks for the step's issue and adopts it instead of opening a
second one.

A look-up cannot see a create that Redmine is still processing (an earlier attempt gave
up waiting, or its worker died mid-request), so after creating or adopting, every
attempt settles: of all the issues carrying the step's marker it keeps the oldest and
removes the others. The create waits long for Redmine's answer (``CREATE_TIMEOUT``) so
that a slow Redmine does not cause such a retry in the first place.
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
    "TicketResult",
    "build",
    "marker",
    "redmine_client",
]

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


class TicketResult(StepResult):
    external_id: str = Field(description="The Redmine issue id.")
    url: str = Field(description="Where people see the ticket.")


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
            )
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


def redmine_client(settings: Settings) -> Redmine:
    """The Redmine that `settings` names; one without a URL and key answers every call
    with a non-retryable ``TicketsNotConfigured``."""
    http = None
    if settings.redmine_url and settings.redmine_api_key:
        http = httpx.AsyncClient(
            base_url=settings.redmine_url,
            headers={"X-Redmine-API-Key": settings.redmine_api_key},
            timeout=HTTP_TIMEOUT,
        )
    return Redmine(http, settings.redmine_url or "")


def build(settings: Settings) -> list[Callable[..., Any]]:
    """`tickets.create`, on the Redmine that `settings` names (a client of its own).

    Without ``redmine_url`` and ``redmine_api_key`` the activity is still registered
    (so a saga started before can still fail clearly, with a non-retryable
    ``TicketsNotConfigured``), but the worker reports tickets.create as not configured
    and new plans that use it are refused before any step runs.
    """
    return [TicketActivities(redmine_client(settings), settings.redmine_project).create_ticket]


# -- what reconciliation reads -----------------------------------------------------------
READ_TRIES = 5


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
        self._http: httpx.AsyncClient | None = None
        self.where = "-"
        if settings.redmine_url and settings.redmine_api_key:
            self.where = f"{settings.redmine_url} project {settings.redmine_project}"
            self._http = httpx.AsyncClient(
                base_url=settings.redmine_url,
                headers={"X-Redmine-API-Key": settings.redmine_api_key},
                timeout=HTTP_TIMEOUT,
            )
        self._closed: set[int] = set()

    async def _get(self, path: str, params: Any = None) -> dict[str, Any] | None:
        assert self._http is not None
        for attempt in range(READ_TRIES):
            try:
                response = await self._http.get(path, params=params)
            except httpx.TransportError:
                if attempt == READ_TRIES - 1:
                    raise
            else:
                if response.status_code < 500 or attempt == READ_TRIES - 1:
                    break
            await asyncio.sleep(0.5 * 2**attempt)
        if response.status_code in (403, 404):
            return None
        response.raise_for_status()
        body = response.json()
        return body if isinstance(body, dict) else None

    def _effect(self, issue: dict[str, Any], key: str) -> Effect:
        status = _dict(issue.get("status"))
        closed = bool(status.get("is_closed")) or int(status.get("id", 0)) in self._closed
        state = f"issue {issue['id']} {status.get('name', '?')}"
        return Effect(self.system, key, str(issue["id"]), not closed, state)

    async def effects(self, saga_prefix: str) -> list[Effect]:
        if self._http is None:
            raise SystemUnavailable("Redmine not configured")
        body = await self._get("/issue_statuses.json") or {}
        statuses = body.get("issue_statuses", [])
        self._closed = {int(s["id"]) for s in statuses if s.get("is_closed")}
        found: list[Effect] = []
        offset = 0
        while True:
            page = await self._get(
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
        if self._http is None or not external_id.isdigit():
            return None
        issue = (await self._get(f"/issues/{external_id}.json") or {}).get("issue")
        if not isinstance(issue, dict):
            return None
        keys = markers_of(issue)
        return self._effect(issue, keys[0] if keys else "")

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.aclose()


catalog.add_reader("tickets.create", TicketsReader)
