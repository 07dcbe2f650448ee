"""The metrics scrape: a worker with SAGA_METRICS_PORT set, a few sagas, exact counts.

Real Temporal dev server and ledger; the worker's /metrics is scraped over HTTP and
parsed with prometheus_client's parser, as Prometheus reads it.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import Engine
from temporalio.client import Client

from saga import (
    Ledger,
    SagaStatus,
    SagaWorkflow,
    Settings,
    create_worker,
    start_saga,
    wait_saga,
)
from saga._metrics import SagaMetrics, waiting_query
from saga._models import ApprovalDecision, OperatorAction, SagaOutcome
from saga._worker import LedgerActivities
from saga.dev._devserver import free_port
from tests import effects
from tests.conftest import Stack, eventually, unique
from tests.test_cli import ROOT, cli_env
from tests.web import TOKEN, apply, start, web_app

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    """Every sample of a scrape, by name and labels."""
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


async def scrape(url: str) -> Samples:
    async with httpx.AsyncClient() as http:
        r = await http.get(url, timeout=5)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    return parse(r.text)


@pytest.fixture(scope="module")
async def metered(
    client: Client, effects_engine: Engine, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[tuple[Stack, str]]:
    """A worker of its own task queue serving its metrics; with the scrape URL."""
    data = tmp_path_factory.mktemp("metered")
    port = free_port()
    settings = Settings(
        task_queue=f"metrics-{uuid.uuid4().hex[:8]}",
        database_url=f"sqlite:///{data / 'ledger.db'}",
        data_dir=data,
        activities="tests.effects:build_activities",
        metrics_port=port,
        metrics_refresh_seconds=0.2,
    )
    ledger = Ledger(settings.ledger_url())
    worker = create_worker(client, settings, ledger)
    async with worker:
        yield (
            Stack(client, settings, ledger, effects_engine, worker),
            (f"http://127.0.0.1:{port}/metrics"),
        )
    ledger.close()
    with pytest.raises(httpx.ConnectError):  # the server stopped with the worker
        async with httpx.AsyncClient() as http:
            await http.get(f"http://127.0.0.1:{port}/metrics", timeout=2)


async def test_a_scrape_counts_sagas_steps_compensations_and_waiting(
    metered: tuple[Stack, str],
) -> None:
    stack, url = metered
    before = await scrape(url)
    assert value(before, "saga_sagas_total", status="completed") == 0
    step = "saga_step_duration_seconds_count"
    assert value(before, step, action="effects.apply", outcome="succeeded") is None

    done = await start(
        stack, apply("a"), {"id": "n", "action": "effects.notify", "args": {"name": "n"}}
    )
    undone = await start(stack, apply("a"), apply("b", fail="before"))
    stuck = await start(stack, apply("a", revert_failures=1000), apply("b", fail="before"))
    waiting = await start(stack, apply("a"), approval=True)
    assert (await wait_saga(stack.client, done)).status == SagaStatus.COMPLETED
    assert (await wait_saga(stack.client, undone)).status == SagaStatus.COMPENSATED

    async def parked() -> Samples | None:
        s = await scrape(url)
        attention = value(s, "saga_needs_attention")
        approval = value(s, "saga_awaiting_approval")
        return s if (attention, approval) == (1, 1) else None

    samples = await eventually(parked, timeout=30, interval=0.2)
    assert value(samples, "saga_sagas_total", status="completed") == 1
    assert value(samples, "saga_sagas_total", status="compensated") == 1
    assert value(samples, "saga_sagas_total", status="cancelled") == 0
    # Forward steps: a of each saga ran, and n; b failed twice (non-retryable, 1 attempt).
    assert value(samples, step, action="effects.apply", outcome="succeeded") == 3
    assert value(samples, step, action="effects.apply", outcome="failed") == 2
    assert value(samples, step, action="effects.notify", outcome="succeeded") == 1
    assert value(samples, step, action="effects.notify", outcome="failed") is None
    # Undone: b (a no-op) and a of `undone`, b of `stuck`; a of `stuck` failed its 4 tries.
    comp = "saga_compensation_duration_seconds_count"
    assert value(samples, comp, action="effects.apply", outcome="succeeded") == 3
    assert value(samples, comp, action="effects.apply", outcome="failed") == 4
    assert value(samples, "saga_compensation_attempts_total", action="effects.apply") == 7
    assert value(samples, "saga_compensation_attempts_total", action="effects.notify") is None
    assert (
        value(samples, "saga_model_calls_total"),
        value(samples, "saga_model_tokens_total"),
    ) == (0, 0)
    buckets = value(
        samples,
        "saga_step_duration_seconds_bucket",
        action="effects.apply",
        outcome="succeeded",
        le="+Inf",
    )
    assert buckets == 3

    # The web app counts the whole namespace at each scrape, behind the token.
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=web_app(stack)), base_url="http://saga.test"
    ) as web:
        assert (await web.get("/metrics")).status_code == 401
        r = await web.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
        assert r.status_code == 200
        counted = await stack.client.count_workflows(waiting_query("needs_attention"))
        assert value(parse(r.text), "saga_needs_attention") == counted.count >= 1

    # Settled by hand, the stuck saga closes compensated; the plan is rejected.
    handle = stack.client.get_workflow_handle_for(SagaWorkflow.run, stuck)
    await handle.execute_update(
        SagaWorkflow.resolve_compensation, OperatorAction(step_id="a", note="by hand")
    )
    assert (await wait_saga(stack.client, stuck)).status == SagaStatus.COMPENSATED
    approval = stack.client.get_workflow_handle_for(SagaWorkflow.run, waiting)
    await approval.execute_update(SagaWorkflow.reject, ApprovalDecision(reason="not today"))
    assert (await wait_saga(stack.client, waiting)).status == SagaStatus.REJECTED

    async def settled() -> Samples | None:
        s = await scrape(url)
        return (
            s
            if (value(s, "saga_needs_attention"), value(s, "saga_awaiting_approval")) == (0, 0)
            else None
        )

    samples = await eventually(settled, timeout=30, interval=0.2)
    assert value(samples, "saga_sagas_total", status="compensated") == 2
    assert value(samples, "saga_sagas_total", status="rejected") == 1
    assert value(samples, "saga_compensation_attempts_total", action="effects.apply") == 7
    assert effects.log_of(stack.effects, stuck).count(("revert-failed", "a")) == 4


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
async def test_a_retried_outcome_record_counts_once(
    backend: str, tmp_path: Path, pg_url: str
) -> None:
    """The record of a saga's outcome is a local activity: it may run again (a retry, a
    worker that died before its workflow task completed). The ledger tells the second
    record from the first, so the saga is counted once."""
    ledger = Ledger(f"sqlite:///{tmp_path / 'ledger.db'}" if backend == "sqlite" else pg_url)
    sid = f"once-{uuid.uuid4().hex[:8]}"
    metrics = SagaMetrics()
    record = LedgerActivities(ledger, metrics).record_saga_outcome
    outcome = SagaOutcome(saga_id=sid, status=SagaStatus.COMPLETED, model_calls=3, tokens=70)
    try:
        await record(SagaOutcome(saga_id=sid, status=SagaStatus.NEEDS_ATTENTION))
        await record(outcome)
        await record(outcome)
        assert (ledger.saga(sid) or {})["status"] == "completed"
    finally:
        ledger.close()
    samples = parse(generate(metrics))
    assert value(samples, "saga_sagas_total", status="completed") == 1
    assert value(samples, "saga_sagas_total", status="needs_attention") is None
    assert value(samples, "saga_model_calls_total") == 3
    assert value(samples, "saga_model_tokens_total") == 70


def generate(metrics: SagaMetrics) -> str:
    from prometheus_client import generate_latest

    return generate_latest(metrics.registry).decode()


async def test_saga_worker_serves_its_metrics_and_the_sdks(stack: Stack, tmp_path: Path) -> None:
    """`saga worker` with both ports set: ours, and the Temporal SDK's own exporter."""
    ours, sdk = free_port(), free_port()
    queue = unique("metrics-cli")
    env = cli_env(
        stack,
        SAGA_TASK_QUEUE=queue,
        SAGA_DATA_DIR=str(tmp_path / "data"),
        SAGA_METRICS_PORT=str(ours),
        SAGA_TEMPORAL_METRICS_PORT=str(sdk),
    )
    log = tmp_path / "worker.log"
    with log.open("w") as sink:
        worker = subprocess.Popen(
            [sys.executable, "-m", "saga", "worker"], env=env, cwd=ROOT, stdout=sink, stderr=sink
        )
    try:
        await eventually(lambda: "worker polling" in log.read_text(), timeout=90)
        sid = unique("metrics-cli")
        await start_saga(stack.client, {"steps": [apply("a")]}, saga_id=sid, task_queue=queue)
        assert (await wait_saga(stack.client, sid)).status == SagaStatus.COMPLETED
        samples = await scrape(f"http://127.0.0.1:{ours}/metrics")
        sdk_samples = await scrape(f"http://127.0.0.1:{sdk}/metrics")
    finally:
        worker.send_signal(signal.SIGINT)
        worker.wait(timeout=60)
    assert value(samples, "saga_sagas_total", status="completed") == 1
    step = "saga_step_duration_seconds_count"
    assert value(samples, step, action="effects.apply", outcome="succeeded") == 1
    completed = [
        v
        for (name, labels), v in sdk_samples.items()
        if name == "temporal_workflow_completed_total" and ("task_queue", queue) in labels
    ]
    assert completed == [1]
    assert any(
        name == "temporal_activity_execution_latency_seconds_count" for name, _ in sdk_samples
    )
