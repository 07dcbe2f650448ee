"""What the ledger costs per step: forward, failed and compensated, on each ledger.

    .venv/bin/python tests/bench/bench_ledger.py [--steps 1000] [--ledger sqlite,postgresql]

Drives the ledger calls the step interceptor makes, from the event loop through
``Ledger.call`` as the worker does, with no Temporal in the way, ``--steps`` times each:

- forward: ``begin_step`` then ``finish_step`` (a step that succeeds);
- failed: ``begin_step`` then ``fail_step`` (the step that fails and starts the unwinding);
- compensated: ``begin_compensation`` then ``finish_compensation`` of a succeeded step;
- outcome: ``record_saga`` with a 5-step plan (once per saga).

For each: transactions and SQL statements per step (counted with SQLAlchemy's events; on
PostgreSQL each transaction also costs a BEGIN and a COMMIT round trip), wall and CPU
(this process, so the ledger's threads are in it) per step, in microseconds, and the
machine's load average. Prints one JSON document.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from sqlalchemy import event

from saga import Ledger, PayloadKeys, Settings, payload_keys

PLAN = {
    "steps": [
        {"id": f"s{n}", "action": "bench.noop", "args": {"n": n, "fail": False}} for n in range(5)
    ]
}


class Counter:
    """Statements and transactions the ledger's engine runs."""

    def __init__(self, ledger: Ledger) -> None:
        self.statements = 0
        self.transactions = 0
        event.listen(ledger.engine, "before_cursor_execute", self._statement)
        event.listen(ledger.engine, "begin", self._begin)

    def _statement(self, *_: Any) -> None:
        self.statements += 1

    def _begin(self, *_: Any) -> None:
        self.transactions += 1


async def timed(
    counter: Counter, count: int, one: Callable[[int], Awaitable[None]]
) -> dict[str, Any]:
    """``one(i)`` for each i, one after the other (the per-call cost, not throughput)."""
    statements, transactions = counter.statements, counter.transactions
    wall, cpu = time.perf_counter(), time.process_time()
    for i in range(count):
        await one(i)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return {
        "transactions": round((counter.transactions - transactions) / count, 2),
        "statements": round((counter.statements - statements) / count, 2),
        "wall_us": round(wall / count * 1e6),
        "cpu_us": round(cpu / count * 1e6),
    }


async def measure(url: str, count: int) -> dict[str, Any]:
    ledger = Ledger(url, keys=payload_keys(Settings()))
    counter = Counter(ledger)
    run = uuid.uuid4().hex[:8]
    sagas = [f"bench-{run}-{i}" for i in range(count + 1)]  # the last one warms up
    result = {"external_id": "noop-1"}

    async def forward(i: int) -> None:
        key = f"{sagas[i]}/s0"
        await ledger.call(ledger.begin_step, key, sagas[i], "s0", "bench.noop", 1)
        await ledger.call(ledger.finish_step, key, result, "noop-1")

    async def failed(i: int) -> None:
        key = f"{sagas[i]}/s1"
        await ledger.call(ledger.begin_step, key, sagas[i], "s1", "bench.noop", 1)
        await ledger.call(ledger.fail_step, key, "Bench: injected failure", True)

    async def compensated(i: int) -> None:
        key = f"{sagas[i]}/s0"
        await ledger.call(ledger.begin_compensation, key, 1)
        await ledger.call(ledger.finish_compensation, key, "compensated", {"undone": True}, None)

    async def outcome(i: int) -> None:
        # As the worker's record_saga_outcome calls it.
        record = functools.partial(
            ledger.record_saga, sagas[i], "compensated", error="Bench: injected", plan=PLAN
        )
        await ledger.call(record)

    try:
        # Warm up: connections, compiled statements.
        await forward(count)
        await compensated(count)
        report = {"load_before": [round(x, 2) for x in os.getloadavg()]}
        for name, one in [
            ("forward", forward),
            ("failed", failed),
            ("compensated", compensated),
            ("outcome", outcome),
        ]:
            report[name] = await timed(counter, count, one)
        report["load_after"] = [round(x, 2) for x in os.getloadavg()]
        return report
    finally:
        ledger.close()


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    from tests.bench.bench_saga import ledger_database

    report: dict[str, Any] = {"steps": args.steps, "cpus": os.cpu_count()}
    with tempfile.TemporaryDirectory(prefix="saga-ledger-bench-") as tmp:
        for kind in args.ledger.split(","):
            async with ledger_database(kind, Path(tmp)) as url:
                report[kind] = await measure(url, args.steps)
    return report


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("SAGA_PAYLOAD_KEYS", PayloadKeys.new_entry("bench"))
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--steps", type=int, default=1000, help="steps of each kind")
    p.add_argument("--ledger", default="sqlite,postgresql", help="ledgers to measure")
    args = p.parse_args(argv)
    print(json.dumps(asyncio.run(bench(args)), indent=2))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    sys.exit(main())
