"""The ledger's tables, the row a step reads back as, and sealing of its personal
columns; the engine and its Alembic migrations (``saga/_migrations``)."""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

from sqlalchemy import (
    JSON,
    DateTime,
    Engine,
    Integer,
    String,
    Table,
    Text,
    create_engine,
    event,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from saga._codec import PayloadKeys, is_sealed, seal, unseal


def utcnow() -> datetime:
    return datetime.now(UTC)


def elapsed(since: datetime | None, now: datetime) -> timedelta:
    """Time from ``since`` (SQLite hands it back without its UTC zone) to ``now``."""
    if since is None:
        return timedelta(0)
    if since.tzinfo is None:
        since = since.replace(tzinfo=UTC)
    return now - since


class Base(DeclarativeBase):
    pass


class SagaRecord(Base):
    __tablename__ = "saga"

    saga_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    status: Mapped[str] = mapped_column(String(32), default="running")
    request: Mapped[str | None] = mapped_column(Text)
    plan: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class StepRecord(Base):
    __tablename__ = "saga_step"

    idempotency_key: Mapped[str] = mapped_column(String(300), primary_key=True)
    saga_id: Mapped[str] = mapped_column(String(200), index=True)
    step_id: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(100))
    status: Mapped[str] = mapped_column(String(32))
    attempts: Mapped[int] = mapped_column(Integer, default=1)
    external_id: Mapped[str | None] = mapped_column(String(300), index=True)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    error: Mapped[str | None] = mapped_column(Text)
    compensation_status: Mapped[str] = mapped_column(String(32), default="none")
    compensation_attempts: Mapped[int] = mapped_column(Integer, default=0)
    compensation_result: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    compensation_error: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    compensated_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    failures: Mapped[int] = mapped_column(Integer, default=0)
    """Failed attempts that spend the step's retry budget (not those lost with a worker)."""
    attempt_started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    compensation_failures: Mapped[int] = mapped_column(Integer, default=0)
    """The same, for the compensation's current round (an operator retry starts a new one)."""
    compensation_round: Mapped[int] = mapped_column(Integer, default=0)
    compensation_started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    delivery_round: Mapped[int] = mapped_column(Integer, default=0)
    """Rounds of attempts: an operator's "do it again" starts the next one."""
    delivering_attempt: Mapped[int | None] = mapped_column(Integer)
    """The attempt of this round that passed the point of no return (it may have taken
    effect); cleared when it knows it delivered nothing."""
    delivering_since: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    delivery_evidence: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    """What an operator needs to check that attempt (worker, message id, server...)."""
    in_flight_attempt: Mapped[int | None] = mapped_column(Integer)
    """The attempt whose request may still land though it never heard back (0: several
    attempts'); cleared when that attempt is answered (``StepContext.sending``)."""
    in_flight_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    """Until when that request's effect may land: the compensation waits until then."""


class AuditRecord(Base):
    """One decision on a saga (or on people), append-only (migration 0005)."""

    __tablename__ = "saga_audit"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    who: Mapped[str] = mapped_column(String(200))
    via: Mapped[str] = mapped_column(String(20))
    action: Mapped[str] = mapped_column(String(40))
    saga_id: Mapped[str | None] = mapped_column(String(200), index=True)
    step_id: Mapped[str | None] = mapped_column(String(64))
    outcome: Mapped[str] = mapped_column(String(20))
    detail: Mapped[str | None] = mapped_column(Text)


