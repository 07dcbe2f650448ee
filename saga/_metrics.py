"""The engine's own Prometheus metrics, on a registry of their own.

Counted where things happen: sagas by final status, model calls and tokens where a
saga's outcome is recorded (once per saga: the ledger says whether this record is the
one that closed it, so a retried record activity counts nothing twice); step and
compensation latency and compensation attempts by action in the step interceptor.
Sagas waiting for a person now (needs attention, awaiting approval) are counted by
Temporal's visibility, since a worker only sees the sagas it runs: in the background on
a worker (a scrape reads the last counts and never waits on Temporal), at each scrape
in the web app.

Each :class:`SagaMetrics` has its own ``CollectorRegistry`` (not prometheus_client's
global one), so several workers in one process, and tests, do not clash.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Iterable, Iterator

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    start_http_server,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from temporalio.client import Client
from temporalio.plugin import SimplePlugin
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig

from saga._models import SagaOutcome, SagaStatus
from saga._settings import Settings

log = logging.getLogger("saga.metrics")
_runtimes: dict[str, Runtime] = {}

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
FINAL_STATUSES = tuple(s.value for s in SagaStatus if s.final)
WAITING = {
    "needs_attention": (
        "saga_needs_attention",
        "Sagas in needs_attention now: a compensation is stuck or a step is parked as "
        "uncertain, and a person must decide.",
    ),
    "awaiting_approval": (
        "saga_awaiting_approval",
        "Sagas whose plan waits for a person's approval now.",
    ),
}


class SagaMetrics:
    """The counters and histograms of one worker (or one test)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.sagas = Counter(
            "saga_sagas",
            "Sagas that reached a final status, by that status (once per saga).",
            ["status"],
            registry=r,
        )
        for status in FINAL_STATUSES:  # present at 0, so rates start from the first one
            self.sagas.labels(status)
        self.steps = Histogram(
            "saga_step_duration_seconds",
            "How long a forward step's action ran, per attempt, by action and outcome.",
            ["action", "outcome"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.compensations = Histogram(
            "saga_compensation_duration_seconds",
            "How long a compensation ran, per attempt, by the action it undoes and outcome.",
            ["action", "outcome"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.compensation_attempts = Counter(
            "saga_compensation_attempts",
            "Attempts at a compensation, by the action it undoes.",
            ["action"],
            registry=r,
        )
        self.model_calls = Counter(
            "saga_model_calls", "Model calls of the sagas that closed here.", registry=r
        )
        self.model_tokens = Counter(
            "saga_model_tokens", "Tokens those model calls used.", registry=r
        )

    def saga_closed(self, outcome: SagaOutcome) -> None:
        """Count a saga whose final status the ledger has just recorded, for the first time."""
        self.sagas.labels(outcome.status.value).inc()
        self.model_calls.inc(outcome.model_calls)
        self.model_tokens.inc(outcome.tokens)

    @contextlib.contextmanager
    def timing(self, action: str, compensating: bool) -> Iterator[None]:
        """Time one attempt of a step (or of its compensation); failed if it raises."""
        if compensating:
            self.compensation_attempts.labels(action).inc()
        histogram = self.compensations if compensating else self.steps
        start = time.perf_counter()
        outcome = "failed"
        try:
            yield
            outcome = "succeeded"
        finally:
            histogram.labels(action, outcome).observe(time.perf_counter() - start)


def waiting_query(status: str, task_queue: str | None = None) -> str:
    """The visibility query of the running sagas in ``status`` (on ``task_queue``)."""
    query = f'WorkflowType="SagaWorkflow" AND ExecutionStatus="Running" AND SagaStatus="{status}"'
    return query if task_queue is None else f'{query} AND TaskQueue="{task_queue}"'


class WaitingSagas:
    """A collector of the sagas waiting for a person now, from visibility counts.

    ``collect`` (called in the scrape's thread) only reads the counts :meth:`refresh`
    last took; a gauge is left out until its first count.
    """

    def __init__(self, client: Client, task_queue: str | None = None) -> None:
        self._client = client
        self._task_queue = task_queue
        self._counts: dict[str, int] = {}

    async def refresh(self) -> None:
        counts = {}
        for status in WAITING:
            answer = await self._client.count_workflows(waiting_query(status, self._task_queue))
            counts[status] = answer.count
        self._counts = counts  # one assignment: a scrape sees the old counts or the new

    async def keep_fresh(self, every: float) -> None:
        """Refresh every ``every`` seconds until cancelled; a failed count keeps the last."""
        while True:
            try:
                await self.refresh()
            except Exception as exc:
                log.warning("cannot count the waiting sagas: %s", exc)
            await asyncio.sleep(every)

    def collect(self) -> Iterable[Metric]:
        counts = self._counts
        for status, (name, doc) in WAITING.items():
            if status in counts:
                yield GaugeMetricFamily(name, doc, value=counts[status])


async def waiting_now(client: Client) -> bytes:
    """The waiting-sagas gauges of the whole namespace, counted now, in the text format
    (the web app's ``/metrics``: it runs no sagas, so it has no counters of its own)."""
    waiting = WaitingSagas(client)
    await waiting.refresh()
    registry = CollectorRegistry()
    registry.register(waiting)
    return generate_latest(registry)


def serving_plugin(
    metrics: SagaMetrics,
    client: Client,
    *,
    host: str,
    port: int,
    task_queue: str,
    refresh_every: float = 15.0,
) -> SimplePlugin:
    """A worker plugin that serves ``metrics`` on http://host:port/metrics while the
    worker runs, with the waiting sagas of its task queue counted every ``refresh_every``
    seconds. The server answers in threads of its own, never on the worker's loop."""

    @contextlib.asynccontextmanager
    async def serving() -> AsyncIterator[None]:
        waiting = WaitingSagas(client, task_queue)
        metrics.registry.register(waiting)
        server, thread = start_http_server(port, addr=host, registry=metrics.registry)
        log.info("metrics on http://%s:%s/metrics", host, server.server_port)
        refresher = asyncio.create_task(waiting.keep_fresh(refresh_every))
        try:
            yield
        finally:
            refresher.cancel()
            with contextlib.suppress(BaseException):
                await refresher
            await asyncio.to_thread(server.shutdown)
            server.server_close()
            thread.join(timeout=5)
            metrics.registry.unregister(waiting)

    return SimplePlugin("saga.metrics", run_context=serving)


def sdk_runtime(settings: Settings) -> Runtime | None:
    """A Temporal runtime whose Prometheus exporter serves the SDK's own metrics on
    ``SAGA_TEMPORAL_METRICS_PORT`` (None when unset). The exporter binds when the runtime
    is made and lives as long as the process, so there is one per address."""
    if settings.temporal_metrics_port is None:
        return None
    address = f"{settings.metrics_host}:{settings.temporal_metrics_port}"
    if address not in _runtimes:
        exporter = PrometheusConfig(
            bind_address=address,
            counters_total_suffix=True,
            unit_suffix=True,
            durations_as_seconds=True,
        )
        _runtimes[address] = Runtime(telemetry=TelemetryConfig(metrics=exporter))
    return _runtimes[address]
