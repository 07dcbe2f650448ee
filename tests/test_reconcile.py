"""Reconciliation against real drift in the real systems: localstripe, SQL, Redmine.

Every test makes its drift by hand in the system itself (or in the ledger), the way
an outage, a person or a bug would, and reads it back from `reconcile()`; the sagas
that run first are real sagas through the real workflow and activities. Each test
scopes the report to its own saga-id prefix; the module owns its localstripe, inventory
database, ledger and Redmine project.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import delete
from temporalio.client import Client

from activities.inventory import Reservation, ReserveInput, reserve
from activities.payments import metadata_for
from activities.tickets import marker
from saga import (
    Ledger,
    SagaResult,
    SagaStatus,
    create_worker,
    free_port,
    load_activities,
    start_saga,
    wait_saga,
)
from saga._reconcile import DriftKind, DriftReport, reconcile, render
from saga.dev._localstripe import LocalStripe
from tests.bench.chaos_soak import GOOD_CARD, World, world
from tests.conftest import eventually, unique
from tests.servers.redmine import RedmineServer

ROOT = Path(__file__).parent.parent


@dataclass
class Recon:
    world: World
    ledger: Ledger
    client: Client
    sku: str

    @property
    def settings(self) -> Any:
        return self.world.settings

    def plan(self, card: str = GOOD_CARD, wait: float | None = None) -> dict[str, Any]:
        steps: list[dict[str, Any]] = [
            {"id": "reserve", "action": "inventory.reserve",
             "args": {"sku": self.sku, "quantity": 1}},
            {"id": "ticket", "action": "tickets.create", "args": {"subject": "reconcile me"}},
            {"id": "charge", "action": "payments.charge",
             "args": {"amount": 900, "currency": "eur", "customer_email": "r@example.com",
                      "card_number": card}},
        ]  # fmt: skip
        if wait is not None:
            steps.append({"id": "wait", "action": "saga.wait", "args": {"seconds": wait}})
        return {"steps": steps}

    async def run(self, sid: str, **plan: Any) -> SagaResult:
        await start_saga(self.client, self.plan(**plan), saga_id=sid,
                         task_queue=self.settings.task_queue, settings=self.settings)  # fmt: skip
        return await wait_saga(self.client, sid)

    async def report(self, prefix: str) -> DriftReport:
        return await reconcile(self.settings, saga_prefix=prefix)

    async def rest(self, method: str, path: str, **kw: Any) -> httpx.Response:
        """Redmine (WEBrick on SQLite, shared by every test session) may answer 500 for a
        moment under load: try again, but never create twice."""
        for attempt in range(6):
            response = await self.world.redmine.request(method, path, **kw)
            if response.status_code < 500:
                return response
            await asyncio.sleep(1 + attempt)
        return response

    async def new_intent(self, sid: str, step: str) -> str:
        """A PaymentIntent made straight in localstripe, carrying a saga step's key."""
        intent = await self.world.stripe.v1.payment_intents.create_async(
            {"amount": 500, "currency": "eur",
             "metadata": metadata_for(sid, f"{sid}/{step}")}
        )  # fmt: skip
        return intent.id


@pytest.fixture(scope="module")
async def recon(
    client: Client, redmine: RedmineServer, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Recon]:
    data = tmp_path_factory.mktemp("reconcile")
    server = LocalStripe(free_port(), log_file=data / "localstripe.log")
    await server.start()
    try:
        async with world(
            temporal_address=client.service_client.config.target_host,
            stripe_base=server.url,
            redmine_url=redmine.url,
            redmine_key=redmine.api_key,
            data_dir=data,
            ledger_url=f"sqlite:///{data / 'ledger.db'}",
            inventory_url=f"sqlite:///{data / 'inventory.db'}",
        ) as w:
            ledger = Ledger(w.settings.ledger_url())
            try:
                acts = load_activities(w.settings)
                async with create_worker(client, w.settings, ledger, activities=acts):
                    yield Recon(w, ledger, client, w.product(stock=1000))
            finally:
                ledger.close()
    finally:
        server.stop()


