"""The README's recipe works: a system added in two files (tests/recipe/activities/
shipping.py and tests/recipe/compensations/shipping.py), with nothing changed in saga/,
runs in a saga on a real Temporal dev server, is compensated when a later step fails,
and is read by `reconcile`: clean after, drift when the world is broken on purpose."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

from sqlalchemy import Engine, delete, update
from temporalio.client import Client

from saga import Ledger, SagaStatus, Settings, catalog, create_worker, start_saga, wait_saga
from saga._reconcile import DriftKind, reconcile
from saga._worker import close_activities, load_activities
from tests.recipe.activities.shipping import Status, make_engine, shipments

SYSTEMS = (
    "tests.recipe.activities.shipping:build,"
    "tests.recipe.compensations.shipping:build,"
    "tests.effects:build_activities"
)


async def test_a_system_added_by_the_recipe_runs_compensates_and_reconciles(
    client: Client, effects_engine: Engine, tmp_path: Path
) -> None:
    settings = Settings(
        task_queue=f"recipe-{uuid.uuid4().hex[:8]}",
        data_dir=tmp_path,
        database_url=f"sqlite:///{tmp_path / 'ledger.db'}",
        activities=SYSTEMS,
    )
    prefix = f"recipe-{uuid.uuid4().hex[:6]}-"
    ledger = Ledger(settings.ledger_url())
    acts = load_activities(settings)
    spec = catalog.get("shipping.book")
    assert spec is not None and spec.compensation == "cancel_shipment"
    ship = {"id": "ship", "action": "shipping.book", "args": {"parcel": "mugs"}}
    fail = {"id": "fail", "action": "effects.apply", "args": {"name": "x", "fail": "before"}}
    try:
        async with create_worker(client, settings, ledger, activities=acts):
            results = {}
            for name, steps in (("done", [ship]), ("undone", [ship, fail])):
                sid = prefix + name
                await start_saga(
                    client, {"steps": steps}, saga_id=sid, task_queue=settings.task_queue
                )
                results[name] = await wait_saga(client, sid)
    finally:
        await close_activities(acts)
        ledger.close()
    assert results["done"].status == SagaStatus.COMPLETED, results["done"]
    assert results["undone"].status == SagaStatus.COMPENSATED, results["undone"]

    engine = make_engine(settings)
    try:
        with engine.connect() as conn:
            rows = {r.idempotency_key: r.status for r in conn.execute(shipments.select())}
        assert rows == {
            f"{prefix}done/ship": Status.BOOKED,
            f"{prefix}undone/ship": Status.CANCELLED,
        }

        report = await reconcile(settings, saga_prefix=prefix, actions=["shipping.book"])
        assert report.clean, report
        [check] = report.systems
        assert (check.system, check.checked, check.steps, check.effects) == ("shipping", True, 2, 2)

        # Break the world: the undone booking comes back, the completed one disappears.
        with engine.begin() as conn:
            conn.execute(
                update(shipments)
                .where(shipments.c.idempotency_key == f"{prefix}undone/ship")
                .values(status=Status.BOOKED)
            )
            conn.execute(
                delete(shipments).where(shipments.c.idempotency_key == f"{prefix}done/ship")
            )
    finally:
        engine.dispose()
    report = await reconcile(settings, saga_prefix=prefix, actions=["shipping.book"])
    assert not report.clean
    assert {(d.kind, d.saga_id, d.system) for d in report.drift} == {
        (DriftKind.COMPENSATED_BUT_STANDING, f"{prefix}undone", "shipping"),
        (DriftKind.MISSING_EFFECT, f"{prefix}done", "shipping"),
    }

    # `saga reconcile` in a fresh process reads the added system by its configuration alone.
    env = {k: v for k, v in os.environ.items() if not k.startswith("SAGA_")}
    env.update(
        SAGA_ACTIVITIES=SYSTEMS,
        SAGA_DATA_DIR=str(tmp_path),
        SAGA_DATABASE_URL=settings.ledger_url(),
        SAGA_PAYLOAD_KEYS=os.environ["SAGA_PAYLOAD_KEYS"],
    )
    cli = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "saga", "reconcile", "--prefix", prefix, "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert cli.returncode == 1, cli.stderr
    printed = json.loads(cli.stdout)
    assert [c["system"] for c in printed["systems"]] == ["shipping"]
    assert sorted(d["kind"] for d in printed["drift"]) == [
        "compensated_but_standing",
        "missing_effect",
    ]
