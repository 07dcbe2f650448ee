"""The ledger on its own, against real SQLite files and a real PostgreSQL database."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, text
from sqlalchemy.exc import DBAPIError

import saga
from saga import Ledger, PayloadKeyError, PayloadKeys, StepAlreadyCompensated, make_engine
from saga._ledger_schema import Base
from tests.pgdb import ledger_on, pg_database


@pytest.fixture(params=["sqlite", "postgresql"])
def ledger(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Ledger]:
    with ledger_on(request.param, tmp_path, "saga_ledger") as ledger:
        yield ledger


async def test_concurrent_calls_each_get_their_own_answer(ledger: Ledger) -> None:
    """Hundreds of calls in flight share the ledger's threads; one call's error is its own."""
    ledger.begin_step("done/x", "done", "x", "effects.apply", 1)
    ledger.finish_compensation("done/x", "compensated", {"undone": True}, None)

    async def step(n: int) -> str | None:
        key = f"saga-{n % 40}/s{n}"
        claimed = await ledger.call(ledger.begin_step, key, f"saga-{n % 40}", f"s{n}", "a", 1)
        assert claimed is None
        await ledger.call(ledger.finish_step, key, {"external_id": f"e{n}"}, f"e{n}")
        again = await ledger.call(ledger.begin_step, key, f"saga-{n % 40}", f"s{n}", "a", 2)
        assert again is not None
        return again.external_id

    async def refused() -> BaseException | None:
        try:
            await ledger.call(ledger.begin_step, "done/x", "done", "x", "effects.apply", 2)
        except StepAlreadyCompensated as exc:
            return exc
        return None

    results = await asyncio.gather(*(step(n) for n in range(300)), refused())
    assert results[:300] == [f"e{n}" for n in range(300)]
    assert isinstance(results[300], StepAlreadyCompensated)
    assert len(ledger.all_steps()) == 301
    assert {s.status for s in ledger.all_steps() if s.saga_id != "done"} == {"succeeded"}


async def test_a_closed_ledger_refuses_calls_with_a_clear_error(ledger: Ledger) -> None:
    await ledger.call(ledger.record_saga, "s", "running")
    ledger.close()
    with pytest.raises(RuntimeError, match="ledger is closed"):
        await ledger.call(ledger.record_saga, "s", "completed")


def test_saga_record_keeps_request_and_plan_when_a_later_write_omits_them(
    ledger: Ledger,
) -> None:
    ledger.record_saga("s", "running", request="order 2 mugs", plan={"steps": [1]})
    ledger.record_saga("s", "completed", error=None)
    row = ledger.saga("s")
    assert row is not None
    assert (row["status"], row["request"], row["plan"]) == (
        "completed",
        "order 2 mugs",
        {"steps": [1]},
    )
    ledger.record_saga("t", "rejected", error="plan rejected")
    row = ledger.saga("t")
    assert row is not None
    assert (row["status"], row["error"], row["request"], row["plan"]) == (
        "rejected",
        "plan rejected",
        None,
        None,
    )


def test_a_write_after_the_database_dropped_the_connection_opens_a_new_one() -> None:
    """Writes keep a connection per thread; one PostgreSQL closed is replaced, not reused."""
    with pg_database("saga_ledger") as url:
        ledger = Ledger(url)
        try:
            ledger.begin_step("s/a", "s", "a", "effects.apply", 1)
            admin = create_engine(url.rsplit("/", 1)[0] + "/postgres")
            name = url.rsplit("/", 1)[1]
            with admin.begin() as conn:
                killed = conn.execute(
                    text(
                        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                        "WHERE datname = :name AND pid <> pg_backend_pid()"
                    ),
                    {"name": name},
                ).scalar_one()
            admin.dispose()
            assert killed >= 1
            with pytest.raises(DBAPIError):
                ledger.finish_step("s/a", {"external_id": "e1"}, "e1")
            ledger.finish_step("s/a", {"external_id": "e1"}, "e1")  # a fresh connection
            row = ledger.step("s/a")
            assert row is not None and (row.status, row.external_id) == ("succeeded", "e1")
        finally:
            ledger.close()


# -- at most once: one attempt per round passes the point of no return ----------------------
def test_one_attempt_per_round_may_deliver(ledger: Ledger) -> None:
    assert ledger.begin_step("s/mail", "s", "mail", "notify.email", 1) is None
    assert ledger.claim_delivery("s/mail", 0, 1, {"worker": "w1"}, "<m@x>") is None
    # Attempt 1's worker died: the retry sees who may have delivered, and cannot claim.
    retry = ledger.begin_step("s/mail", "s", "mail", "notify.email", 2)
    assert retry is not None and retry.delivering_attempt == 1
    assert retry.delivery_evidence == {"worker": "w1"} and retry.external_id == "<m@x>"
    assert retry.delivering_since is not None and retry.delivering_since.tzinfo is not None
    holder = ledger.claim_delivery("s/mail", 0, 2, {"worker": "w2"})
    assert holder is not None and holder.delivering_attempt == 1
    ledger.release_delivery("s/mail", 0, 2)  # not attempt 2's to release
    assert ledger.step("s/mail").delivering_attempt == 1  # type: ignore[union-attr]
    ledger.fail_step("s/mail", "DeliveryUncertain: parked", False)
    # The operator's "do it again" is round 1: a fresh budget, nothing delivered yet.
    again = ledger.begin_step("s/mail", "s", "mail", "notify.email", 1, None, 1)
    assert again is not None and (again.delivery_round, again.delivering_attempt) == (1, None)
    assert again.failures == 0
    # A stale attempt of round 0 cannot deliver any more; round 1's first one can.
    assert ledger.claim_delivery("s/mail", 0, 3, {"worker": "w3"}) is not None
    assert ledger.claim_delivery("s/mail", 1, 1, {"worker": "w4"}) is None
    ledger.finish_step("s/mail", {"external_id": "<m@x>"}, "<m@x>")
    row = ledger.step("s/mail")
    assert row is not None and (row.status, row.delivering_attempt) == ("succeeded", 1)
    assert row.delivery_evidence == {"worker": "w4"}
    # After success nobody else may deliver, whatever round it thinks it is in.
    assert ledger.claim_delivery("s/mail", 1, 2, {"worker": "w5"}) is not None


def test_a_refused_delivery_frees_the_round_for_a_retry(ledger: Ledger) -> None:
    ledger.begin_step("s/mail", "s", "mail", "notify.email", 1)
    assert ledger.claim_delivery("s/mail", 0, 1, {}) is None
    ledger.release_delivery("s/mail", 0, 1)  # the server answered 451: nothing delivered
    ledger.fail_step("s/mail", "SMTPDataError: 451")
    retry = ledger.begin_step("s/mail", "s", "mail", "notify.email", 2)
    assert retry is not None and retry.delivering_attempt is None and retry.failures == 1
    assert ledger.claim_delivery("s/mail", 0, 2, {}) is None


async def test_of_many_attempts_claiming_at_once_exactly_one_may_deliver(ledger: Ledger) -> None:
    """Racing claims (PostgreSQL runs them on eight threads at once): one wins."""
    for n in range(20):
        ledger.begin_step(f"s/m{n}", "s", f"m{n}", "notify.email", 1)
    claims = [
        ledger.call(ledger.claim_delivery, f"s/m{n}", 0, attempt, {"attempt": str(attempt)})
        for n in range(20)
        for attempt in range(1, 9)
    ]
    results = await asyncio.gather(*claims)
    for n in range(20):
        won = [r for r in results[n * 8 : (n + 1) * 8] if r is None]
        assert len(won) == 1, n
        row = ledger.step(f"s/m{n}")
        assert row is not None and row.delivery_evidence == {"attempt": str(row.delivering_attempt)}


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_migration_0003_keeps_a_step_in_flight(backend: str, tmp_path: Path) -> None:
    """A ledger at 0002 with a step running upgrades in place, its step goes on, and the
    upgraded schema is the one the code declares."""
    with (
        contextlib.nullcontext(f"sqlite:///{tmp_path / 'old.db'}")
        if backend == "sqlite"
        else pg_database("saga_ledger")
    ) as url:
        engine = make_engine(url)
        cfg = Config()
        cfg.set_main_option("script_location", str(Path(saga.__file__).parent / "_migrations"))
        with engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "0002")
            conn.execute(
                text(
                    "INSERT INTO saga_step (idempotency_key, saga_id, step_id, action, status, "
                    "attempts, compensation_status, compensation_attempts, started_at, failures, "
                    "compensation_failures, compensation_round) VALUES ('old/mail', 'old', "
                    "'mail', 'notify.email', 'running', 1, 'none', 0, :now, 0, 0, 0)"
                ),
                {"now": datetime.now(UTC)},
            )
        engine.dispose()
        ledger = Ledger(url)  # migrates to the newest revision
        try:
            with ledger.engine.connect() as conn:
                assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []
            row = ledger.step("old/mail")
            assert row is not None and (row.delivery_round, row.delivering_attempt) == (0, None)
            retry = ledger.begin_step("old/mail", "old", "mail", "notify.email", 2)
            assert retry is not None and retry.delivering_attempt is None
            assert ledger.claim_delivery("old/mail", 0, 2, {"worker": "w"}) is None
        finally:
            ledger.close()


EMAIL = "cleo.private@example.com"
CARD = "4242424242424242"


def _raw_rows(url: str) -> str:
    """Every column of every saga and step row, as the database holds it."""
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            rows = [
                *conn.execute(text("SELECT * FROM saga")).all(),
                *conn.execute(text("SELECT * FROM saga_step")).all(),
            ]
    finally:
        engine.dispose()
    return "\n".join(repr(tuple(r)) for r in rows)


def test_personal_columns_are_sealed_and_read_back_in_the_clear(ledger: Ledger) -> None:
    keys = PayloadKeys.parse(PayloadKeys.new_entry("ledger-k1"))
    sealed = Ledger(ledger.url, keys=keys, auto_migrate=False)
    try:
        plan = {"steps": [{"id": "c", "args": {"customer_email": EMAIL, "card_number": CARD}}]}
        sealed.record_saga("p", "running", request=f"order for {EMAIL}", plan=plan)
        sealed.record_saga("p", "compensated", error=f"550 <{EMAIL}> rejected")
        sealed.begin_step("p/c", "p", "c", "notify.email", 1)
        sealed.fail_step("p/c", f"SMTP refused {EMAIL}")
        sealed.begin_step("p/d", "p", "d", "notify.email", 1)
        sealed.finish_step("p/d", {"external_id": "m-1", "to": EMAIL}, "m-1")
        sealed.begin_compensation("p/d")
        sealed.finish_compensation("p/d", "failed", None, f"undo of {EMAIL} failed")
        sealed.finish_compensation("p/d", "compensated", {"to": EMAIL}, None)

        raw = _raw_rows(ledger.url)
        assert EMAIL not in raw and CARD not in raw and "cleo" not in raw
        assert "enc:v1:ledger-k1:" in raw
        # What operators and reconciliation need stays plain.
        assert "'p/d'" in raw and "'m-1'" in raw and "'notify.email'" in raw

        row = sealed.saga("p")
        assert row is not None
        assert (row["request"], row["plan"], row["error"]) == (
            f"order for {EMAIL}",
            plan,
            f"550 <{EMAIL}> rejected",
        )
        assert [r["saga_id"] for r in sealed.sagas()] == ["p"]
        failed, done = sealed.steps("p")
        assert failed.error == f"SMTP refused {EMAIL}"
        assert done.result == {"external_id": "m-1", "to": EMAIL}
        assert done.external_id == "m-1"

        # Without the keys a sealed value is refused by name, never shown as ciphertext.
        with pytest.raises(PayloadKeyError, match="ledger value result/p/d is encrypted"):
            ledger.step("p/d")
        other = Ledger(ledger.url, keys=PayloadKeys.parse(PayloadKeys.new_entry("x")))
        with pytest.raises(PayloadKeyError, match="key 'ledger-k1', which is not among"):
            other.saga("p")
        other.close()
    finally:
        sealed.close()


def test_a_sealed_value_is_bound_to_its_row_and_column(tmp_path: Path) -> None:
    """Copying one row's ciphertext into another row does not pass as that row's data."""
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    ledger = Ledger(url, keys=PayloadKeys.parse(PayloadKeys.new_entry("k")))
    try:
        ledger.record_saga("a", "completed", request=f"for {EMAIL}")
        ledger.record_saga("b", "completed", request="something else")
        with ledger.engine.begin() as conn:
            conn.execute(
                text("UPDATE saga SET request = (SELECT request FROM saga WHERE saga_id = 'a') "
                     "WHERE saga_id = 'b'")
            )  # fmt: skip
        with pytest.raises(PayloadKeyError, match=r"request/b .*does not authenticate"):
            ledger.saga("b")
    finally:
        ledger.close()


def test_rows_written_before_sealing_read_as_they_are(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    plain = Ledger(url)
    plain.record_saga("old", "completed", request="order 2 mugs", plan={"steps": [1]})
    plain.begin_step("old/a", "old", "a", "effects.apply", 1)
    plain.finish_step("old/a", {"external_id": "e1"}, "e1")
    plain.close()
    ledger = Ledger(url, keys=PayloadKeys.parse(PayloadKeys.new_entry("k")))
    try:
        row = ledger.saga("old")
        assert row is not None and (row["request"], row["plan"]) == ("order 2 mugs", {"steps": [1]})
        step = ledger.step("old/a")
        assert step is not None and step.result == {"external_id": "e1"}
        # A later write of the same saga is sealed; the old plan is kept (not given).
        ledger.record_saga("old", "completed", error="late note")
        assert "late note" not in _raw_rows(url)
        row = ledger.saga("old")
        assert row is not None and (row["error"], row["plan"]) == ("late note", {"steps": [1]})
    finally:
        ledger.close()


def test_a_compensated_round_is_not_claimed_again(ledger: Ledger) -> None:
    ledger.begin_step("q/a", "q", "a", "effects.apply", 1)
    ledger.finish_step("q/a", {"external_id": "eff-1", "name": "a"}, "eff-1")
    first = ledger.begin_compensation("q/a", 1)
    assert first is not None and not first.done and first.external_id == "eff-1"
    assert first.result() == {"external_id": "eff-1", "name": "a"}
    ledger.finish_compensation("q/a", "compensated", {"reverted": True}, None)
    # The same round again (its answer was lost): nothing changes, the outcome is given.
    again = ledger.begin_compensation("q/a", 1)
    assert again is not None and again.done
    assert again.compensation_result() == {"reverted": True}
    row = ledger.step("q/a")
    assert row is not None and row.compensation_status == "compensated"
    assert row.compensation_attempts == 1
    # An operator's new round runs it again.
    second = ledger.begin_compensation("q/a", 2)
    assert second is not None and not second.done and second.failures == 0
    assert ledger.begin_compensation("q/none", 1) is None


def test_workers_starting_at_once_migrate_a_new_postgres_ledger_without_a_clash() -> None:
    # Seen in the chaos test: two `saga worker` processes started together on a new
    # PostgreSQL ledger; one died with "duplicate key value violates unique constraint
    # pg_type_typname_nsp_index" (both creating the same tables at once).
    import threading

    with pg_database("saga_ledger_race") as url:
        errors: list[BaseException] = []
        ready = threading.Barrier(6)

        def start() -> None:
            ready.wait()
            try:
                Ledger(url).close()
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=start) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        assert errors == []
        ledger = Ledger(url)
        try:
            assert ledger.sagas() == []  # one schema, at the newest revision
        finally:
            ledger.close()


def test_a_request_in_flight_holds_the_undo_until_answered_or_landed(ledger: Ledger) -> None:
    """``sending`` marks a forward request that may land unanswered; the compensation's
    claim carries its deadline. An answer clears only the sender's own mark; a second
    attempt sending while the first's request may still land keeps the later deadline
    and only time clears it. Once the compensation began, no attempt may send."""
    soon = datetime.now(UTC) + timedelta(seconds=30)
    later = soon + timedelta(seconds=30)
    ledger.begin_step("s/one", "s", "one", "tickets.create", 1)
    assert ledger.in_flight_until("s/one") is None
    assert ledger.sending("s/one", 1, soon)
    assert ledger.in_flight_until("s/one") == soon
    ledger.answered("s/one", 2)  # not the sender: the mark stays
    assert ledger.in_flight_until("s/one") == soon
    ledger.answered("s/one", 1)
    assert ledger.in_flight_until("s/one") is None

    ledger.begin_step("s/two", "s", "two", "tickets.create", 1)
    assert ledger.sending("s/two", 1, later)
    ledger.begin_step("s/two", "s", "two", "tickets.create", 2)
    assert ledger.sending("s/two", 2, soon)  # attempt 1's request may still land
    ledger.answered("s/two", 2)
    assert ledger.in_flight_until("s/two") == later  # only time clears "several"
    ledger.answered("s/two", 1)
    assert ledger.in_flight_until("s/two") == later

    claim = ledger.begin_compensation("s/two")
    assert claim is not None and claim.in_flight_until == later
    assert not ledger.sending("s/two", 3, soon)  # the undo began: a late attempt sends nothing
    assert ledger.in_flight_until("s/two") == later

    ledger.begin_step("s/three", "s", "three", "tickets.create", 1)
    claim = ledger.begin_compensation("s/three")
    assert claim is not None and claim.in_flight_until is None