def kinds(report: DriftReport) -> set[tuple[str, str, str]]:
    return {(d.kind.value, d.system, d.idempotency_key) for d in report.drift}


async def test_clean_sagas_report_no_drift(recon: Recon) -> None:
    prefix = unique("clean") + "-"
    done = await recon.run(f"{prefix}ok")
    declined = await recon.run(f"{prefix}declined", card="4000000000000002")
    cancelled_id = f"{prefix}cancelled"
    await start_saga(recon.client, recon.plan(wait=60), saga_id=cancelled_id,
                     task_queue=recon.settings.task_queue, settings=recon.settings)  # fmt: skip

    def charged() -> bool:
        row = recon.ledger.step(f"{cancelled_id}/charge")
        return row is not None and row.status == "succeeded"

    await eventually(charged, timeout=60)
    await recon.client.get_workflow_handle(cancelled_id).cancel()
    cancelled = await wait_saga(recon.client, cancelled_id)
    assert (done.status, declined.status, cancelled.status) == (
        SagaStatus.COMPLETED, SagaStatus.COMPENSATED, SagaStatus.CANCELLED,
    )  # fmt: skip

    report = await recon.report(prefix)
    assert report.clean, render(report)
    assert report.drift == [] and report.needs_attention == [] and report.in_flight == []
    assert report.sagas == 3
    checks = {c.system: c for c in report.systems}
    assert all(c.checked for c in checks.values()), checks
    # ok and cancelled: one intent each (localstripe declines the card before any intent)
    assert (checks["payments"].effects, checks["inventory"].effects,
            checks["tickets"].effects) == (2, 3, 3)  # fmt: skip
    text = render(report)
    assert "no drift" in text and recon.settings.stripe_api_key not in text
    assert recon.settings.redmine_api_key not in text + report.model_dump_json()


async def test_effects_with_no_ledger_record(recon: Recon) -> None:
    prefix = unique("orphan") + "-"
    ghost = f"{prefix}ghost"  # a saga the ledger never heard of
    pi = await recon.new_intent(ghost, "charge")
    await asyncio.to_thread(
        reserve, recon.world.inventory, f"{ghost}/reserve", ghost,
        ReserveInput(sku=recon.sku, quantity=1),
    )  # fmt: skip
    for _ in range(6):
        issue = await recon.world.redmine.post(
            "/issues.json",
            json={"issue": {"project_id": recon.settings.redmine_project, "subject": "ghost",
                            "description": f"left behind\n\n{marker(f'{ghost}/ticket')}"}},
        )  # fmt: skip
        made = await recon.world.tickets(ghost)
        if issue.status_code == 201 or made:
            break
        await asyncio.sleep(2)
    [[ghost_issue]] = made.values()
    # and a real saga whose charge now has a second intent with its key
    real = f"{prefix}real"
    assert (await recon.run(real)).status == SagaStatus.COMPLETED
    twin = await recon.new_intent(real, "charge")

    report = await recon.report(prefix)
    assert kinds(report) == {
        ("unrecorded_effect", "payments", f"{ghost}/charge"),
        ("unrecorded_effect", "inventory", f"{ghost}/reserve"),
        ("unrecorded_effect", "tickets", f"{ghost}/ticket"),
        ("duplicate_effect", "payments", f"{real}/charge"),
    }, render(report)
    by_kind = {(d.kind, d.system): d for d in report.drift}
    assert by_kind[DriftKind.UNRECORDED_EFFECT, "payments"].external_id == pi
    assert twin in (by_kind[DriftKind.DUPLICATE_EFFECT, "payments"].external_id or "")
    assert by_kind[DriftKind.UNRECORDED_EFFECT, "tickets"].external_id == str(ghost_issue["id"])
    assert not report.clean


