"""Redmine's REST API: the few calls the tickets system makes, and their error mapping.

Part of the tickets system (`activities/tickets.py` is its home); kept apart only for
size. Both directions and reconciliation use this one client.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
from temporalio.exceptions import ApplicationError

from saga import Settings

HTTP_TIMEOUT = httpx.Timeout(15.0, connect=5.0)
SEARCH_LIMIT = 100
READ_TRIES = 5


def carries_marker(issue: dict[str, Any], line: str) -> bool:
    """Whether the issue's description has ``line`` as one of its lines, exactly."""
    description = issue.get("description") or ""
    return any(part.strip() == line for part in str(description).splitlines())


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

    async def read(
        self, path: str, params: httpx.QueryParams | None = None
    ) -> dict[str, Any] | None:
        """A GET for reading only (reconciliation): transient failures are tried again
        here, READ_TRIES times with back-off; 403 and 404 read as None (nothing to see)."""
        assert self.http is not None
        for attempt in range(READ_TRIES):
            try:
                response = await self.http.get(path, params=params)
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

    async def issue(self, issue_id: str) -> dict[str, Any] | None:
        """The issue with this id, or None when there is none (deleted, never made)."""
        if not issue_id.isdigit():
            return None
        body = await self.call("GET", f"/issues/{issue_id}.json", missing_ok=True)
        return None if body is None else as_dict(body.get("issue"))

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
        issues = [as_dict(i) for i in (body or {}).get("issues", [])]
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
            statuses = [as_dict(s) for s in (body or {}).get("issue_statuses", [])]
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
        status = as_dict(issue.get("status"))
        if "is_closed" in status:
            return bool(status["is_closed"])
        await self.closed_status_id()
        return int(status.get("id", 0)) in self._closed_ids


def as_dict(value: Any) -> dict[str, Any]:
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
