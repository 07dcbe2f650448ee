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

import contextlib
import dataclasses
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy import Connection
from sqlalchemy.dialects import postgresql, sqlite

from saga._codec import PayloadKeys
from saga._errors import StepAlreadyCompensated
from saga._ledger_reads import LedgerReads
from saga._ledger_schema import (
    Base,
    CompensationClaim,
    SagaRecord,
    StepRecord,
    StepRow,
    StepSnapshot,
    as_utc,
    elapsed,
    make_engine,
    migrate,
    seal_json,
    seal_text,
    snapshot,
    utcnow,
)
from saga._ledger_threads import Writers
from saga._ledger_writes import Writes

__all__ = [
    "Base",
    "CompensationClaim",
    "Ledger",
    "SagaRecord",
    "StepRecord",
    "StepRow",
    "StepSnapshot",
    "make_engine",
    "migrate",
]

T = TypeVar("T")


class Ledger(LedgerReads):
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
        self._writers = Writers(1 if sqlite_db else 8, "ledger")
        self._sagas_seen: set[str] = set()
        self._w = Writes(
            postgresql.insert if self.engine.dialect.name == "postgresql" else sqlite.insert
        )
        self._local = threading.local()
        self._autocommit = self.engine.dialect.name == "postgresql"
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
    def _writing(self, single: bool = False) -> Iterator[Connection]:
        """One transaction on this thread's own connection.

        ``single``: the caller writes with one statement (or with statements each of which
        stands alone). On PostgreSQL that runs in autocommit, where a statement is its own
        transaction, saving the BEGIN and COMMIT round trips.
        """
        slot = "auto" if single and self._autocommit else "conn"
        conn: Connection | None = getattr(self._local, slot, None)
        if conn is None:
            conn = self.engine.connect()
            if slot == "auto":
                conn = conn.execution_options(isolation_level="AUTOCOMMIT")
            setattr(self._local, slot, conn)
            with self._held_lock:
                self._held.add(conn)
        try:
            with conn.begin():
                yield conn
        except BaseException:
            # The connection may be broken (a restarted PostgreSQL): the next write on
            # this thread opens a fresh one.
            setattr(self._local, slot, None)
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
        now = utcnow()
        w = self._w
        # The first claim of a step is one insert (each statement stands alone: the saga's
        # row is only ever inserted if missing); a key seen before is read and updated in
        # one transaction.
        with self._writing(single=True) as conn:
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
        snap = None
        if inserted is None:
            with self._writing() as conn:
                row = conn.execute(w.read_step, {"k": key}).one()
                snap = snapshot(row, self.keys)
                if snap.compensation_status == "none" and snap.status != StepRow.SUCCEEDED.value:
                    lost = int(
                        snap.status == StepRow.RUNNING.value
                        and timeout is not None
                        and elapsed(row.attempt_started_at, now) >= timeout
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
        with self._writing(single=True) as conn:
            conn.execute(
                self._w.finish_step,
                {
                    "k": key,
                    "res": seal_json(self.keys, result, "result", key),
                    "ext": external_id,
                    "now": utcnow(),
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
            "now": utcnow(),
            "ev": evidence,
            "ext": external_id,
        }
        with self._writing() as conn:
            if not exclusive:
                conn.execute(self._w.note_delivery, values)
                return None
            if conn.execute(self._w.claim_delivery, values).first() is not None:
                return None
            return snapshot(conn.execute(self._w.read_step, {"k": key}).one(), self.keys)

    def release_delivery(self, key: str, round_: int, attempt: int) -> None:
        """``attempt`` knows it delivered nothing: the round's delivery is free again."""
        with self._writing(single=True) as conn:
            conn.execute(self._w.release_delivery, {"k": key, "round": round_, "attempt": attempt})

    def sending(self, key: str, attempt: int, until: datetime) -> bool:
        """Record that ``attempt`` sends a request whose effect may land until ``until``
        even if no answer comes. False, and nothing recorded, once the step's
        compensation began: the attempt must not send."""
        with self._writing(single=True) as conn:
            row = conn.execute(
                self._w.sending, {"k": key, "attempt": attempt, "now": utcnow(), "until": until}
            ).first()
        return row is not None

    def answered(self, key: str, attempt: int) -> None:
        """``attempt``'s request of :meth:`sending` was answered: nothing of it is on its way."""
        with self._writing(single=True) as conn:
            conn.execute(self._w.answered, {"k": key, "attempt": attempt})

    def record_external_id(self, key: str, external_id: str) -> None:
        """Record an external id mid-step, before the step's result is known."""
        with self._writing(single=True) as conn:
            conn.execute(self._w.external_id, {"k": key, "ext": external_id})

    def fail_step(self, key: str, error: str, counts: bool = True) -> int | None:
        """Record a failed attempt, unless another attempt of the step already succeeded
        (a stale attempt, retried after a heartbeat timeout, may fail last). Returns the
        step's failures so far (``counts``: this one is one of them), or None."""
        with self._writing(single=True) as conn:
            row = conn.execute(
                self._w.fail_step,
                {
                    "k": key,
                    "err": seal_text(self.keys, error, "error", key),
                    "now": utcnow(),
                    "n": int(counts),
                },
            ).first()
        return None if row is None else int(row[0])

    # -- compensations -------------------------------------------------------------
    def begin_compensation(
        self, key: str, round_: int = 1, timeout: timedelta | None = None
    ) -> CompensationClaim | None:
        """Start an attempt of the compensation's round ``round_``. Its failures count per
        round; an attempt of this round lost after its start-to-close ``timeout`` counts.
        None: the step has no row (it never began). A round already compensated is not
        started again: the claim says ``done``."""
        now = utcnow()
        cutoff = now - timeout if timeout is not None else datetime.min.replace(tzinfo=UTC)
        w = self._w
        with self._writing(single=True) as conn:
            row = conn.execute(
                w.begin_compensation, {"k": key, "round": round_, "now": now, "cutoff": cutoff}
            ).first()
            if row is not None:
                failures, external_id, result, in_flight = row
                return CompensationClaim(
                    key, failures, external_id, False, result, None, self.keys, as_utc(in_flight)
                )
            done = conn.execute(w.read_compensation, {"k": key}).first()
        if done is None:
            return None
        status, recorded_round, compensation_result, external_id = done
        if status != "compensated" or recorded_round != round_:  # changed meanwhile: retry
            raise RuntimeError(f"compensation of {key} changed while claimed ({status})")
        return CompensationClaim(key, 0, external_id, True, None, compensation_result, self.keys)

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
        result = seal_json(self.keys, result, "compensation_result", key)
        error = seal_text(self.keys, error, "compensation_error", key)
        with self._writing(single=True) as conn:
            if status == "compensated":
                conn.execute(
                    self._w.compensated, {"k": key, "res": result, "err": error, "now": utcnow()}
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
    ) -> bool:
        """Record the saga's status; True when this call changed it (False when it was
        already recorded, e.g. by an earlier attempt of the same record)."""
        params = {
            "sid": saga_id,
            "st": status,
            "err": seal_text(self.keys, error, "error", saga_id),
            "req": seal_text(self.keys, request, "request", saga_id),
            "pln": seal_json(self.keys, plan, "plan", saga_id),
            "now": utcnow(),
        }
        w = self._w
        # Each statement stands alone: two records racing, one of them changes the status.
        with self._writing(single=True) as conn:
            if conn.execute(w.change_saga_status, params).first() is not None:
                return True
            if conn.execute(w.insert_saga, params).first() is not None:
                return True
            conn.execute(w.update_saga, params)
        return False
