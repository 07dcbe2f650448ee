"""People and roles: who may read, who may act on sagas, who may approve, who manages.

Each person has a name, a role and a token of their own. The token is random (256 bits),
printed once when the person is added or their token rotated, and stored only as its
SHA-256 (a random token needs no slow hash: there is nothing to guess from). The web
app's logins are sessions of their own, ended by logout, expiry or revocation.

Roles, least privilege: a ``viewer`` reads; an ``operator`` also starts sagas (through
the MCP server), cancels, retries and resolves; an ``approver`` also approves, rejects
and edits plans waiting for approval; an ``admin`` may do everything and manages people.
The single ``SAGA_WEB_TOKEN`` of existing setups keeps working as a bootstrap admin.
"""

from __future__ import annotations

import enum
import hashlib
import re
import secrets
from datetime import datetime, timedelta
from typing import cast

from pydantic import BaseModel
from sqlalchemy import Table, insert, select, update
from sqlalchemy.exc import IntegrityError

from saga._errors import SagaError
from saga._ledger import Ledger
from saga._ledger_schema import PersonRecord, WebSessionRecord, as_utc, utcnow

PEOPLE = cast(Table, PersonRecord.__table__)
SESSIONS = cast(Table, WebSessionRecord.__table__)
TOKEN_PREFIX = "saga_"
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._@-]{0,99}$")
BOOTSTRAP = "admin (SAGA_WEB_TOKEN)"
"""Who holds the single operator token of existing setups."""
MIN_TOKEN_CHARS = 16


class Role(enum.StrEnum):
    VIEWER = "viewer"
    OPERATOR = "operator"
    APPROVER = "approver"
    ADMIN = "admin"


class Permission(enum.StrEnum):
    READ = "read"
    START = "start"
    CANCEL = "cancel"
    RETRY = "retry"
    RESOLVE = "resolve"
    APPROVE = "approve"
    REJECT = "reject"
    EDIT = "edit"
    PEOPLE = "people"


_OPERATE = {Permission.START, Permission.CANCEL, Permission.RETRY, Permission.RESOLVE}
_APPROVE = {Permission.APPROVE, Permission.REJECT, Permission.EDIT}
PERMISSIONS: dict[Role, frozenset[Permission]] = {
    Role.VIEWER: frozenset({Permission.READ}),
    Role.OPERATOR: frozenset({Permission.READ, *_OPERATE}),
    Role.APPROVER: frozenset({Permission.READ, *_APPROVE}),
    Role.ADMIN: frozenset(Permission),
}


class PeopleError(SagaError):
    """A person cannot be added, found, revoked or rotated as asked."""


class Person(BaseModel):
    name: str
    role: Role
    created_at: datetime | None = None
    rotated_at: datetime | None = None
    revoked_at: datetime | None = None

    def may(self, permission: Permission) -> bool:
        return self.revoked_at is None and permission in PERMISSIONS[self.role]

    @property
    def permissions(self) -> list[str]:
        return sorted(p.value for p in PERMISSIONS[self.role]) if self.revoked_at is None else []


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def _person(row: object) -> Person:
    return Person(
        name=row.name,  # type: ignore[attr-defined]
        role=Role(row.role),  # type: ignore[attr-defined]
        created_at=as_utc(row.created_at),  # type: ignore[attr-defined]
        rotated_at=as_utc(row.rotated_at),  # type: ignore[attr-defined]
        revoked_at=as_utc(row.revoked_at),  # type: ignore[attr-defined]
    )


class People:
    """The people of one ledger database (blocking: async code calls it in a thread)."""

    def __init__(self, ledger: Ledger) -> None:
        self._engine = ledger.engine

    def add(self, name: str, role: Role) -> str:
        """Add ``name`` with ``role``; returns their token (shown once, never stored)."""
        if not NAME.match(name) or name == BOOTSTRAP:
            raise PeopleError(f"name {name!r}: 1-100 letters, digits, spaces or ._@-")
        token = new_token()
        try:
            with self._engine.begin() as conn:
                conn.execute(
                    insert(PEOPLE).values(
                        name=name, role=role.value, token_hash=digest(token), created_at=utcnow()
                    )
                )
        except IntegrityError:
            raise PeopleError(f"{name!r} exists already (rotate their token, or revoke)") from None
        return token

    def all(self) -> list[Person]:
        with self._engine.connect() as conn:
            rows = conn.execute(select(PEOPLE).order_by(PEOPLE.c.name)).all()
        return [_person(r) for r in rows]

    def revoke(self, name: str) -> None:
        """Revoke ``name``: their token stops working and their logins end."""
        self._change_ending_logins(name, revoked_at=utcnow())

    def rotate(self, name: str) -> str:
        """A new token for ``name``; the old one stops working and their logins end."""
        token = new_token()
        self._change_ending_logins(name, token_hash=digest(token), rotated_at=utcnow())
        return token

    def _change_ending_logins(self, name: str, **values: object) -> None:
        """Change an active person's row and end their logins, in one transaction."""
        with self._engine.begin() as conn:
            done = conn.execute(
                update(PEOPLE)
                .where(PEOPLE.c.name == name, PEOPLE.c.revoked_at.is_(None))
                .values(**values)
            ).rowcount
            conn.execute(
                update(SESSIONS)
                .where(SESSIONS.c.person == name, SESSIONS.c.ended_at.is_(None))
                .values(ended_at=utcnow())
            )
        if not done:
            raise PeopleError(f"no active person {name!r}")

    def by_token(self, token: str) -> Person | None:
        """The active person whose token this is."""
        if not token.startswith(TOKEN_PREFIX):
            return None
        with self._engine.connect() as conn:
            row = conn.execute(
                select(PEOPLE).where(
                    PEOPLE.c.token_hash == digest(token), PEOPLE.c.revoked_at.is_(None)
                )
            ).first()
        return _person(row) if row is not None else None

    # -- web logins ---------------------------------------------------------------------
    def open_session(self, person: str, lasts: timedelta) -> str:
        """A new login of ``person``; returns the session id its cookie carries."""
        sid, now = secrets.token_urlsafe(32), utcnow()
        with self._engine.begin() as conn:
            conn.execute(
                insert(SESSIONS).values(
                    id_hash=digest(sid), person=person, created_at=now, expires_at=now + lasts
                )
            )
        return sid

    def session(self, sid: str) -> str | None:
        """Whose login ``sid`` is, while it lasts (not expired, ended or revoked)."""
        with self._engine.connect() as conn:
            row = conn.execute(
                select(SESSIONS.c.person, SESSIONS.c.expires_at).where(
                    SESSIONS.c.id_hash == digest(sid), SESSIONS.c.ended_at.is_(None)
                )
            ).first()
        if row is None:
            return None
        expires = as_utc(row.expires_at)
        return row.person if expires is not None and expires > utcnow() else None

    def end_session(self, sid: str) -> None:
        with self._engine.begin() as conn:
            conn.execute(
                update(SESSIONS)
                .where(SESSIONS.c.id_hash == digest(sid), SESSIONS.c.ended_at.is_(None))
                .values(ended_at=utcnow())
            )

    def get(self, name: str) -> Person | None:
        with self._engine.connect() as conn:
            row = conn.execute(select(PEOPLE).where(PEOPLE.c.name == name)).first()
        return _person(row) if row is not None else None