async def test_ledger_records_with_no_effect(recon: Recon) -> None:
    prefix = unique("missing") + "-"
    sid = f"{prefix}gone"
    done = await recon.run(sid)
    assert done.status == SagaStatus.COMPLETED
    ext = {s.id: s.external_id for s in done.steps}
    # a person deletes the ticket, a script deletes the reservation row ...
    deleted = await recon.rest("DELETE", f"/issues/{ext['ticket']}.json")
    assert deleted.status_code in (200, 204, 404), deleted.text
    with recon.world.inventory.begin() as conn:
        conn.execute(delete(Reservation).where(Reservation.id == ext["reserve"]))
    # ... and the ledger names an intent Stripe never had
    step = recon.ledger.step(f"{sid}/charge")
    assert step is not None
    recon.ledger.finish_step(f"{sid}/charge", step.result, "pi_neverexisted")

    report = await recon.report(prefix)
    assert kinds(report) == {
        ("missing_effect", "tickets", f"{sid}/ticket"),
        ("missing_effect", "inventory", f"{sid}/reserve"),
        ("missing_effect", "payments", f"{sid}/charge"),
    }, render(report)
    assert {d.external_id for d in report.drift} == {
        ext["ticket"],
        ext["reserve"],
        "pi_neverexisted",
    }


async def test_undo_that_did_not_hold(recon: Recon) -> None:
    prefix = unique("standing") + "-"
    marked = f"{prefix}marked"  # the ledger says compensated; nothing was undone
    abandoned = f"{prefix}abandoned"  # the saga says cancelled; its steps were never undone
    for sid in (marked, abandoned):
        assert (await recon.run(sid)).status == SagaStatus.COMPLETED
    for step in ("reserve", "ticket", "charge"):
        recon.ledger.finish_compensation(f"{marked}/{step}", "compensated", None, None)
    recon.ledger.record_saga(marked, "compensated")
    recon.ledger.record_saga(abandoned, "cancelled")

    report = await recon.report(prefix)
    expected = {
        (kind, system, f"{sid}/{step}")
        for kind, sid in (("compensated_but_standing", marked), ("not_compensated", abandoned))
        for system, step in (("inventory", "reserve"), ("tickets", "ticket"),
                             ("payments", "charge"))
    }  # fmt: skip
    assert kinds(report) == expected, render(report)
    found = {d.system: d.found for d in report.of_kind(DriftKind.COMPENSATED_BUT_STANDING)}
    assert "reserved" in found["inventory"] and "succeeded, refunded 0/900" in found["payments"]


async def test_needs_attention_is_listed_not_drift(recon: Recon) -> None:
    prefix = unique("stuck") + "-"
    sid = f"{prefix}stuck"
    assert (await recon.run(sid)).status == SagaStatus.COMPLETED
    recon.ledger.finish_compensation(f"{sid}/charge", "failed", None, "Stripe is down")
    recon.ledger.record_saga(sid, "needs_attention", error="cancelled")

    report = await recon.report(prefix)
    assert report.clean, render(report)
    [stuck] = report.needs_attention
    assert stuck.saga_id == sid and [s.step_id for s in stuck.stuck_steps] == ["charge"]
    assert "needs attention" in render(report)


def _cli(recon: Recon, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "saga", "reconcile", *args],
        capture_output=True, text=True, env=recon.world.env(), cwd=ROOT, timeout=120,
    )  # fmt: skip


async def test_cli_reconcile(recon: Recon) -> None:
    prefix = unique("cli") + "-"
    clean = f"{prefix}clean"
    assert (await recon.run(clean)).status == SagaStatus.COMPLETED
    ok = await asyncio.to_thread(_cli, recon, "--json", "--prefix", clean)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert json.loads(ok.stdout)["clean"] is True

    ghost = f"{prefix}ghost-{uuid.uuid4().hex[:4]}"
    await recon.new_intent(ghost, "charge")
    drift = await asyncio.to_thread(_cli, recon, "--json", "--prefix", prefix)
    assert drift.returncode == 1, drift.stdout + drift.stderr
    body = json.loads(drift.stdout)
    assert body["clean"] is False
    assert [(d["kind"], d["idempotency_key"]) for d in body["drift"]] == [
        ("unrecorded_effect", f"{ghost}/charge")
    ]
    table = await asyncio.to_thread(_cli, recon)  # the whole module's world, as a table
    assert table.returncode == 1 and "unrecorded_effect" in table.stdout
    for secret in (recon.settings.stripe_api_key, recon.settings.redmine_api_key):
        assert secret not in drift.stdout + table.stdout + table.stderr
