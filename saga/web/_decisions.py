"""The web app's decisions go to the audit trail (saga._audit): each POST on a saga, and
each refused login, with the identity its login gives and how it turned out."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from fastapi import HTTPException
from starlette.requests import Request

from saga._audit import AuditEntry, record, trail
from saga._errors import SagaError
from saga._ledger import Ledger
from saga._ledger_schema import utcnow
from saga._people import People, Person
from saga._settings import Settings

log = logging.getLogger("saga.web")
T = TypeVar("T")


class LedgerAccess:
    """The ledger's database for the web app (audit trail, people, logins), opened once,
    on first use, at SAGA_DATABASE_URL."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._ledger: Ledger | None = None
        self._lock = asyncio.Lock()

    async def ledger(self) -> Ledger:
        async with self._lock:
            if self._ledger is None:
                self._ledger = await asyncio.to_thread(Ledger, self._settings.ledger_url())
            return self._ledger

    async def people(self) -> People:
        return People(await self.ledger())


class Decisions:
    """Records and reads decisions in the ledger's database."""

    def __init__(self, access: LedgerAccess) -> None:
        self._access = access

    async def _open(self) -> Ledger:
        return await self._access.ledger()

    async def note(self, entry: AuditEntry) -> None:
        """Append ``entry``; a trail that cannot be written is logged, never hidden."""
        try:
            await asyncio.to_thread(record, await self._open(), entry)
        except Exception:
            log.exception("audit: %s of %s was not recorded", entry.action, entry.saga_id)

    async def of(self, saga_id: str) -> list[AuditEntry]:
        return await asyncio.to_thread(trail, await self._open(), saga_id=saga_id)

    async def refused_login(self, client: str, via: str) -> None:
        """Record a wrong token from ``client`` (its address) on ``via`` (web, api, mcp)."""
        entry = AuditEntry(
            at=utcnow(), who=f"unknown ({client})", via=via, action="login",
            outcome="refused: not a valid token",
        )  # fmt: skip
        await self.note(entry)

    async def decide(
        self,
        request: Request,
        action: str,
        saga_id: str,
        run: Awaitable[T],
        *,
        step_id: str | None = None,
        detail: str | None = None,
        outcome: Callable[[T], str] | None = None,
    ) -> T:
        """Run one decision of a web request and record it under its login's identity."""
        via = "web" if getattr(request.state, "auth", None) == "cookie" else "api"
        person: Person | None = getattr(request.state, "person", None)
        entry = AuditEntry(
            at=utcnow(),
            who=person.name if person is not None else "unknown",
            via=via,
            action=action,
            saga_id=saga_id,
            step_id=step_id,
            outcome="done",
            detail=detail,
        )
        return await self.recorded(entry, run, outcome)

    async def recorded(
        self, entry: AuditEntry, run: Awaitable[T], outcome: Callable[[T], str] | None = None
    ) -> T:
        """Run one decision and record ``entry`` with how it turned out: done (or what
        ``outcome`` says of the result), or refused / failed and why."""
        try:
            result = await run
        except HTTPException as exc:
            entry.outcome = f"refused: {exc.detail}"
            await self.note(entry)
            raise
        except SagaError as exc:
            entry.outcome = f"refused: {exc}"
            await self.note(entry)
            raise
        except Exception as exc:
            entry.outcome = f"failed: {exc}"
            await self.note(entry)
            raise
        if outcome is not None:
            entry.outcome = outcome(result)
        await self.note(entry)
        return result
