"""A small chaos run in the suite: 30 sagas on localstripe, the SQL inventory and Redmine,
two `python -m saga worker` processes (one losing the first response of every step),
declined cards, an out-of-stock item, 3 cancellations, a worker SIGKILL under load and
then a random worker SIGKILLed about every 5 s until every saga has ended.

The same harness as the soak (`tests/bench/chaos_soak.py`) checks the world itself: no
drift, nothing twice, nothing left standing by an undone saga, every saga as planned.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from temporalio.client import Client

from saga._reconcile import render
from saga.dev._localstripe import LocalStripe
from tests.bench.chaos_soak import ChaosConfig, pg_database, run_chaos, summary, world
from tests.servers.redmine import RedmineServer


@pytest.mark.timeout(600)
async def test_chaos_small(
    client: Client, localstripe: LocalStripe, redmine: RedmineServer, tmp_path: Path
) -> None:
    cfg = ChaosConfig(
        sagas=30, cancels=3, kills=1, declines=0.1, out_of_stock=0.05,
        workers=2, faulty_workers=1, start_rate=5, timeout=400, seed=11, kill_every=5,
    )  # fmt: skip
    with pg_database("saga_chaos_ledger") as ledger_url, \
            pg_database("saga_chaos_inventory") as inventory_url:  # fmt: skip
        async with world(
            temporal_address=client.service_client.config.target_host,
            stripe_base=localstripe.url, redmine_url=redmine.url, redmine_key=redmine.api_key,
            data_dir=tmp_path, ledger_url=ledger_url, inventory_url=inventory_url,
        ) as w:  # fmt: skip
            out = await run_chaos(client, w, cfg, tmp_path, say=lambda _: None)
    print(summary(out))
    assert out.problems == [], "\n".join(out.problems[:10])
    assert out.kills >= 2 and out.restarts == out.kills, (out.kills, out.restarts)
    assert out.report is not None and out.report.clean, render(out.report)
    assert out.counts["PaymentIntents twice"] == 0
    assert out.counts["reservations twice"] == 0 and out.counts["tickets twice"] == 0
    assert out.counts["undone sagas with effects left"] == 0
    statuses = {k: v for k, v in out.counts.items() if k.startswith("saga ")}
    assert statuses.get("saga compensated", 0) >= 4, statuses  # 3 declines + 1 out of stock
    assert sum(statuses.values()) == 30