class PersonRecord(Base):
    """A person who operates sagas (migration 0006): a role, and their token's hash."""

    __tablename__ = "saga_person"

    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    role: Mapped[str] = mapped_column(String(20))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    rotated_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class WebSessionRecord(Base):
    """One login to the web app, by its cookie's hash, until it ends (migration 0006)."""

    __tablename__ = "saga_web_session"

    id_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    person: Mapped[str] = mapped_column(String(100), index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    ended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class AlertRecord(Base):
    """An alert claimed (and then sent) for one event, once (migration 0007)."""

    __tablename__ = "saga_alert"

    key: Mapped[str] = mapped_column(String(400), primary_key=True)
    saga_id: Mapped[str] = mapped_column(String(200), index=True)
    event: Mapped[str] = mapped_column(String(40))
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    outcome: Mapped[str | None] = mapped_column(Text)


STEPS = cast(Table, StepRecord.__table__)
SAGAS = cast(Table, SagaRecord.__table__)


class StepRow(enum.StrEnum):
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


@dataclass(frozen=True)
class StepSnapshot:
    idempotency_key: str
    saga_id: str
    step_id: str
    action: str
    status: str
    attempts: int
    external_id: str | None
    result: dict[str, Any] | None
    error: str | None
    compensation_status: str
    compensation_attempts: int
    failures: int = 0
    compensation_failures: int = 0
    delivery_round: int = 0
    delivering_attempt: int | None = None
    delivering_since: datetime | None = None
    delivery_evidence: dict[str, Any] | None = None


@dataclass(frozen=True)
class CompensationClaim:
    """What one compensation attempt needs from its step's row, and no more: the
    failures of its round so far, the external id, and the forward result (opened only
    when asked for: the workflow usually sends it). ``done``: this round already
    compensated (a retry after a lost answer), and nothing was changed."""

    key: str
    failures: int
    external_id: str | None
    done: bool
    sealed_result: Any
    sealed_compensation_result: Any
    keys: PayloadKeys | None
    in_flight_until: datetime | None = None
    """A forward request whose effect may still land until then (see ``StepContext.sending``)."""

    def result(self) -> dict[str, Any] | None:
        value: dict[str, Any] | None = open_json(self.keys, self.sealed_result, "result", self.key)
        return value

    def compensation_result(self) -> dict[str, Any] | None:
        value: dict[str, Any] | None = open_json(
            self.keys, self.sealed_compensation_result, "compensation_result", self.key
        )
        return value


def as_utc(value: datetime | None) -> datetime | None:
    """SQLite hands timestamps back without their UTC zone."""
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


def snapshot(row: Any, keys: PayloadKeys | None) -> StepSnapshot:
    key = row.idempotency_key
    return StepSnapshot(
        idempotency_key=key,
        saga_id=row.saga_id,
        step_id=row.step_id,
        action=row.action,
        status=row.status,
        attempts=row.attempts,
        external_id=row.external_id,
        result=open_json(keys, row.result, "result", key),
        error=open_text(keys, row.error, "error", key),
        compensation_status=row.compensation_status,
        compensation_attempts=row.compensation_attempts,
        failures=row.failures,
        compensation_failures=row.compensation_failures,
        delivery_round=row.delivery_round,
        delivering_attempt=row.delivering_attempt,
        delivering_since=as_utc(row.delivering_since),
        delivery_evidence=row.delivery_evidence,
    )


def _context(column: str, row: str) -> str:
    return f"{column}/{row}"


def seal_json(keys: PayloadKeys | None, value: Any, column: str, row: str) -> Any:
    if keys is None or value is None:
        return value
    return seal(keys, json.dumps(value).encode(), _context(column, row))


def seal_text(keys: PayloadKeys | None, value: str | None, column: str, row: str) -> str | None:
    if keys is None or value is None:
        return value
    return seal(keys, value.encode(), _context(column, row))


def open_json(keys: PayloadKeys | None, value: Any, column: str, row: str) -> Any:
    if not is_sealed(value):
        return value  # None, or written before sealing
    return json.loads(unseal(keys, value, _context(column, row)))


def open_text(keys: PayloadKeys | None, value: str | None, column: str, row: str) -> str | None:
    if value is None or not is_sealed(value):
        return value
    return unseal(keys, value, _context(column, row)).decode()


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()


def make_engine(url: str) -> Engine:
    """An engine for the ledger URL; creates the SQLite file's folder if needed."""
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    # No pre-ping: it costs a round trip per write; a dropped connection fails the
    # activity, which Temporal retries.
    return create_engine(url, pool_size=10, max_overflow=20, pool_recycle=300)


MIGRATION_LOCK = 0x5A6A_1ED6
"""The PostgreSQL advisory lock the ledger's migrations take (any constant of ours)."""


def migrate(engine: Engine) -> None:
    """Bring the ledger schema to the newest Alembic revision."""
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(Path(__file__).parent / "_migrations"))
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            # Workers starting at once on a new database: one migrates, the others wait
            # for its commit and then find the schema at head (the lock ends with the
            # transaction). Without it they created the same tables at the same time.
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")
