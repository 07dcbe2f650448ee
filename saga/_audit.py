"""The audit trail: who decided what about which saga, when, and how it turned out.

Rows live in the ledger's database (``saga_audit``, migration 0005) and are only ever
inserted: a trigger refuses UPDATE and DELETE. The command line records its mutations
(start, cancel, approve, reject, retry, resolve) under the operating-system user and
host; the web app under the identity its login gives. Free text (reasons, notes) is
masked (emails, card numbers) before it is written.
"""

from __future__ import annotations

import getpass
import socket
from datetime import UTC, datetime
from typing import cast

from pydantic import BaseModel, Field
from sqlalchemy import Table, insert, select

from saga._ledger import Ledger
from saga._ledger_schema import AuditRecord, as_utc
from saga._redact import mask_text

AUDIT = cast(Table, AuditRecord.__table__)
MAX_DETAIL = 1000


class AuditEntry(BaseModel):
    """One decision."""

    at: datetime
    who: str = Field(description="Whose identity: a person, or user@host for the CLI.")
    via: str = Field(description="cli, web or api.")
    action: str = Field(description="start, approve, reject, edit, cancel, retry, resolve...")
    saga_id: str | None = None
    step_id: str | None = None
    outcome: str = Field(description="done, refused: why, failed: why, or exit N.")
    detail: str | None = None


def cli_identity() -> str:
    """``user@host`` of the command line's caller."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no name for this uid (a bare container)
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def record(ledger: Ledger, entry: AuditEntry) -> None:
    """Append ``entry`` (its free text masked and cut to a length)."""
    detail = mask_text(entry.detail)[:MAX_DETAIL] if entry.detail else None
    outcome = mask_text(entry.outcome)[:MAX_DETAIL]
    with ledger.engine.begin() as conn:
        conn.execute(
            insert(AUDIT).values(
                **entry.model_dump(exclude={"detail", "outcome"}), outcome=outcome, detail=detail
            )
        )


def trail(
    ledger: Ledger,
    *,
    saga_id: str | None = None,
    since: datetime | None = None,
    limit: int = 200,
) -> list[AuditEntry]:
    """The decisions, oldest first: of one saga, and/or since a moment."""
    query = select(AUDIT).order_by(AUDIT.c.at, AUDIT.c.id)
    if saga_id is not None:
        query = query.where(AUDIT.c.saga_id == saga_id)
    if since is not None:
        query = query.where(AUDIT.c.at >= since)
    with ledger.engine.connect() as conn:
        rows = conn.execute(query.limit(limit)).all()
    return [
        AuditEntry(
            at=as_utc(r.at) or datetime.now(UTC),
            who=r.who,
            via=r.via,
            action=r.action,
            saga_id=r.saga_id,
            step_id=r.step_id,
            outcome=r.outcome,
            detail=r.detail,
        )
        for r in rows
    ]
