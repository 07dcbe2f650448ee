"""Overhead of the saga machinery: N concurrent sagas against N bare Temporal workflows.

    .venv/bin/python tests/bench/bench_saga.py [--sagas 200] [--steps 5] [--rounds 4]
        [--ledger sqlite,postgresql] [--profile DIR]

One embedded Temporal dev server for the whole run. Each case runs N bare workflows (a
plain ``@workflow.defn`` calling ``--steps`` plain no-op activities; in the compensation
case the last one fails and the others are undone by hand, in reverse) and N sagas of the
same shape through the full path (``SagaWorkflow``, plan validation, the ledger
interceptor, the saga outcome record), each on its own worker with the same options.
Cases: the SQLite ledger and the PostgreSQL ledger (a temporary database on
127.0.0.1:5432, dropped afterwards), each completing and compensating (failure at the last
step). Prints one JSON document: wall times, their ratio, sagas per second, p50/p99 saga
latency (start request to result), and the machine's load average.

``--profile DIR`` writes a cProfile of the event-loop thread of each saga run (the ledger's
own threads are not in it; use py-spy for those).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import logging
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager, contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from temporalio import activity, workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError
from temporalio.runtime import (
    LogForwardingConfig,
    LoggingConfig,
    Runtime,
    TelemetryConfig,
    TelemetryFilter,
)
from temporalio.worker import UnsandboxedWorkflowRunner, Worker, WorkflowRunner
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

with workflow.unsafe.imports_passed_through():
    from saga import (
        Ledger,
        PayloadKeys,
        SagaStatus,
        Settings,
        compensated_by,
        create_worker,
        start_saga,
        temporal_binary,
        wait_saga,
    )

ONE_TRY = RetryPolicy(maximum_attempts=1)
# Generous: on a loaded machine a no-op can wait a long time for the worker's event loop,
# and a compensation that times out leaves its saga waiting for an operator.
TIMEOUT = timedelta(minutes=10)


# -- the work: the same no-op activities, declared as a saga action and as plain ones ----
class NoopInput(BaseModel):
    n: int
    fail: bool = False


class NoopResult(BaseModel):
    external_id: str


class UndoResult(BaseModel):
    undone: bool


@activity.defn
async def bench_undo(inp: NoopInput, result: NoopResult | None) -> UndoResult:
    return UndoResult(undone=result is not None)


@compensated_by(
    bench_undo,
    action="bench.noop",
    retry_policy=ONE_TRY,
    compensation_retry_policy=ONE_TRY,
    start_to_close_timeout=TIMEOUT,
    compensation_timeout=TIMEOUT,
)
@activity.defn
async def bench_noop(inp: NoopInput) -> NoopResult:
    """A compensable no-op (fails when asked to)."""
    if inp.fail:
        raise ApplicationError("injected failure", type="Bench", non_retryable=True)
    return NoopResult(external_id=f"noop-{inp.n}")


@activity.defn
async def bare_noop(inp: NoopInput) -> NoopResult:
    if inp.fail:
        raise ApplicationError("injected failure", type="Bench", non_retryable=True)
    return NoopResult(external_id=f"noop-{inp.n}")


@activity.defn
async def bare_undo(inp: NoopInput) -> UndoResult:
    return UndoResult(undone=True)


class BareInput(BaseModel):
    steps: int
    fail_last: bool = False


@workflow.defn
class BareWorkflow:
    """The same steps with no saga machinery (undo by hand in the compensation case)."""

    @workflow.run
    async def run(self, inp: BareInput) -> int:
        done: list[NoopInput] = []
        try:
            for n in range(inp.steps):
                step = NoopInput(n=n, fail=inp.fail_last and n == inp.steps - 1)
                await workflow.execute_activity(
                    bare_noop, step, start_to_close_timeout=TIMEOUT, retry_policy=ONE_TRY
                )
                done.append(step)
        except ActivityError:
            for step in reversed(done):
                await workflow.execute_activity(
                    bare_undo, step, start_to_close_timeout=TIMEOUT, retry_policy=ONE_TRY
                )
        return len(done)


# -- measuring ---------------------------------------------------------------------------
def _runner() -> WorkflowRunner:
    # As create_worker's, plus this module (the saga workflow's module is passed through
    # too); with --no-sandbox the bare workflows run without it as well.
    if not SANDBOX:
        return UnsandboxedWorkflowRunner()
    return SandboxedWorkflowRunner(
        restrictions=SandboxRestrictions.default.with_passthrough_modules("saga", __name__)
    )


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


DEADLINE = 900.0  # seconds for one run of N workflows; --deadline
SANDBOX = True  # workflow code (sagas' and bare) in Temporal's sandbox; --no-sandbox


async def _timed(
    count: int, one: Callable[[int], Awaitable[None]]
) -> tuple[float, float, list[float]]:
    latencies: list[float] = []

    async def run(i: int) -> None:
        t0 = time.perf_counter()
        await one(i)
        latencies.append(time.perf_counter() - t0)

    start, cpu = time.perf_counter(), time.process_time()
    try:
        await asyncio.wait_for(asyncio.gather(*(run(i) for i in range(count))), DEADLINE)
    except TimeoutError:
        raise SystemExit(
            f"{count - len(latencies)} of {count} workflows not done after {DEADLINE:.0f} s"
        ) from None
    return time.perf_counter() - start, time.process_time() - cpu, latencies


def _figures(wall: float, cpu: float, latencies: list[float], count: int) -> dict[str, float]:
    return {
        "wall_s": round(wall, 3),
        # CPU of this process (worker, client, ledger threads): steadier than wall time
        # on a shared machine; the Temporal server's own CPU is not in it.
        "worker_cpu_s": round(cpu, 3),
        "per_second": round(count / wall, 1),
        "p50_ms": round(statistics.median(latencies) * 1000, 1),
        "p99_ms": round(_percentile(latencies, 0.99) * 1000, 1),
    }


@contextmanager
def _profiled(path: Path | None) -> Iterator[None]:
    if path is None:
        yield
        return
    prof = cProfile.Profile()
    prof.enable()
    try:
        yield
    finally:
        prof.disable()
        prof.dump_stats(path)


async def run_bare(client: Any, count: int, steps: int, fail_last: bool) -> dict[str, float]:
    queue = f"bench-bare-{uuid.uuid4().hex[:8]}"
    worker = Worker(
        client,
        task_queue=queue,
        workflows=[BareWorkflow],
        activities=[bare_noop, bare_undo],
        activity_executor=ThreadPoolExecutor(8),
        workflow_runner=_runner(),
    )
    prefix = uuid.uuid4().hex[:8]

    async def one(i: int) -> None:
        done = await client.execute_workflow(
            BareWorkflow.run,
            BareInput(steps=steps, fail_last=fail_last),
            id=f"bare-{prefix}-{i}",
            task_queue=queue,
        )
        assert done == (steps - 1 if fail_last else steps), done

    async with worker:
        wall, cpu, latencies = await _timed(count, one)
    return _figures(wall, cpu, latencies, count)


async def run_sagas(
    client: Any,
    ledger_url: str,
    data_dir: Path,
    count: int,
    steps: int,
    fail_last: bool,
    profile: Path | None,
) -> dict[str, float]:
    settings = Settings(
        task_queue=f"bench-saga-{uuid.uuid4().hex[:8]}",
        database_url=ledger_url,
        data_dir=data_dir,
        workflow_sandbox=SANDBOX,
    )
    ledger = Ledger(ledger_url)
    worker = create_worker(client, settings, ledger, activities=[bench_noop, bench_undo])
    prefix = uuid.uuid4().hex[:8]
    plan = {
        "steps": [
            {
                "id": f"s{n}",
                "action": "bench.noop",
                "args": {"n": n, "fail": fail_last and n == steps - 1},
            }
            for n in range(steps)
        ]
    }
    want = SagaStatus.COMPENSATED if fail_last else SagaStatus.COMPLETED

    async def one(i: int) -> None:
        sid = f"bench-{prefix}-{i}"
        await start_saga(client, plan, saga_id=sid, task_queue=settings.task_queue)
        result = await wait_saga(client, sid)
        assert result.status is want, (sid, result.status, result.error)

    try:
        async with worker:
            with _profiled(profile):
                wall, cpu, latencies = await _timed(count, one)
    finally:
        ledger.close()
    return _figures(wall, cpu, latencies, count)


@asynccontextmanager
async def ledger_database(kind: str, data_dir: Path) -> AsyncIterator[str]:
    if kind == "sqlite":
        yield f"sqlite:///{data_dir / 'ledger.db'}"
        return
    from tests.pgdb import pg_database

    with pg_database("saga_bench") as url:
        yield url


async def start_dev_server() -> Any:
    """One embedded Temporal dev server: a ``WorkflowEnvironment`` for ``async with``."""
    from temporalio.testing import WorkflowEnvironment

    # The dev server prints a banner on its stdout: keep ours for the JSON report.
    sys.stdout.flush()
    saved, devnull = os.dup(1), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    try:
        return await WorkflowEnvironment.start_local(
            dev_server_existing_path=temporal_binary(), dev_server_log_level="error"
        )
    finally:
        os.dup2(saved, 1)
        os.close(saved)
        os.close(devnull)


def quiet_logging() -> None:
    """Warnings to stderr; no traceback per injected failure, no SDK core chatter."""
    # The compensation cases fail activities on purpose: no traceback per failure. The
    # SDK core's own warnings (slow workflow tasks...) go to stderr, not into the report.
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING, format="%(name)s: %(message)s")
    logging.getLogger("temporalio").setLevel(logging.ERROR)
    Runtime.set_default(
        Runtime(
            telemetry=TelemetryConfig(
                logging=LoggingConfig(
                    filter=TelemetryFilter(core_level="WARN", other_level="ERROR"),
                    forwarding=LogForwardingConfig(logger=logging.getLogger("temporal_core")),
                )
            )
        ),
        error_if_already_set=False,
    )


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    from saga import connect

    report: dict[str, Any] = {
        "sagas": args.sagas,
        "steps": args.steps,
        "rounds": args.rounds,
        "cpus": os.cpu_count(),
        "saga_workflow_sandbox": SANDBOX,
        "load_before": [round(x, 2) for x in os.getloadavg()],
        "cases": {},
    }
    async with await start_dev_server() as env:
        target = env.client.service_client.config.target_host
        client = await connect(Settings(temporal_address=target))
        with tempfile.TemporaryDirectory(prefix="saga-bench-") as tmp:
            # Warm up: sandbox imports, connections, the server's caches.
            async with ledger_database("sqlite", Path(tmp)) as url:
                await run_bare(client, 10, args.steps, False)
                await run_sagas(client, url, Path(tmp), 10, args.steps, False, None)
            for kind in args.ledger.split(","):
                for fail_last in (False, True):
                    case = f"{kind}/{'compensate' if fail_last else 'complete'}"
                    data = Path(tmp) / case.replace("/", "-")
                    data.mkdir()
                    rounds: list[dict[str, Any]] = []
                    async with ledger_database(kind, data) as url:
                        for r in range(args.rounds):
                            profile = (
                                args.profile / f"{case.replace('/', '-')}-{r}.prof"
                                if args.profile
                                else None
                            )
                            bare_first = r % 2 == 0  # alternate the order between rounds
                            if bare_first:
                                bare = await run_bare(client, args.sagas, args.steps, fail_last)
                            saga = await run_sagas(
                                client, url, data, args.sagas, args.steps, fail_last, profile
                            )
                            if not bare_first:
                                bare = await run_bare(client, args.sagas, args.steps, fail_last)
                            rounds.append(
                                {
                                    "bare": bare,
                                    "saga": saga,
                                    "ratio": round(saga["wall_s"] / bare["wall_s"], 2),
                                    "cpu_ratio": round(
                                        saga["worker_cpu_s"] / bare["worker_cpu_s"], 2
                                    ),
                                }
                            )
                    # The median, not the best round: which of the two runs goes second
                    # in a round matters on a small machine, so rounds alternate the
                    # order and every round counts.
                    middle = sorted(rounds, key=lambda x: x["ratio"])[(len(rounds) - 1) // 2]
                    report["cases"][case] = {
                        "median_round": middle,
                        "ratio": round(statistics.median(x["ratio"] for x in rounds), 2),
                        "cpu_ratio": round(statistics.median(x["cpu_ratio"] for x in rounds), 2),
                        "ratios": [x["ratio"] for x in rounds],
                        "cpu_ratios": [x["cpu_ratio"] for x in rounds],
                        "load": [round(x, 2) for x in os.getloadavg()],
                    }
                    print(case, json.dumps(report["cases"][case]), file=sys.stderr, flush=True)
    report["load_after"] = [round(x, 2) for x in os.getloadavg()]
    report["target"] = "saga wall time <= 1.3x bare on the SQLite ledger (complete)"
    sqlite_complete = report["cases"].get("sqlite/complete")
    if sqlite_complete:
        report["target_met"] = sqlite_complete["ratio"] <= 1.3
    return report


def main(argv: list[str] | None = None) -> int:
    global DEADLINE, SANDBOX
    os.environ.setdefault("SAGA_PAYLOAD_KEYS", PayloadKeys.new_entry("bench"))
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--sagas", type=int, default=200, help="concurrent sagas (and bare workflows)")
    p.add_argument("--steps", type=int, default=5, help="steps per saga")
    p.add_argument(
        "--rounds",
        type=int,
        default=4,
        help="repeat each case, alternating which runs first; the median ratio is reported",
    )
    p.add_argument("--ledger", default="sqlite,postgresql", help="ledgers to measure")
    p.add_argument("--profile", type=Path, help="write cProfile files of the saga runs here")
    p.add_argument("--deadline", type=float, default=DEADLINE, help="seconds allowed per run")
    p.add_argument(
        "--no-sandbox",
        action="store_true",
        help="run workflow code without the sandbox: the sagas as SAGA_WORKFLOW_SANDBOX=false "
        "does, and the bare workflows likewise",
    )
    args = p.parse_args(argv)
    DEADLINE = args.deadline
    SANDBOX = not args.no_sandbox
    quiet_logging()
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)
    report = asyncio.run(bench(args))
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    # Run as the module `tests.bench.bench_saga`, so the workflow sandbox can import it.
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from tests.bench import bench_saga

    sys.exit(bench_saga.main())
