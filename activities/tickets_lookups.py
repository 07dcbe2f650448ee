"""The tickets system's read-only look-ups, in the configured Redmine project:
`tickets.find_open` (the open issues whose subject holds the words given) and
`tickets.assignable_users` (who issues can be assigned to).

Part of the tickets system (`activities/tickets.py` is its home and lists these in its
`build()`); kept apart only for size. A look-up changes nothing and has no undo: in a
plan it is a step like any other (recorded in the ledger, its answer kept in history,
so never repeated on replay) and is never compensated. It has no effect, so no external
id. Without a Redmine URL and key the system is not configured: the worker does not
offer the look-ups, and plans that name them are refused before any step runs.

Anyone with a Redmine account writes subjects and names: they are clipped to one line
(``activities/_bounded.py``) before a model reads them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

import httpx
from pydantic import BaseModel, ConfigDict, Field, field_validator
from temporalio import activity

from activities._bounded import MAX_LIMIT, Limit, clip, clip_or_none
from activities._redmine import Redmine, as_dict
from saga import StepResult, read_only

SUBJECT_CHARS = 200
NAME_CHARS = 100
PAGE = 100
MAX_MEMBERSHIPS = 1000
"""Project memberships read, at most, to find the assignable users."""


# -- tickets.find_open -------------------------------------------------------------------
class OpenTicketsInput(BaseModel):
    """Find the open tickets whose subject holds every word given."""

    model_config = ConfigDict(extra="forbid")
    subject: str = Field(
        min_length=1,
        max_length=255,
        description="Words of the subject, e.g. `checkout down`; any case, any order; "
        'Redmine uses up to 5 words of 2 or more characters, and a "quoted phrase" as one.',
    )
    limit: Limit = 10

    @field_validator("subject")
    @classmethod
    def _some_words(cls, value: str) -> str:
        if not value.split():
            raise ValueError("give at least one word")
        return " ".join(value.split())


class OpenTicket(BaseModel):
    """One open ticket (a Redmine issue)."""

    id: int
    subject: str = Field(max_length=SUBJECT_CHARS)
    status: str = Field(max_length=NAME_CHARS)
    assignee: str | None = Field(None, max_length=NAME_CHARS, description="Who it is assigned to.")


class OpenTicketsResult(StepResult):
    """The matching open tickets of the project, newest first, at most ``limit``;
    ``more`` says that others match too."""

    tickets: list[OpenTicket] = Field(max_length=MAX_LIMIT)
    more: bool


# -- tickets.assignable_users ------------------------------------------------------------
class AssignableUsersInput(BaseModel):
    """List the people tickets of the project can be assigned to."""

    model_config = ConfigDict(extra="forbid")
    limit: Limit = 10


class AssignableUser(BaseModel):
    """An active user with an assignable role in the project: give ``login`` (or
    ``name``) as the ``assignee`` of tickets.create."""

    id: int
    name: str = Field(max_length=NAME_CHARS)
    login: str | None = Field(None, max_length=NAME_CHARS)


class AssignableUsersResult(StepResult):
    """The assignable users in membership order, at most ``limit``; ``more`` says that
    there are others."""

    users: list[AssignableUser] = Field(max_length=MAX_LIMIT)
    more: bool


# -- the look-ups --------------------------------------------------------------------------
class TicketLookups:
    """Read-only activities of the tickets system, bound to a Redmine client of their own.

    Redmine's refusals (an unknown project, a key without access) fail the step at once
    (``TicketRejected``); timeouts and 5xx answers are retried by Temporal.
    """

    def __init__(self, redmine: Redmine, project: str) -> None:
        self.redmine = redmine
        self.project = project

    @property
    def configured(self) -> bool:
        """False without a Redmine URL and key: plans using these look-ups are then
        refused at validation (see ``saga_check_plan``)."""
        return self.redmine.http is not None

    async def aclose(self) -> None:
        """Close the Redmine client when the worker stops."""
        await self.redmine.aclose()

    @read_only(action="tickets.find_open")
    @activity.defn
    async def find_open_tickets(self, inp: OpenTicketsInput) -> OpenTicketsResult:
        """Open tickets of the project whose subject holds every word given (id, subject,
        status, assignee)."""
        body = await self.redmine.call(
            "GET",
            "/issues.json",
            params=httpx.QueryParams(
                [
                    ("project_id", self.project),
                    ("f[]", "status_id"),
                    ("op[status_id]", "o"),
                    ("f[]", "subject"),
                    ("op[subject]", "~"),
                    ("v[subject][]", inp.subject),
                    ("sort", "id:desc"),
                    ("limit", inp.limit),
                ]
            ),
        )
        issues = _items(body, "issues")
        tickets = [_ticket(i) for i in issues[: inp.limit] if _positive_id(i) is not None]
        total = (body or {}).get("total_count")
        more = len(issues) > inp.limit or (isinstance(total, int) and total > len(tickets))
        return OpenTicketsResult(tickets=tickets, more=more)

    @read_only(action="tickets.assignable_users")
    @activity.defn
    async def list_assignable_users(self, inp: AssignableUsersInput) -> AssignableUsersResult:
        """Who tickets of the project can be assigned to (id, name, login): active users
        with an assignable role."""
        known_roles: dict[int, bool] = {}
        users: list[AssignableUser] = []
        seen: set[int] = set()
        async for membership in self._memberships():
            member = as_dict(membership.get("user"))  # a group's membership has "group"
            user_id = _positive_id(member)
            if user_id is None or user_id in seen:
                continue
            if not await self._any_assignable(membership.get("roles"), known_roles):
                continue
            user = await self._active_user(user_id, member)
            if user is None:
                continue
            if len(users) == inp.limit:
                return AssignableUsersResult(users=users, more=True)
            seen.add(user_id)
            users.append(user)
        return AssignableUsersResult(users=users, more=False)

    async def _memberships(self) -> AsyncIterator[dict[str, Any]]:
        """The project's memberships, page by page, at most ``MAX_MEMBERSHIPS``."""
        offset = 0
        while offset < MAX_MEMBERSHIPS:
            body = await self.redmine.call(
                "GET",
                f"/projects/{quote(self.project, safe='')}/memberships.json",
                params=httpx.QueryParams(limit=PAGE, offset=offset),
            )
            page = _items(body, "memberships")
            for membership in page:
                yield membership
            offset += len(page)
            total = (body or {}).get("total_count")
            if not page or not isinstance(total, int) or offset >= total:
                return

    async def _any_assignable(self, roles: Any, known: dict[int, bool]) -> bool:
        """Whether one of a membership's roles lets issues be assigned to its holder
        (each role asked of Redmine once per look-up)."""
        for role in roles if isinstance(roles, list) else []:
            role_id = _positive_id(as_dict(role))
            if role_id is None:
                continue
            if role_id not in known:
                body = await self.redmine.call("GET", f"/roles/{role_id}.json", missing_ok=True)
                known[role_id] = as_dict((body or {}).get("role")).get("assignable") is True
            if known[role_id]:
                return True
        return False

    async def _active_user(self, user_id: int, member: dict[str, Any]) -> AssignableUser | None:
        """The member as an assignable user, or None when Redmine says they are not active
        (a locked or unregistered account: hidden, or a status other than 1 for admins)."""
        body = await self.redmine.call("GET", f"/users/{user_id}.json", missing_ok=True)
        if body is None:
            return None
        user = as_dict(body.get("user"))
        if user.get("status", 1) != 1:
            return None
        full = f"{user.get('firstname') or ''} {user.get('lastname') or ''}"
        return AssignableUser(
            id=user_id,
            name=clip(member.get("name") or full, NAME_CHARS),
            login=clip_or_none(user.get("login"), NAME_CHARS),
        )


def _items(body: dict[str, Any] | None, key: str) -> list[dict[str, Any]]:
    """The objects of a Redmine list answer (``{"issues": [...]}``); anything else: none."""
    found = (body or {}).get(key)
    return [i for i in found if isinstance(i, dict)] if isinstance(found, list) else []


def _positive_id(obj: dict[str, Any]) -> int | None:
    """The positive integer ``id`` of a Redmine object, or None."""
    value = obj.get("id")
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def _ticket(issue: dict[str, Any]) -> OpenTicket:
    assignee = as_dict(issue.get("assigned_to")).get("name")
    return OpenTicket(
        id=_positive_id(issue) or 0,
        subject=clip(issue.get("subject"), SUBJECT_CHARS),
        status=clip(as_dict(issue.get("status")).get("name"), NAME_CHARS),
        assignee=clip_or_none(assignee, NAME_CHARS),
    )
