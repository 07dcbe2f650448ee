"""The saga list: each saga's own status, what it does and its amount, from Temporal's
visibility (the saga's search attributes), filtered by status, words and amount; on the
real dev server, with the CLI as people run it."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine
from temporalio.client import Client, WorkflowExecutionStatus

from saga import Ledger, SagaInput, SagaStatus, Settings, create_worker, free_port
from saga._catalog import catalog
from saga._client import connect_client, start_saga, wait_saga
from saga._errors import SagaError
from saga._index import KEYS, Availability, registered
from saga._listing import list_query, list_sagas
from saga._models import Plan
from saga._summary import money_text, plan_amount, plan_summary
from saga.cli._list import duration
from saga.dev._devserver import DevServer
from tests.conftest import eventually, run

MONEY = "tests.agent.money:build_activities"


@dataclass
class Shop:
    client: Client
    settings: Settings
    prefix: str

    async def run(self, name: str, steps: list[dict[str, Any]], request: str | None = None) -> str:
        sid = f"{self.prefix}-{name}"
        inp = SagaInput(plan={"steps": steps}, request=request)
        await start_saga(
            self.client, None, saga_id=sid, task_queue=self.settings.task_queue, input=inp
        )
        await wait_saga(self.client, sid)
        return sid


@pytest.fixture
async def shop(client: Client, effects_engine: Engine, tmp_path: Path) -> AsyncIterator[Shop]:
    settings = Settings(
        task_queue=f"list-{uuid.uuid4().hex[:8]}",
        database_url=f"sqlite:///{tmp_path / 'ledger.db'}",
        data_dir=tmp_path,
        activities=MONEY,
    )
    ledger = Ledger(settings.ledger_url())
    async with create_worker(client, settings, ledger):
        yield Shop(client, settings, f"list-{uuid.uuid4().hex[:6]}")
    ledger.close()


def charge(amount: int, name: str = "mug") -> dict[str, Any]:
    return {
        "id": f"charge-{name}",
        "action": "money.charge",
        "args": {"name": name, "amount": amount, "currency": "eur"},
    }


def apply(name: str, **args: Any) -> dict[str, Any]:
    return {"id": name, "action": "effects.apply", "args": {"name": name, **args}}


def test_the_query_takes_only_known_statuses_and_plain_words() -> None:
    assert list_query() == 'WorkflowType="SagaWorkflow"'
    assert list_query(["needs_attention", "compensated"], 'blue "mugs"; DROP', 2000) == (
        'WorkflowType="SagaWorkflow" AND (SagaStatus="needs_attention" OR '
        'SagaStatus="compensated") AND (SagaRequest="blue" OR SagaSummary="blue") AND '
        '(SagaRequest="mugs" OR SagaSummary="mugs") AND (SagaRequest="DROP" OR '
        'SagaSummary="DROP") AND SagaAmount >= 2000'
    )
    with pytest.raises(SagaError, match="unknown status 'done'; one of: awaiting_approval"):
        list_query(["done"])


def test_a_summary_says_what_the_plan_does_in_one_line() -> None:
    import activities  # noqa: F401  (the systems' actions, with their summaries)

    plan = Plan.model_validate(
        {
            "steps": [
                {"id": "r", "action": "inventory.reserve",
                 "args": {"sku": "mug-blue", "quantity": 2}},
                {"id": "p", "action": "inventory.product", "args": {"sku": "mug-blue"}},
                {"id": "c", "action": "payments.charge", "args": {
                    "amount": 2500, "currency": "eur", "customer_email": "ana@example.com",
                    "card_number": "4242424242424242"}},
                {"id": "e", "action": "notify.email", "args": {
                    "to": "ana@example.com", "subject": "Thanks", "body": "Your mugs"}},
            ]
        }
    )  # fmt: skip
    steps = [(catalog.get(s.action), s.args) for s in plan.steps]
    described = [(spec, args) for spec, args in steps if spec is not None]
    assert plan_summary(described) == "2 x mug-blue, charge 25.00 EUR, email"
    assert plan_amount(described) == (2500, "eur")
    assert money_text(123456, "usd") == "1,234.56 USD" and money_text(500, "JPY") == "500 JPY"
    assert [duration(s) for s in (3.25, 42, 75, 3725)] == ["3.2s", "42s", "1m 15s", "1h 02m"]


async def test_the_list_shows_and_finds_sagas_by_their_own_status(shop: Shop) -> None:
    done = await shop.run("done", [apply("a"), charge(2500)], "two BLUE mugs for ana@example.com")
    undone = await shop.run("undone", [charge(900, "cup"), apply("x", fail="before")])
    small = await shop.run("small", [charge(300, "pen")])
    client = shop.client
    stuck = f"{shop.prefix}-stuck"  # its undo keeps failing: a person must decide
    steps = [apply("r", revert_failures=100), apply("x", fail="before")]
    await start_saga(client, {"steps": steps}, saga_id=stuck, task_queue=shop.settings.task_queue)

    async def needs_attention() -> bool:
        rows = await list_sagas(client, statuses=["needs_attention"], limit=500)
        return stuck in {r.saga_id for r in rows}

    await eventually(needs_attention)  # indexed while it runs, as its status changes

    # Visibility is eventually consistent: the rows appear within moments.
    await eventually(lambda: _all_indexed(client, [done, undone, small]))
    rows = {r.saga_id: r for r in await list_sagas(client, limit=500)}
    assert rows[done].status == SagaStatus.COMPLETED
    assert rows[undone].status == SagaStatus.COMPENSATED
    assert rows[undone].execution == "completed"  # what Temporal's own status says
    assert (rows[done].world, rows[undone].world) == ("done", "undone")
    assert rows[done].summary == "effects.apply, money.charge"
    assert rows[done].request == "two BLUE mugs for a***@example.com"  # masked when indexed
    assert (rows[done].amount, rows[done].currency, rows[done].money) == (2500, "eur", "25.00 EUR")
    assert rows[done].took() is not None and rows[done].closed_at is not None

    compensated = await list_sagas(client, statuses=["compensated"], limit=500)
    assert undone in {r.saga_id for r in compensated}
    assert {r.status for r in compensated} == {SagaStatus.COMPENSATED}
    found = await list_sagas(client, words="blue mugs", limit=500)
    assert done in {r.saga_id for r in found} and undone not in {r.saga_id for r in found}
    big = {r.saga_id for r in await list_sagas(client, min_amount=800, limit=500)}
    assert {done, undone} <= big and small not in big

    # The CLI, as people run it: the saga's own status, what it does, its amount.
    env = {"SAGA_TEMPORAL_ADDRESS": client.service_client.config.target_host}
    listed = await _saga(env, "list", "--status", "compensated", "--json", "--limit", "500")
    assert listed.returncode == 0, listed.stderr
    by_id = {r["saga_id"]: r for r in json.loads(listed.stdout)}
    assert by_id[undone]["status"] == "compensated" and done not in by_id
    assert by_id[undone]["summary"] == "money.charge, effects.apply"
    table = await _saga(env, "list", "--search", "blue mugs", "--limit", "500")
    assert table.returncode == 0, table.stderr
    line = next(ln for ln in table.stdout.splitlines() if done in ln)
    assert line.split()[:2] == [done, "completed"] and "25.00 EUR" in line
    assert "done" in table.stdout.splitlines()[table.stdout.splitlines().index(line) + 1]
    assert undone not in table.stdout
    bad = await _saga(env, "list", "--status", "finished")
    assert bad.returncode == 2 and "unknown status 'finished'" in bad.stderr


async def _all_indexed(client: Client, saga_ids: list[str]) -> bool:
    """Every saga listed with its final status (visibility catches up within moments)."""
    final = [s.value for s in SagaStatus if s.final]
    rows = {r.saga_id: r for r in await list_sagas(client, statuses=final, limit=500)}
    return all(s in rows for s in saga_ids)


async def _saga(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """The CLI in a thread (the worker shares this test's event loop)."""
    return await asyncio.to_thread(
        run, [sys.executable, "-m", "saga", *args], env={**os.environ, **env}, timeout=120
    )


async def test_a_worker_registers_missing_attributes_and_an_unindexed_saga_still_lists(
    effects_engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a server without the attributes, the first worker check registers them; a saga
    whose worker could not index it still shows its own status (asked of the saga)."""
    server = DevServer(free_port(), tmp_path / "temporal.db", search_attributes=False)
    await server.start()
    try:
        settings = Settings(
            temporal_address=server.address,
            task_queue="fresh",
            database_url=f"sqlite:///{tmp_path / 'ledger.db'}",
            data_dir=tmp_path,
            activities=MONEY,
        )
        client = await connect_client(settings)
        assert await registered(client) == []
        ledger = Ledger(settings.ledger_url())
        try:
            async with create_worker(client, settings, ledger):
                sid = "fresh-indexed"
                await start_saga(client, {"steps": [charge(700)]}, saga_id=sid, task_queue="fresh")
                await wait_saga(client, sid)
                assert await registered(client) == sorted(KEYS)

                async def completed_listed() -> bool:
                    rows = await list_sagas(client, statuses=["completed"])
                    return [r.saga_id for r in rows] == [sid]

                await eventually(completed_listed)

                async def nothing(self: Availability, client: Client) -> list[str]:
                    return []

                monkeypatch.setattr(Availability, "names", nothing)
                quiet = "fresh-unindexed"
                steps = [charge(100), apply("x", fail="before")]
                await start_saga(client, {"steps": steps}, saga_id=quiet, task_queue="fresh")
                await wait_saga(client, quiet)
                desc = await client.get_workflow_handle(quiet).describe()
                assert desc.status == WorkflowExecutionStatus.COMPLETED
                assert "SagaStatus" not in (desc.search_attributes or {})
                rows = {r.saga_id: r for r in await list_sagas(client)}
                assert rows[quiet].status == SagaStatus.COMPENSATED  # asked of the saga
                assert rows[quiet].summary == "money.charge, effects.apply"
        finally:
            ledger.close()
    finally:
        server.stop()
