"""The ledger on its own, against real SQLite files and a real PostgreSQL database."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import DBAPIError

from saga import Ledger, StepAlreadyCompensated
from tests.pgdb import pg_database


@pytest.fixture(params=["sqlite", "postgresql"])
def ledger(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Ledger]:
    if request.param == "sqlite":
        ledger = Ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
        yield ledger
        ledger.close()
        return
    with pg_database("saga_ledger") as url:
        ledger = Ledger(url)
        yield ledger
        ledger.close()


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
