"""The ledger: one row per saga and per step, written by activities only.

The step row is keyed by its idempotency key (``<saga id>/<step id>``). A forward step
whose row says ``succeeded`` is never executed again: the recorded result is returned.
Writes are single short transactions on the hot path of every step; SQLite runs in WAL
mode with a busy timeout, PostgreSQL through the same statements.

What a user wrote or a system answered can be personal data (a customer's email in a
plan, a result, an error): the saga's request, plan and error and each step's result,
compensation result and errors are stored sealed with the payload keys
(``enc:v1:<key id>:<base64>``, AES-256-GCM bound to the row and column), and read back
in the clear through this class. Ids, statuses, counts and times stay plain for
operators and for reconciliation. Rows written before sealing read as they are.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import enum
import json
import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar, cast

from sqlalchemy import (
    JSON,
    Connection,
    DateTime,
    Engine,
    Integer,
    String,
    Table,
    Text,
    and_,
    bindparam,
    case,
    create_engine,
    event,
    func,
    null,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from saga._codec import PayloadKeys, is_sealed, seal, unseal
from saga._errors import StepAlreadyCompensated

T = TypeVar("T")


def _now() -> datetime:
    return datetime.now(UTC)


def _elapsed(since: datetime | None, now: datetime) -> timedelta:
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
    failures: int = 0
    compensation_failures: int = 0
    delivery_round: int = 0
    delivering_attempt: int | None = None
    delivering_since: datetime | None = None
    delivery_evidence: dict[str, Any] | None = None


def _utc(value: datetime | None) -> datetime | None:
    """SQLite hands timestamps back without their UTC zone."""
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


def _snapshot(row: Any, keys: PayloadKeys | None) -> StepSnapshot:
    key = row.idempotency_key
    return StepSnapshot(
        idempotency_key=key,
        saga_id=row.saga_id,
        step_id=row.step_id,
        action=row.action,
        status=row.status,
        attempts=row.attempts,
        external_id=row.external_id,
        result=_open_json(keys, row.result, "result", key),
        error=_open_text(keys, row.error, "error", key),
        compensation_status=row.compensation_status,
        compensation_attempts=row.compensation_attempts,
        failures=row.failures,
        compensation_failures=row.compensation_failures,
        delivery_round=row.delivery_round,
        delivering_attempt=row.delivering_attempt,
        delivering_since=_utc(row.delivering_since),
        delivery_evidence=row.delivery_evidence,
    )


def _context(column: str, row: str) -> str:
    return f"{column}/{row}"


def _seal_json(keys: PayloadKeys | None, value: Any, column: str, row: str) -> Any:
    if keys is None or value is None:
        return value
    return seal(keys, json.dumps(value).encode(), _context(column, row))


def _seal_text(keys: PayloadKeys | None, value: str | None, column: str, row: str) -> str | None:
    if keys is None or value is None:
        return value
    return seal(keys, value.encode(), _context(column, row))


def _open_json(keys: PayloadKeys | None, value: Any, column: str, row: str) -> Any:
    if not is_sealed(value):
        return value  # None, or written before sealing
    return json.loads(unseal(keys, value, _context(column, row)))


def _open_text(keys: PayloadKeys | None, value: str | None, column: str, row: str) -> str | None:
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


def migrate(engine: Engine) -> None:
    """Bring the ledger schema to the newest Alembic revision."""
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(Path(__file__).parent / "_migrations"))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")


class _Writers:
    """The ledger's own threads: calls run in arrival order, and each thread wakes the
    event loop once per batch of finished calls instead of once per call.

    Under load (hundreds of steps in flight) the per-call hand-off between the loop and
    a thread cost more CPU than the SQLite write itself; each call still runs in its own
    transaction, and its caller resumes only after that transaction committed.
    """

    BATCH = 32

    def __init__(self, threads: int, name: str) -> None:
        self._queue: queue.SimpleQueue[_Call | None] = queue.SimpleQueue()
        self._closed = False
        self._threads = [
            threading.Thread(target=self._run, name=f"{name}-{n}", daemon=True)
            for n in range(threads)
        ]
        for t in self._threads:
            t.start()

    def submit(self, fn: Callable[..., T], args: tuple[Any, ...]) -> asyncio.Future[T]:
        if self._closed:
            raise _closed()
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[T] = loop.create_future()
        self._queue.put(_Call(loop, fut, fn, args))
        return fut

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            while len(batch) < self.BATCH:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    self._queue.put(None)  # for this thread's next turn
                    break
                batch.append(more)
            done: dict[asyncio.AbstractEventLoop, list[tuple[_Call, bool, Any]]] = {}
            for call in batch:
                try:
                    outcome: tuple[_Call, bool, Any] = (call, True, call.fn(*call.args))
                except BaseException as exc:  # handed to the caller, as an executor would
                    outcome = (call, False, exc)
                done.setdefault(call.loop, []).append(outcome)
            for loop, outcomes in done.items():
                with contextlib.suppress(RuntimeError):  # that loop is closed
                    loop.call_soon_threadsafe(_settle, outcomes)

    def close(self) -> None:
        self._closed = True
        for _ in self._threads:
            self._queue.put(None)
        for t in self._threads:
            t.join()
        while True:  # calls submitted while closing
            try:
                call = self._queue.get_nowait()
            except queue.Empty:
                return
            if call is not None:
                with contextlib.suppress(RuntimeError):
                    call.loop.call_soon_threadsafe(_settle, [(call, False, _closed())])


def _closed() -> RuntimeError:
    return RuntimeError("the ledger is closed")


@dataclass(frozen=True)
class _Call:
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Any]
    fn: Callable[..., Any]
    args: tuple[Any, ...]


def _settle(outcomes: list[tuple[_Call, bool, Any]]) -> None:
    for call, ok, value in outcomes:
        if call.future.cancelled():
            continue
        if ok:
            call.future.set_result(value)
        else:
            call.future.set_exception(value)


class _Writes:
    """The statements of the hot path, built once with bind parameters.

    Each step costs two of these transactions; building and compiling a statement per
    call cost more than the database itself (about 0.7 ms against 0.1 ms a step on
    SQLite), so they are built here once and SQLAlchemy's compiled cache does the rest.
    """

    def __init__(self, insert: Callable[[Table], Any]) -> None:
        s, sagas = _STEPS, _SAGAS
        by_key = s.c.idempotency_key == bindparam("k")
        self.open_saga = (
            insert(sagas)
            .values(
                saga_id=bindparam("sid"),
                status="running",
                created_at=bindparam("now"),
                updated_at=bindparam("now"),
            )
            .on_conflict_do_nothing()
        )
        self.claim_step = (
            insert(s)
            .values(
                idempotency_key=bindparam("k"),
                saga_id=bindparam("sid"),
                step_id=bindparam("step"),
                action=bindparam("act"),
                status=StepRow.RUNNING.value,
                attempts=bindparam("attempt"),
                compensation_status="none",
                compensation_attempts=0,
                started_at=bindparam("now"),
                attempt_started_at=bindparam("now"),
                failures=0,
                compensation_failures=0,
                compensation_round=0,
                delivery_round=bindparam("round"),
            )
            .on_conflict_do_nothing()
            .returning(s.c.idempotency_key)
        )
        self.read_step = select(s).where(by_key)
        # An operator's "do it again" starts a round: a fresh retry budget, and no
        # attempt of the new round has delivered yet.
        new_round = s.c.delivery_round < bindparam("round")
        self.retry_step = (
            update(s)
            .where(by_key)
            .values(
                status=StepRow.RUNNING.value,
                attempts=s.c.attempts + 1,
                failures=case((new_round, 0), else_=s.c.failures + bindparam("lost")),
                attempt_started_at=bindparam("now"),
                delivery_round=case((new_round, bindparam("round")), else_=s.c.delivery_round),
                delivering_attempt=case((new_round, null()), else_=s.c.delivering_attempt),
            )
        )
        delivery = {
            "delivering_attempt": bindparam("attempt"),
            "delivering_since": bindparam("now"),
            "delivery_evidence": bindparam("ev", type_=JSON(none_as_null=True)),
            "external_id": func.coalesce(bindparam("ext", type_=String()), s.c.external_id),
        }
        # One attempt per round passes the point of no return of an at-most-once step:
        # a second one (a retry, or a stale attempt still running after its heartbeat
        # timed out) finds the first one's mark and must not deliver.
        self.claim_delivery = (
            update(s)
            .where(
                by_key,
                s.c.delivery_round == bindparam("round"),
                s.c.delivering_attempt.is_(None),
                s.c.status == StepRow.RUNNING.value,
                s.c.compensation_status == "none",
            )
            .values(**delivery)
            .returning(s.c.idempotency_key)
        )
        self.note_delivery = update(s).where(by_key).values(**delivery)
        self.release_delivery = (
            update(s)
            .where(
                by_key,
                s.c.delivery_round == bindparam("round"),
                s.c.delivering_attempt == bindparam("attempt"),
            )
            .values(delivering_attempt=None)
        )
        self.finish_step = (
            update(s)
            .where(by_key)
            .values(
                status=StepRow.SUCCEEDED.value,
                result=bindparam("res"),
                external_id=bindparam("ext"),
                error=None,
                finished_at=bindparam("now"),
            )
        )
        self.external_id = update(s).where(by_key).values(external_id=bindparam("ext"))
        self.fail_step = (
            update(s)
            .where(by_key, s.c.status != StepRow.SUCCEEDED.value)
            .values(
                status=StepRow.FAILED.value,
                error=bindparam("err"),
                finished_at=bindparam("now"),
                failures=s.c.failures + bindparam("n"),
            )
            .returning(s.c.failures)
        )
        # An attempt of this round still marked running was lost; it spends the budget
        # only if it ran out its start-to-close time-out (began before the cutoff).
        same_round = s.c.compensation_round == bindparam("round")
        lost_timed_out = case(
            (
                and_(
                    s.c.compensation_status == "running",
                    same_round,
                    s.c.compensation_started_at <= bindparam("cutoff"),
                ),
                1,
            ),
            else_=0,
        )
        self.begin_compensation = (
            update(s)
            .where(by_key)
            .values(
                compensation_status="running",
                compensation_attempts=s.c.compensation_attempts + 1,
                compensation_failures=case(
                    (same_round, s.c.compensation_failures + lost_timed_out), else_=0
                ),
                compensation_round=bindparam("round"),
                compensation_started_at=bindparam("now"),
            )
            .returning(*s.c)
        )
        self.compensated = (
            update(s)
            .where(by_key)
            .values(
                compensation_status="compensated",
                compensation_error=bindparam("err"),
                compensation_result=bindparam("res"),
                compensated_at=bindparam("now"),
            )
        )
        self.compensation_failed = (
            update(s)
            .where(by_key)
            .values(
                compensation_status=bindparam("st"),
                compensation_error=bindparam("err"),
                compensation_failures=s.c.compensation_failures + bindparam("n"),
            )
            .returning(s.c.compensation_failures)
        )
        upsert = insert(sagas).values(
            saga_id=bindparam("sid"),
            status=bindparam("st"),
            error=bindparam("err"),
            request=bindparam("req"),
            plan=bindparam("pln", type_=JSON(none_as_null=True)),
            created_at=bindparam("now"),
            updated_at=bindparam("now"),
        )
        # A request or plan not given (None) keeps the one already recorded.
        self.record_saga = upsert.on_conflict_do_update(
            index_elements=[sagas.c.saga_id],
            set_={
                "status": upsert.excluded.status,
                "error": upsert.excluded.error,
                "updated_at": upsert.excluded.updated_at,
                "request": func.coalesce(upsert.excluded.request, sagas.c.request),
                "plan": func.coalesce(upsert.excluded.plan, sagas.c.plan),
            },
        )


class Ledger:
    """Synchronous ledger API; the activity wrapper calls it from the ledger's threads.

    Writes run on a connection each thread keeps (no pool checkout per write); reads
    take one from the pool. Personal columns are sealed with ``keys`` (module docstring).
    """

    def __init__(
        self, url: str, *, keys: PayloadKeys | None = None, auto_migrate: bool = True
    ) -> None:
        self.url = url
        self.keys = keys
        """Seal and open the personal columns; None writes them in the clear (a worker
        gives a ledger without keys its client's payload keys)."""
        self.engine = make_engine(url)
        sqlite_db = self.engine.dialect.name == "sqlite"
        # Its own threads: SQLite writes one at a time anyway, so one thread avoids
        # lock waits; PostgreSQL gets a few. Never the loop's shared default pool.
        self._writers = _Writers(1 if sqlite_db else 8, "ledger")
        self._sagas_seen: set[str] = set()
        self._w = _Writes(
            postgresql.insert if self.engine.dialect.name == "postgresql" else sqlite.insert
        )
        self._local = threading.local()
        self._held: set[Connection] = set()
        self._held_lock = threading.Lock()
        if auto_migrate:
            migrate(self.engine)

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a ledger method on the ledger's own threads."""
        return await self._writers.submit(fn, args)

    def close(self) -> None:
        self._writers.close()
        with self._held_lock:
            held, self._held = self._held, set()
        for conn in held:
            with contextlib.suppress(Exception):
                conn.close()
        self.engine.dispose()

    @contextlib.contextmanager
    def _writing(self) -> Iterator[Connection]:
        """One transaction on this thread's own connection."""
        conn: Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self.engine.connect()
            self._local.conn = conn
            with self._held_lock:
                self._held.add(conn)
        try:
            with conn.begin():
                yield conn
        except BaseException:
            # The connection may be broken (a restarted PostgreSQL): the next write on
            # this thread opens a fresh one.
            self._local.conn = None
            with self._held_lock:
                self._held.discard(conn)
            with contextlib.suppress(Exception):
                conn.close()
            raise

    # -- forward steps -------------------------------------------------------------
    def begin_step(
        self,
        key: str,
        saga_id: str,
        step_id: str,
        action: str,
        attempt: int,
        timeout: timedelta | None = None,
        round_: int = 0,
    ) -> StepSnapshot | None:
        """Claim the step. Returns the existing row when the key was seen before.

        An earlier attempt still marked running was lost (its worker died, or it ran out
        its start-to-close ``timeout``): only the second kind counts in ``failures``.
        A ``round_`` above the row's starts a new round (an operator's "do it again"):
        its failures start at 0 and no attempt of it has delivered yet. The snapshot
        shows failures and delivery as this claim leaves them.
        """
        now = _now()
        w = self._w
        with self._writing() as conn:
            if saga_id not in self._sagas_seen:
                conn.execute(w.open_saga, {"sid": saga_id, "now": now})
            inserted = conn.execute(
                w.claim_step,
                {
                    "k": key,
                    "sid": saga_id,
                    "step": step_id,
                    "act": action,
                    "attempt": attempt,
                    "now": now,
                    "round": round_,
                },
            ).first()
            if inserted is not None:
                snap = None
            else:
                row = conn.execute(w.read_step, {"k": key}).one()
                snap = _snapshot(row, self.keys)
                if snap.compensation_status == "none" and snap.status != StepRow.SUCCEEDED.value:
                    lost = int(
                        snap.status == StepRow.RUNNING.value
                        and timeout is not None
                        and _elapsed(row.attempt_started_at, now) >= timeout
                    )
                    conn.execute(
                        w.retry_step, {"k": key, "lost": lost, "now": now, "round": round_}
                    )
                    if round_ > snap.delivery_round:
                        snap = dataclasses.replace(
                            snap, failures=0, delivery_round=round_, delivering_attempt=None
                        )
                    else:
                        snap = dataclasses.replace(snap, failures=snap.failures + lost)
        # Later steps skip the saga row (record_saga upserts it at the end in any case).
        if len(self._sagas_seen) > 10_000:
            self._sagas_seen.clear()
        self._sagas_seen.add(saga_id)
        if snap is not None and snap.compensation_status != "none":
            raise StepAlreadyCompensated(
                f"step {step_id} of saga {saga_id} was already compensated "
                f"({snap.compensation_status}); it will not run again"
            )
        return snap

    def finish_step(self, key: str, result: dict[str, Any] | None, external_id: str | None) -> None:
        with self._writing() as conn:
            conn.execute(
                self._w.finish_step,
                {
                    "k": key,
                    "res": _seal_json(self.keys, result, "result", key),
                    "ext": external_id,
                    "now": _now(),
                },
            )

    def claim_delivery(
        self,
        key: str,
        round_: int,
        attempt: int,
        evidence: dict[str, Any],
        external_id: str | None = None,
        exclusive: bool = True,
    ) -> StepSnapshot | None:
        """Record that ``attempt`` of round ``round_`` is about to deliver, with
        ``evidence`` for an operator. ``exclusive``: only if no other attempt of the round
        did; returns None when recorded, else the row whose mark stopped it."""
        values = {
            "k": key,
            "round": round_,
            "attempt": attempt,
            "now": _now(),
            "ev": evidence,
            "ext": external_id,
        }
        with self._writing() as conn:
            if not exclusive:
                conn.execute(self._w.note_delivery, values)
                return None
            if conn.execute(self._w.claim_delivery, values).first() is not None:
                return None
            return _snapshot(conn.execute(self._w.read_step, {"k": key}).one(), self.keys)

    def release_delivery(self, key: str, round_: int, attempt: int) -> None:
        """``attempt`` knows it delivered nothing: the round's delivery is free again."""
        with self._writing() as conn:
            conn.execute(self._w.release_delivery, {"k": key, "round": round_, "attempt": attempt})

    def record_external_id(self, key: str, external_id: str) -> None:
        """Record an external id mid-step, before the step's result is known."""
        with self._writing() as conn:
            conn.execute(self._w.external_id, {"k": key, "ext": external_id})

    def fail_step(self, key: str, error: str, counts: bool = True) -> int | None:
        """Record a failed attempt, unless another attempt of the step already succeeded
        (a stale attempt, retried after a heartbeat timeout, may fail last). Returns the
        step's failures so far (``counts``: this one is one of them), or None."""
        with self._writing() as conn:
            row = conn.execute(
                self._w.fail_step,
                {
                    "k": key,
                    "err": _seal_text(self.keys, error, "error", key),
                    "now": _now(),
                    "n": int(counts),
                },
            ).first()
        return None if row is None else int(row[0])

    # -- compensations -------------------------------------------------------------
    def begin_compensation(
        self, key: str, round_: int = 1, timeout: timedelta | None = None
    ) -> StepSnapshot | None:
        """Start an attempt of the compensation's round ``round_``. Its failures count per
        round; an attempt of this round lost after its start-to-close ``timeout`` counts."""
        now = _now()
        cutoff = now - timeout if timeout is not None else datetime.min.replace(tzinfo=UTC)
        with self._writing() as conn:
            row = conn.execute(
                self._w.begin_compensation,
                {"k": key, "round": round_, "now": now, "cutoff": cutoff},
            ).first()
        return _snapshot(row, self.keys) if row is not None else None

    def finish_compensation(
        self,
        key: str,
        status: str,
        result: dict[str, Any] | None,
        error: str | None,
        counts: bool = True,
    ) -> int | None:
        """Record the compensation's outcome; when it failed, returns the failures of its
        round so far (``counts``: this one is one of them)."""
        result = _seal_json(self.keys, result, "compensation_result", key)
        error = _seal_text(self.keys, error, "compensation_error", key)
        with self._writing() as conn:
            if status == "compensated":
                conn.execute(
                    self._w.compensated, {"k": key, "res": result, "err": error, "now": _now()}
                )
                return None
            row = conn.execute(
                self._w.compensation_failed,
                {"k": key, "st": status, "err": error, "n": int(counts)},
            ).first()
        return None if row is None else int(row[0])

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
        with self._writing() as conn:
            conn.execute(
                self._w.record_saga,
                {
                    "sid": saga_id,
                    "st": status,
                    "err": _seal_text(self.keys, error, "error", saga_id),
                    "req": _seal_text(self.keys, request, "request", saga_id),
                    "pln": _seal_json(self.keys, plan, "plan", saga_id),
                    "now": _now(),
                },
            )

    def steps(self, saga_id: str) -> list[StepSnapshot]:
        steps = _STEPS
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(steps).where(steps.c.saga_id == saga_id).order_by(steps.c.started_at)
            ).all()
        return [_snapshot(r, self.keys) for r in rows]

    def step(self, key: str) -> StepSnapshot | None:
        with self.engine.connect() as conn:
            row = conn.execute(self._w.read_step, {"k": key}).first()
        return _snapshot(row, self.keys) if row is not None else None

    def saga(self, saga_id: str) -> dict[str, Any] | None:
        table = _SAGAS
        with self.engine.connect() as conn:
            row = conn.execute(select(table).where(table.c.saga_id == saga_id)).first()
        return self._saga_row(row) if row is not None else None

    def sagas(self) -> list[dict[str, Any]]:
        """Every saga row, oldest first (request, plan and error in the clear)."""
        table = _SAGAS
        with self.engine.connect() as conn:
            rows = conn.execute(select(table).order_by(table.c.created_at)).all()
        return [self._saga_row(r) for r in rows]

    def _saga_row(self, row: Any) -> dict[str, Any]:
        out = dict(row._mapping)
        sid = out["saga_id"]
        out["request"] = _open_text(self.keys, out["request"], "request", sid)
        out["plan"] = _open_json(self.keys, out["plan"], "plan", sid)
        out["error"] = _open_text(self.keys, out["error"], "error", sid)
        return out

    def all_steps(self) -> list[StepSnapshot]:
        steps = _STEPS
        with self.engine.connect() as conn:
            rows = conn.execute(select(steps).order_by(steps.c.started_at)).all()
        return [_snapshot(r, self.keys) for r in rows]
