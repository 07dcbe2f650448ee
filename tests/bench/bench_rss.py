"""Memory of a worker holding N sagas that wait on a durable timer.

    .venv/bin/python tests/bench/bench_rss.py [--sagas 1000] [--wait 300]
        [--ledger sqlite|postgresql] [--cache N]

One embedded Temporal dev server and, in this process, one worker (``SagaWorkflow``, the
ledger interceptor, the saga outcome record) and its client. Each saga's plan is a no-op
step, a ``saga.wait`` of ``--wait`` seconds, and another no-op step. The script warms the
worker up with a few short sagas, takes the baseline, starts N sagas, waits until every
one of them has finished its first step and sits on the timer (its ``state`` query says
so), and prints one JSON document: this process's RSS at the baseline and with N sagas
waiting (``VmRSS`` and ``VmHWM`` from /proc/self/status, ``ru_maxrss``), the increment per
saga, the worker's workflow cache size (``max_cached_workflows``) and how many sagas it
holds, the dev server's RSS, and the machine's load average.

One ledger per run: ``ru_maxrss`` is the peak of the whole process. ``--cache N`` gives
the worker a workflow cache of N (default: the worker's own default); with a cache
smaller than the number of sagas, the waiting sagas beyond it are evicted and replayed
when their timer fires or a query comes.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import resource
import sys
import tempfile
import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import MetaData, Table, func, select
from temporalio import workflow
from temporalio.client import WorkflowQueryFailedError
from temporalio.service import RPCError

with workflow.unsafe.imports_passed_through():
    from saga import (
        Ledger,
        PayloadKeys,
        SagaResult,
        SagaStatus,
        Settings,
        StepStatus,
        connect,
        create_worker,
        start_saga,
        wait_saga,
    )

CONCURRENCY = 64
"""Start requests and queries in flight at once."""


def _status_kib(pid: int | str = "self") -> dict[str, int]:
    """VmRSS and VmHWM (peak RSS) of a process, in KiB, from /proc/<pid>/status."""
    out: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            out[name] = int(value.split()[0])
    return out


def _children_rss_kib() -> dict[str, int]:
    """RSS of this process's children (the dev server), by command name."""
    me = str(os.getpid())
    out: dict[str, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            # "pid (comm) state ppid ...": comm may hold spaces, so split after its ')'.
            comm = stat[stat.index("(") + 1 : stat.rindex(")")]
            ppid = stat[stat.rindex(")") + 2 :].split()[1]
            if ppid == me:
                out[f"{comm}:{entry.name}"] = _status_kib(entry.name).get("VmRSS", 0)
        except (OSError, ValueError):
            continue  # the process went away meanwhile
    return out


def memory() -> dict[str, Any]:
    """This process's memory now (after a full collection), in MiB."""
    gc.collect()
    status = _status_kib()
    return {
        "rss_mib": round(status["VmRSS"] / 1024, 1),
        "peak_rss_mib": round(status["VmHWM"] / 1024, 1),
        # Linux reports ru_maxrss in KiB.
        "ru_maxrss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "load": [round(x, 2) for x in os.getloadavg()],
    }


def plan(wait_seconds: float, n: int) -> dict[str, Any]:
    steps: list[dict[str, Any]] = [
        {"id": "s0", "action": "bench.noop", "args": {"n": n}},
    ]
    if wait_seconds > 0:
        steps.append({"id": "w", "action": "saga.wait", "args": {"seconds": wait_seconds}})
    steps.append({"id": "s2", "action": "bench.noop", "args": {"n": n + 1}})
    return {"steps": steps}


def waiting_on_timer(state: SagaResult) -> bool:
    """The first step is done and the wait step is the one running."""
    steps = {s.id: s for s in state.steps}
    return (
        state.status is SagaStatus.RUNNING
        and "s0" in steps
        and steps["s0"].status is StepStatus.SUCCEEDED
        and "w" in steps
        and steps["w"].status is StepStatus.RUNNING
    )


async def bounded(count: int, one: Any) -> list[Any]:
    limit = asyncio.Semaphore(CONCURRENCY)

    async def run(i: int) -> Any:
        async with limit:
            return await one(i)

    return list(await asyncio.gather(*(run(i) for i in range(count))))


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    # Imported here: run as a script, this module finds `tests` only once __main__ set
    # sys.path (bench_saga also declares the bench.noop action the plans use).
    from tests.bench.bench_saga import bench_noop, bench_undo, ledger_database, start_dev_server

    report: dict[str, Any] = {
        "sagas": args.sagas,
        "wait_s": args.wait,
        "ledger": args.ledger,
        "cpus": os.cpu_count(),
        "at_start": memory(),
    }
    async with await start_dev_server() as env:
        target = env.client.service_client.config.target_host
        client = await connect(Settings(temporal_address=target))
        with tempfile.TemporaryDirectory(prefix="saga-rss-") as tmp:
            async with ledger_database(args.ledger, Path(tmp)) as url:
                settings = Settings(
                    task_queue=f"bench-rss-{uuid.uuid4().hex[:8]}",
                    database_url=url,
                    data_dir=Path(tmp),
                )
                ledger = Ledger(url)
                options: dict[str, Any] = {}
                if args.cache is not None:
                    options["max_cached_workflows"] = args.cache
                worker = create_worker(
                    client, settings, ledger, activities=[bench_noop, bench_undo], **options
                )
                report["max_cached_workflows"] = worker.config().get("max_cached_workflows")
                prefix = uuid.uuid4().hex[:8]
                try:
                    async with worker:
                        report.update(await _run(client, worker, ledger, settings, prefix, args))
                finally:
                    ledger.close()
    return report


async def _run(
    client: Any,
    worker: Any,
    ledger: Ledger,
    settings: Settings,
    prefix: str,
    args: argparse.Namespace,
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    # Warm up: sandbox imports, connections, the ledger's statements. Closed sagas leave
    # the workflow cache, so the baseline holds no saga.
    for i in range(5):
        sid = f"rss-warm-{prefix}-{i}"
        await start_saga(client, plan(0, i), saga_id=sid, task_queue=settings.task_queue)
        result = await wait_saga(client, sid)
        assert result.status is SagaStatus.COMPLETED, (sid, result.status, result.error)
    await asyncio.sleep(1)
    out["baseline"] = memory()
    out["baseline"]["cached_workflows"] = _cached(worker)

    ids = [f"rss-{prefix}-{i}" for i in range(args.sagas)]
    t0 = time.perf_counter()

    async def start(i: int) -> None:
        await start_saga(
            client, plan(args.wait, 10 * i), saga_id=ids[i], task_queue=settings.task_queue
        )

    await bounded(args.sagas, start)
    out["start_s"] = round(time.perf_counter() - t0, 1)

    deadline = time.monotonic() + args.deadline
    # First the ledger (no load on the worker): every first step recorded as done...
    while _first_steps_done(ledger, prefix) < args.sagas:
        if time.monotonic() > deadline:
            raise SystemExit(f"first steps not all done after {args.deadline:.0f} s")
        await asyncio.sleep(1)
    out["first_steps_done_s"] = round(time.perf_counter() - t0, 1)
    # ... then each saga's own word that it sits on the timer.
    pending = list(range(args.sagas))
    while pending:
        if time.monotonic() > deadline:
            raise SystemExit(f"{len(pending)} of {args.sagas} sagas not waiting after deadline")

        async def ready(i: int, pending: list[int] = pending) -> bool:
            try:
                state = await client.get_workflow_handle(ids[pending[i]]).query(
                    "state", result_type=SagaResult, rpc_timeout=timedelta(seconds=30)
                )
            except (RPCError, WorkflowQueryFailedError):
                return False  # a busy worker or server: ask again
            return waiting_on_timer(state)

        flags = await bounded(len(pending), ready)
        pending = [p for p, ok in zip(pending, flags, strict=True) if not ok]
        if pending:
            await asyncio.sleep(1)
    out["all_waiting_s"] = round(time.perf_counter() - t0, 1)
    # Let the last workflow tasks and ledger writes settle before reading the RSS.
    await asyncio.sleep(2)
    waiting = memory()
    waiting["cached_workflows"] = _cached(worker)
    waiting["server_rss_mib"] = {
        name: round(kib / 1024, 1) for name, kib in _children_rss_kib().items()
    }
    out["waiting"] = waiting
    out["per_saga_kib"] = round(
        (waiting["rss_mib"] - out["baseline"]["rss_mib"]) * 1024 / args.sagas, 1
    )
    return out


def _first_steps_done(ledger: Ledger, prefix: str) -> int:
    steps = Table("saga_step", MetaData(), autoload_with=ledger.engine)
    query = (
        select(func.count())
        .select_from(steps)
        .where(
            steps.c.step_id == "s0",
            steps.c.status == "succeeded",
            steps.c.saga_id.like(f"rss-{prefix}-%"),
        )
    )
    with ledger.engine.connect() as conn:
        return int(conn.execute(query).scalar_one())


def _cached(worker: Any) -> int | None:
    """Workflows the worker's cache holds now (SDK internals; None when they moved)."""
    workflow_worker = getattr(worker, "_workflow_worker", None)
    running = getattr(workflow_worker, "_running_workflows", None)
    return None if running is None else len(running)


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("SAGA_PAYLOAD_KEYS", PayloadKeys.new_entry("bench"))
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--sagas", type=int, default=1000, help="sagas waiting at once")
    p.add_argument("--wait", type=float, default=300.0, help="seconds of the saga.wait step")
    p.add_argument("--ledger", default="sqlite", choices=["sqlite", "postgresql"])
    p.add_argument("--cache", type=int, help="the worker's max_cached_workflows")
    p.add_argument("--deadline", type=float, default=600.0, help="seconds to reach the timer")
    args = p.parse_args(argv)
    from tests.bench.bench_saga import quiet_logging

    quiet_logging()
    report = asyncio.run(measure(args))
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    # Run as the module `tests.bench.bench_rss`, so the workflow sandbox can import it.
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from tests.bench import bench_rss

    sys.exit(bench_rss.main())
