"""The ledger: one row per saga and per step, written by activities only.

The step row is keyed by its idempotency key (``<saga id>/<step id>``). A forward step
whose row says ``succeeded`` is never executed again: the recorded result is returned.
Writes are single short transactions on the hot path of every step; SQLite runs in WAL
mode with a busy timeout, PostgreSQL through the same statements.
"""

from __future__ import annotations

import asyncio
import enum
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar, cast

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
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from saga._errors import StepAlreadyCompensated

T = TypeVar("T")


def _now() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    pass


class SagaRecord(Base):
    __tablename__ = "saga"

    saga_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    status: Mapped[str] = mapped_column(String(32), default="running")
    request: Mapped[str | None] = mapped_column(Text)
    plan: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)


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
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    compensated_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


_STEPS = cast(Table, StepRecord.__table__)
_SAGAS = cast(Table, SagaRecord.__table__)


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


def _snapshot(row: Any) -> StepSnapshot:
    return StepSnapshot(
        idempotency_key=row.idempotency_key,
        saga_id=row.saga_id,
        step_id=row.step_id,
        action=row.action,
        status=row.status,
        attempts=row.attempts,
        external_id=row.external_id,
        result=row.result,
        error=row.error,
        compensation_status=row.compensation_status,
        compensation_attempts=row.compensation_attempts,
    )


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


def migrate(engine: Engine) -> None:
    """Bring the ledger schema to the newest Alembic revision."""
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(Path(__file__).parent / "_migrations"))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")


class Ledger:
    """Synchronous ledger API; the activity wrapper calls it from a worker thread."""

    def __init__(self, url: str, *, auto_migrate: bool = True) -> None:
        self.url = url
        self.engine = make_engine(url)
        sqlite_db = self.engine.dialect.name == "sqlite"
        # Its own threads: SQLite writes one at a time anyway, so one thread avoids
        # lock waits; PostgreSQL gets a few. Never the loop's shared default pool.
        self._executor = ThreadPoolExecutor(
            max_workers=1 if sqlite_db else 8, thread_name_prefix="ledger"
        )
        self._sagas_seen: set[str] = set()
        self._insert = (
            postgresql.insert if self.engine.dialect.name == "postgresql" else sqlite.insert
        )
        if auto_migrate:
            migrate(self.engine)

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a ledger method on the ledger's own threads."""
        return await asyncio.get_running_loop().run_in_executor(
            self._executor, functools.partial(fn, *args)
        )

    def close(self) -> None:
        self._executor.shutdown(wait=False)
        self.engine.dispose()

    # -- forward steps -------------------------------------------------------------
    def begin_step(
        self, key: str, saga_id: str, step_id: str, action: str, attempt: int
    ) -> StepSnapshot | None:
        """Claim the step. Returns the existing row when the key was seen before."""
        now = _now()
        steps = _STEPS
        with self.engine.begin() as conn:
            if saga_id not in self._sagas_seen:
                conn.execute(
                    self._insert(_SAGAS)
                    .values(saga_id=saga_id, status="running", created_at=now, updated_at=now)
                    .on_conflict_do_nothing()
                )
                # Later steps skip this statement (record_saga upserts the row at the end
                # in any case, should this transaction roll back).
                if len(self._sagas_seen) > 10_000:
                    self._sagas_seen.clear()
                self._sagas_seen.add(saga_id)
            inserted = conn.execute(
                self._insert(steps)
                .values(
                    idempotency_key=key,
                    saga_id=saga_id,
                    step_id=step_id,
                    action=action,
                    status=StepRow.RUNNING.value,
                    attempts=attempt,
                    compensation_status="none",
                    compensation_attempts=0,
                    started_at=now,
                )
                .on_conflict_do_nothing()
                .returning(steps.c.idempotency_key)
            ).first()
            if inserted is not None:
                return None
            row = conn.execute(select(steps).where(steps.c.idempotency_key == key)).one()
            snap = _snapshot(row)
            if snap.compensation_status not in ("none",):
                raise StepAlreadyCompensated(
                    f"step {step_id} of saga {saga_id} was already compensated "
                    f"({snap.compensation_status}); it will not run again"
                )
            if snap.status != StepRow.SUCCEEDED.value:
                conn.execute(
                    update(steps)
                    .where(steps.c.idempotency_key == key)
                    .values(status=StepRow.RUNNING.value, attempts=steps.c.attempts + 1)
                )
            return snap

    def finish_step(self, key: str, result: dict[str, Any] | None, external_id: str | None) -> None:
        steps = _STEPS
        with self.engine.begin() as conn:
            conn.execute(
                update(steps)
                .where(steps.c.idempotency_key == key)
                .values(
                    status=StepRow.SUCCEEDED.value,
                    result=result,
                    external_id=external_id,
                    error=None,
                    finished_at=_now(),
                )
            )

    def record_external_id(self, key: str, external_id: str) -> None:
        """Record an external id mid-step, before the step's result is known."""
        steps = _STEPS
        with self.engine.begin() as conn:
            conn.execute(
                update(steps).where(steps.c.idempotency_key == key).values(external_id=external_id)
            )

    def fail_step(self, key: str, error: str) -> None:
        """Record a failed attempt, unless another attempt of the step already succeeded
        (a stale attempt, retried after a heartbeat timeout, may fail last)."""
        steps = _STEPS
        with self.engine.begin() as conn:
            conn.execute(
                update(steps)
                .where(
                    steps.c.idempotency_key == key,
                    steps.c.status != StepRow.SUCCEEDED.value,
                )
                .values(status=StepRow.FAILED.value, error=error, finished_at=_now())
            )

    # -- compensations -------------------------------------------------------------
    def begin_compensation(self, key: str) -> StepSnapshot | None:
        steps = _STEPS
        with self.engine.begin() as conn:
            conn.execute(
                update(steps)
                .where(steps.c.idempotency_key == key)
                .values(
                    compensation_status="running",
                    compensation_attempts=steps.c.compensation_attempts + 1,
                )
            )
            row = conn.execute(select(steps).where(steps.c.idempotency_key == key)).first()
        return _snapshot(row) if row is not None else None

    def finish_compensation(
        self, key: str, status: str, result: dict[str, Any] | None, error: str | None
    ) -> None:
        steps = _STEPS
        values: dict[str, Any] = {"compensation_status": status, "compensation_error": error}
        if status == "compensated":
            values["compensation_result"] = result
            values["compensated_at"] = _now()
        with self.engine.begin() as conn:
            conn.execute(update(steps).where(steps.c.idempotency_key == key).values(**values))

    # -- sagas ---------------------------------------------------------------------
    def record_saga(
        self,
        saga_id: str,
        status: str,
        *,
        error: str | None = None,
        request: str | None = None,
        plan: Any = None,
    ) -> None:
        now = _now()
        table = _SAGAS
        values: dict[str, Any] = {"status": status, "error": error, "updated_at": now}
        if request is not None:
            values["request"] = request
        if plan is not None:
            values["plan"] = plan
        with self.engine.begin() as conn:
            conn.execute(
                self._insert(table)
                .values(saga_id=saga_id, created_at=now, **values)
                .on_conflict_do_update(index_elements=[table.c.saga_id], set_=values)
            )

    def steps(self, saga_id: str) -> list[StepSnapshot]:
        steps = _STEPS
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(steps).where(steps.c.saga_id == saga_id).order_by(steps.c.started_at)
            ).all()
        return [_snapshot(r) for r in rows]

    def step(self, key: str) -> StepSnapshot | None:
        steps = _STEPS
        with self.engine.connect() as conn:
            row = conn.execute(select(steps).where(steps.c.idempotency_key == key)).first()
        return _snapshot(row) if row is not None else None

    def saga(self, saga_id: str) -> dict[str, Any] | None:
        table = _SAGAS
        with self.engine.connect() as conn:
            row = conn.execute(select(table).where(table.c.saga_id == saga_id)).first()
        return dict(row._mapping) if row is not None else None

    def all_steps(self) -> list[StepSnapshot]:
        steps = _STEPS
        with self.engine.connect() as conn:
            rows = conn.execute(select(steps).order_by(steps.c.started_at)).all()
        return [_snapshot(r) for r in rows]
