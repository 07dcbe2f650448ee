"""Chaos soak: many sagas against localstripe, the SQL inventory and Redmine, with faults.

    .venv/bin/python tests/bench/chaos_soak.py [--sagas 300] [--cancels 20] [--kills 3]

Starts its own Temporal dev server, localstripe, Redmine (`rails server`, installed by
`.ci/install-redmine.sh`) with a fresh project, PostgreSQL databases for the ledger and
the inventory, and three `python -m saga worker` processes on one task queue; two of
them lose the first response of every step (``SAGA_FAULTS``). It starts the sagas (about
10% business failures: declined cards and out-of-stock items), cancels some of them
mid-flight, SIGKILLs workers under load and starts them again, waits for every saga,
then checks the world itself: `reconcile()` finds no drift, no PaymentIntent,
reservation or ticket exists twice for one key, every compensated or cancelled saga left
nothing standing, every completed saga's effects stand, the stock adds up, and every
saga waiting for an operator is listed. Prints what was injected and what was found;
exits non-zero on any problem. `tests/test_chaos.py` runs a small version of the same.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import stripe  # noqa: E402
from sqlalchemy import Engine, select  # noqa: E402
from temporalio.api.enums.v1 import EventType  # noqa: E402
from temporalio.client import Client, WorkflowExecutionStatus  # noqa: E402
from temporalio.exceptions import WorkflowAlreadyStartedError  # noqa: E402
from temporalio.service import RPCError  # noqa: E402

from activities.inventory import (  # noqa: E402
    ProductInfo,
    Reservation,
    create_schema,
    make_engine,
    seed_products,
    stock_of,
)
from activities.tickets import MARKER_PREFIX  # noqa: E402
from saga import (  # noqa: E402
    PayloadKeys,
    SagaResult,
    SagaStatus,
    Settings,
    connect,
    free_port,
    saga_state,
    start_saga,
    wait_saga,
)
from saga._reconcile import DriftReport, reconcile, render  # noqa: E402
from tests.pgdb import pg_database  # noqa: E402

GOOD_CARD, DECLINED_CARD = "4242424242424242", "4000000000000002"
FAULTS = "payments.charge=1,inventory.reserve=1,tickets.create=1"
"""Lost responses: the first attempt of every such step takes effect, then fails."""


# -- the systems ---------------------------------------------------------------------------
async def redmine_project(http: httpx.AsyncClient, identifier: str) -> str:
    """A new public Redmine project with every tracker, so reconciliation sees only ours."""
    trackers = (await http.get("/trackers.json")).json()["trackers"]
    response = await http.post(
        "/projects.json",
        json={
            "project": {
                "name": identifier,
                "identifier": identifier,
                "is_public": True,
                "tracker_ids": [t["id"] for t in trackers],
                "enabled_module_names": ["issue_tracking"],
            }
        },
    )
    response.raise_for_status()
    return identifier


@dataclass
class World:
    """The real systems one chaos run (or test module) owns, and views to count with."""

    settings: Settings
    stripe: stripe.StripeClient
    redmine: httpx.AsyncClient
    inventory: Engine

    def env(self, **extra: str) -> dict[str, str]:
        """Environment of a `python -m saga ...` process on these systems."""
        s = self.settings
        env = dict(os.environ)
        env.update(
            SAGA_TEMPORAL_ADDRESS=s.temporal_address,
            SAGA_TASK_QUEUE=s.task_queue,
            SAGA_DATA_DIR=str(s.data_dir),
            SAGA_DATABASE_URL=s.ledger_url(),
            SAGA_INVENTORY_URL=s.inventory_db_url(),
            SAGA_STRIPE_API_KEY=s.stripe_api_key,
            SAGA_STRIPE_API_BASE=s.stripe_api_base or "",
            SAGA_REDMINE_URL=s.redmine_url or "",
            SAGA_REDMINE_API_KEY=s.redmine_api_key or "",
            SAGA_REDMINE_PROJECT=s.redmine_project,
            SAGA_ACTIVITIES="activities:build_activities,compensations:build_compensations",
            SAGA_FAULTS="",
        )
        env.update(extra)
        return env

    def product(self, stock: int) -> str:
        sku = f"sku-{uuid.uuid4().hex[:10]}"
        info = ProductInfo(sku=sku, name=f"Chaos {sku}", price_cents=1250, stock=stock)
        assert seed_products(self.inventory, [info]) == 1
        return sku

    # -- counting in the systems themselves ------------------------------------------------
    async def intents(self, prefix: str) -> dict[str, list[Any]]:
        page: Any = await self.stripe.v1.payment_intents.list_async({"limit": 100})
        out: dict[str, list[Any]] = defaultdict(list)
        async for pi in page.auto_paging_iter():
            key = pi.metadata["idempotency_key"] if "idempotency_key" in pi.metadata else ""
            if key.startswith(prefix):
                out[key].append(pi)
        return out

    async def refunded(self) -> dict[str, int]:
        page: Any = await self.stripe.v1.refunds.list_async({"limit": 100})
        out: dict[str, int] = defaultdict(int)
        async for r in page.auto_paging_iter():
            if r.status != "failed":
                out[r.payment_intent] += r.amount
        return out

    def reservations(self, prefix: str) -> dict[str, list[Any]]:
        with self.inventory.connect() as conn:
            rows = conn.execute(
                select(Reservation).where(Reservation.idempotency_key.like(f"{prefix}%"))
            ).all()
        out: dict[str, list[Any]] = defaultdict(list)
        for row in rows:
            out[row.idempotency_key].append(row)
        return out

    async def tickets(self, prefix: str) -> dict[str, list[dict[str, Any]]]:
        """Issues of the project per `saga-key:` marker, open or closed."""
        closed = {
            s["id"]
            for s in (await self.redmine.get("/issue_statuses.json")).json()["issue_statuses"]
            if s.get("is_closed")
        }
        out: dict[str, list[dict[str, Any]]] = defaultdict(list)
        offset = 0
        while True:
            body = (
                await self.redmine.get(
                    "/issues.json",
                    params={
                        "project_id": self.settings.redmine_project,
                        "status_id": "*",
                        "limit": 100,
                        "offset": offset,
                        "sort": "id",
                    },
                )
            ).json()
            for issue in body["issues"]:
                issue["closed"] = issue["status"]["id"] in closed
                for line in (issue.get("description") or "").splitlines():
                    if line.strip().startswith(MARKER_PREFIX + prefix):
                        out[line.strip()[len(MARKER_PREFIX) :]].append(issue)
            offset += len(body["issues"])
            if not body["issues"] or offset >= body["total_count"]:
                return out


@contextlib.asynccontextmanager
async def world(
    *,
    temporal_address: str,
    stripe_base: str,
    redmine_url: str,
    redmine_key: str,
    data_dir: Path,
    ledger_url: str,
    inventory_url: str,
) -> AsyncIterator[World]:
    stripe_key = f"sk_test_{uuid.uuid4().hex}"
    async with httpx.AsyncClient(
        base_url=redmine_url, headers={"X-Redmine-API-Key": redmine_key}, timeout=30
    ) as rest:
        project = await redmine_project(rest, f"chaos-{uuid.uuid4().hex[:8]}")
        settings = Settings(
            temporal_address=temporal_address,
            task_queue=f"chaos-{uuid.uuid4().hex[:8]}",
            data_dir=data_dir,
            database_url=ledger_url,
            inventory_url=inventory_url,
            stripe_api_key=stripe_key,
            stripe_api_base=stripe_base,
            redmine_url=redmine_url,
            redmine_api_key=redmine_key,
            redmine_project=project,
        )
        engine = make_engine(inventory_url)
        create_schema(engine)
        counter = stripe.StripeClient(
            stripe_key, base_addresses={"api": stripe_base}, max_network_retries=0
        )
        try:
            yield World(settings, counter, rest, engine)
        finally:
            engine.dispose()


# -- workers ----------------------------------------------------------------------------
class Workers:
    """`python -m saga worker` processes on the world's task queue."""

    def __init__(self, world: World, log_dir: Path, faults: list[str]) -> None:
        self.world = world
        self.log_dir = log_dir
        self.faults = faults
        self.procs: list[subprocess.Popen[bytes] | None] = [None] * len(faults)
        self.kills = 0
        self.restarts = 0
        self.pids: list[int] = []

    def spawn(self, i: int) -> subprocess.Popen[bytes]:
        log = (self.log_dir / f"worker{i}.log").open("ab")
        proc = subprocess.Popen(
            [sys.executable, "-m", "saga", "worker"],
            env=self.world.env(SAGA_FAULTS=self.faults[i]),
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        self.procs[i] = proc
        self.pids.append(proc.pid)
        return proc

    def start(self) -> None:
        for i in range(len(self.procs)):
            self.spawn(i)

    def kill(self, i: int) -> None:
        proc = self.procs[i]
        assert proc is not None and proc.poll() is None, f"worker {i} is not running"
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=10) == -signal.SIGKILL
        self.kills += 1

    def restart(self, i: int) -> None:
        self.spawn(i)
        self.restarts += 1

    def stop(self) -> None:
        for proc in self.procs:
            if proc is not None and proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            if proc is not None:
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=10)


# -- the run ----------------------------------------------------------------------------
@dataclass
class ChaosConfig:
    sagas: int = 300
    cancels: int = 20
    kills: int = 3
    declines: float = 0.05
    out_of_stock: float = 0.05
    workers: int = 3
    faulty_workers: int = 2
    start_rate: float = 10.0
    """Sagas started per second."""
    timeout: float = 900.0
    kill_every: float = 0.0
    """When set: SIGKILL a random running worker about every this many seconds (and start it
    again a second later) until every saga has ended, on top of ``kills``."""
    seed: int = 7
    strict: bool = True
    """Every saga must end as planned. Off, a saga undone cleanly because a system stayed
    unavailable past its retry budget is counted under `undone by exhausted retries`."""


@dataclass
class Outcome:
    config: ChaosConfig
    prefix: str
    sku: str
    kinds: dict[str, str] = field(default_factory=dict)
    """saga id -> ok | declined | out_of_stock | cancel"""
    results: dict[str, SagaResult] = field(default_factory=dict)
    cancels_sent: int = 0
    cancels_too_late: int = 0
    kills: int = 0
    restarts: int = 0
    elapsed: float = 0.0
    latencies: dict[str, float] = field(default_factory=dict)
    """saga id -> seconds from the workflow's start to its close (server clock)."""
    report: DriftReport | None = None
    problems: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)


def plan_for(kind: str, sku: str, empty_sku: str, rnd: random.Random) -> dict[str, Any]:
    steps: list[dict[str, Any]] = [
        {"id": "reserve", "action": "inventory.reserve", "args": {"sku": sku, "quantity": 1}},
        {"id": "ticket", "action": "tickets.create",
         "args": {"subject": f"chaos order ({kind})", "description": "pack and ship"}},
        {"id": "charge", "action": "payments.charge",
         "args": {"amount": 1250, "currency": "eur", "customer_email": "chaos@example.com",
                  "card_number": DECLINED_CARD if kind == "declined" else GOOD_CARD}},
    ]  # fmt: skip
    if kind == "out_of_stock":
        steps.append(
            {
                "id": "extra",
                "action": "inventory.reserve",
                "args": {"sku": empty_sku, "quantity": 1},
            }
        )
    if kind == "cancel":
        steps.append(
            {"id": "cooling-off", "action": "saga.wait",
             "args": {"seconds": round(rnd.uniform(2, 6), 1)}}
        )  # fmt: skip
    return {"steps": steps}


async def _cancel_later(client: Client, sid: str, delay: float, out: Outcome) -> None:
    await asyncio.sleep(delay)
    handle = client.get_workflow_handle(sid)
    try:
        desc = await handle.describe()
        if desc.status != WorkflowExecutionStatus.RUNNING:
            out.cancels_too_late += 1
            return
        await handle.cancel()
        out.cancels_sent += 1
    except RPCError:
        out.cancels_too_late += 1


async def _patiently(call: Any, tries: int = 30) -> Any:
    """An RPC to a dev server under load: transient refusals (e.g. `Namespace default is
    not found` while its namespace cache refreshes) are retried."""
    for attempt in range(tries):
        try:
            return await call()
        except WorkflowAlreadyStartedError:
            raise
        except Exception:  # RPCError, or SagaError wrapping one (`Timeout expired`)
            if attempt == tries - 1:
                raise
            await asyncio.sleep(2.0)


async def _final(
    client: Client, sid: str, deadline: float, latencies: dict[str, float] | None = None
) -> SagaResult:
    """The saga's final state; or its live one once it waits for an operator."""
    handle = client.get_workflow_handle(sid)
    polls = 0
    while True:
        desc = await _patiently(handle.describe)
        if desc.status != WorkflowExecutionStatus.RUNNING:
            if latencies is not None and desc.close_time is not None:
                latencies[sid] = (desc.close_time - desc.start_time).total_seconds()
            return await _patiently(lambda: wait_saga(client, sid))  # type: ignore[no-any-return]
        polls += 1
        if polls % 15 == 0 or time.monotonic() > deadline:  # queries cost a workflow task
            state = await _patiently(lambda: saga_state(client, sid))
            if state.status is SagaStatus.NEEDS_ATTENTION or time.monotonic() > deadline:
                return state
        await asyncio.sleep(2.0)


async def _kill_periodically(workers: Workers, every: float, rnd: random.Random, say: Any) -> None:
    """SIGKILL a random running worker about every ``every`` seconds; start it again 1 s later."""
    while True:
        await asyncio.sleep(rnd.uniform(0.5 * every, 1.5 * every))
        alive = [i for i, p in enumerate(workers.procs) if p is not None and p.poll() is None]
        if not alive:
            continue
        victim = rnd.choice(alive)
        workers.kill(victim)
        say(f"  SIGKILL worker {victim}")
        try:
            await asyncio.sleep(1.0)
        finally:  # a killed worker comes back even when the run ends meanwhile
            workers.restart(victim)


async def timeline(client: Client, sid: str) -> list[str]:
    """The saga's history as `+seconds event (attempt, worker, failure)` lines."""
    history = await client.get_workflow_handle(sid).fetch_history()
    start = history.events[0].event_time.ToDatetime()
    lines = []
    for e in history.events:
        name = EventType.Name(e.event_type).removeprefix("EVENT_TYPE_").lower()
        extra = ""
        if e.HasField("activity_task_started_event_attributes"):
            a = e.activity_task_started_event_attributes
            extra = f" attempt {a.attempt} on {a.identity}"
            if a.last_failure.message:
                extra += f" after: {a.last_failure.message[:60]}"
        elif e.HasField("workflow_task_timed_out_event_attributes"):
            extra = f" ({e.workflow_task_timed_out_event_attributes.timeout_type})"
        lines.append(f"+{(e.event_time.ToDatetime() - start).total_seconds():6.1f}s {name}{extra}")
    return lines


def latency_figures(out: Outcome) -> dict[str, float]:
    """Median and worst saga latency (start to close), in seconds."""
    values = sorted(out.latencies.values())
    if not values:
        return {}
    return {
        "sagas timed": len(values),
        "median latency s": round(statistics.median(values), 1),
        "worst latency s": round(values[-1], 1),
    }


async def run_chaos(
    client: Client, w: World, cfg: ChaosConfig, log_dir: Path, say: Any = print
) -> Outcome:
    """Start the sagas with faults, kill workers, wait for every saga, then verify."""
    rnd = random.Random(cfg.seed)
    prefix = f"chaos{uuid.uuid4().hex[:6]}-"
    sku = w.product(stock=cfg.sagas * 2)
    out = Outcome(cfg, prefix, sku)
    empty_sku = w.product(stock=0)
    n_decl = round(cfg.sagas * cfg.declines)
    n_oos = round(cfg.sagas * cfg.out_of_stock)
    kinds = ["declined"] * n_decl + ["out_of_stock"] * n_oos + ["cancel"] * cfg.cancels
    kinds += ["ok"] * (cfg.sagas - len(kinds))
    rnd.shuffle(kinds)
    faults = [FAULTS if i < cfg.faulty_workers else "" for i in range(cfg.workers)]
    workers = Workers(w, log_dir, faults)
    workers.start()
    started = time.monotonic()
    killer = None
    if cfg.kill_every > 0:
        killer = asyncio.create_task(_kill_periodically(workers, cfg.kill_every, rnd, say))
    kill_at = {round(cfg.sagas * (k + 1) / (cfg.kills + 1)) for k in range(cfg.kills)}
    tasks: list[asyncio.Task[None]] = []
    try:
        for n, kind in enumerate(kinds):
            sid = f"{prefix}{n:04d}-{kind}"
            out.kinds[sid] = kind
            saga_plan = plan_for(kind, sku, empty_sku, rnd)
            try:
                await _patiently(lambda: start_saga(
                    client, saga_plan, saga_id=sid, task_queue=w.settings.task_queue,  # noqa: B023
                    settings=w.settings,
                ))  # fmt: skip
            except WorkflowAlreadyStartedError:
                pass  # an earlier try got through
            if kind == "cancel":
                delay = rnd.uniform(0.3, 5.0)
                tasks.append(asyncio.create_task(_cancel_later(client, sid, delay, out)))
            if n + 1 in kill_at:
                await asyncio.sleep(0.5)  # let the latest starts reach the workers
                victim = workers.kills % cfg.workers
                workers.kill(victim)
                say(f"  SIGKILL worker {victim} after {n + 1} sagas started")
                await asyncio.sleep(1.0)
                workers.restart(victim)
            await asyncio.sleep(1.0 / cfg.start_rate)
        await asyncio.gather(*tasks)
        say(f"  all {cfg.sagas} sagas started in {time.monotonic() - started:.0f}s; waiting")
        deadline = time.monotonic() + cfg.timeout
        finals = await asyncio.gather(
            *(_final(client, sid, deadline, out.latencies) for sid in out.kinds)
        )
        out.results = dict(zip(out.kinds, finals, strict=True))
        out.elapsed = time.monotonic() - started
        if cfg.kill_every > 0 and out.latencies:
            worst = max(out.latencies, key=out.latencies.__getitem__)
            say(f"  slowest saga {worst} ({out.latencies[worst]:.1f}s):")
            for line in await timeline(client, worst):
                say(f"    {line}")
    finally:
        if killer is not None:
            killer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await killer
        workers.stop()
        out.kills, out.restarts = workers.kills, workers.restarts
    await verify(w, out)
    return out


async def verify(w: World, out: Outcome) -> None:
    """Check the world itself; problems go to ``out.problems``."""
    problems = out.problems
    status = Counter(r.status.value for r in out.results.values())
    out.counts.update({f"saga {k}": v for k, v in sorted(status.items())})
    expected = {
        "ok": {"completed"},
        "declined": {"compensated"},
        "out_of_stock": {"compensated"},
        "cancel": {"cancelled", "completed"},
    }
    exhausted: Counter[str] = Counter()
    for sid, kind in out.kinds.items():
        got = out.results[sid].status.value
        if got in expected[kind] or got == "needs_attention":
            continue
        why = f"{sid}: {kind} saga ended {got} ({out.results[sid].error})"
        if not out.config.strict and got in ("compensated", "cancelled"):
            exhausted[(out.results[sid].error or "?").split(":")[0].split(" for url")[0]] += 1
            out.unexpected.append(why)
        else:
            problems.append(why)
    for reason, n in exhausted.most_common():
        out.counts[f"undone by exhausted retries: {reason[:40]}"] = n

    intents = await w.intents(out.prefix)
    refunded = await w.refunded()
    reservations = w.reservations(out.prefix)
    tickets = await w.tickets(out.prefix)
    out.counts["payment intents"] = sum(len(v) for v in intents.values())
    out.counts["reservations"] = sum(len(v) for v in reservations.values())
    out.counts["tickets"] = sum(len(v) for v in tickets.values())
    for name, found in (("PaymentIntents", intents), ("reservations", reservations),
                        ("tickets", tickets)):  # fmt: skip
        twice = {k: len(v) for k, v in found.items() if len(v) > 1}
        out.counts[f"{name} twice"] = len(twice)
        if twice:
            problems.append(f"{name} with one key more than once: {twice}")

    def standing(key: str) -> list[str]:
        left = [
            f"{pi.id} {pi.status}"
            for pi in intents.get(key, [])
            if pi.status != "canceled" and refunded.get(pi.id, 0) < pi.amount
        ]
        left += [f"reservation {r.id}" for r in reservations.get(key, []) if r.status == "reserved"]
        left += [f"issue {i['id']} open" for i in tickets.get(key, []) if not i["closed"]]
        return left  # fmt: skip

    undone_left = 0
    reserved = 0
    for sid, result in out.results.items():
        keys = [f"{sid}/{step}" for step in ("reserve", "ticket", "charge", "extra")]
        if result.status in (SagaStatus.COMPENSATED, SagaStatus.CANCELLED):
            left = [x for k in keys for x in standing(k)]
            if left:
                undone_left += 1
                problems.append(f"{sid} {result.status.value} but left standing: {left}")
        elif result.status is SagaStatus.COMPLETED:
            reserved += 1
            for key in keys[:3]:
                if len(standing(key)) != 1:
                    problems.append(f"{sid} completed but {key} stands {standing(key)}")
    out.counts["undone sagas with effects left"] = undone_left

    report = await reconcile(w.settings, saga_prefix=out.prefix)
    out.report = report
    out.counts["drift"] = len(report.drift)
    out.counts["in flight after the run"] = len(report.in_flight)
    if report.drift:
        problems.append(f"reconcile found {len(report.drift)} drift:\n{render(report)}")
    if report.in_flight:
        problems.append(f"sagas still running in the ledger: {report.in_flight[:10]}")
    attention = {sid for sid, r in out.results.items() if r.status is SagaStatus.NEEDS_ATTENTION}
    listed = {a.saga_id for a in report.needs_attention}
    out.counts["needs attention"] = len(attention)
    out.counts["needs attention listed"] = len(listed & attention)
    if attention != listed:
        problems.append(f"needs attention {sorted(attention)} but listed {sorted(listed)}")
    held = sum(1 for rs in reservations.values() for r in rs if r.status == "reserved")
    stock = stock_of(w.inventory, out.sku)
    out.counts["reservations held"] = held
    if held != reserved or stock != out.config.sagas * 2 - held:
        problems.append(f"{held} reservations held, {reserved} completed sagas, stock {stock}")


def summary(out: Outcome) -> str:
    cfg = out.config
    kinds = Counter(out.kinds.values())
    rows = [
        ("injected", "sagas", cfg.sagas),
        ("injected", "declined cards", kinds["declined"]),
        ("injected", "out-of-stock items", kinds["out_of_stock"]),
        ("injected", "cancellations planned", kinds["cancel"]),
        ("injected", "cancels sent / too late", f"{out.cancels_sent} / {out.cancels_too_late}"),
        ("injected", "workers (with lost responses)", f"{cfg.workers} ({cfg.faulty_workers})"),
        ("injected", "worker SIGKILLs / restarts", f"{out.kills} / {out.restarts}"),
    ]
    rows += [("found", k, v) for k, v in out.counts.items()]
    rows.append(("found", "problems", len(out.problems)))
    rows += [("latency", k, v) for k, v in latency_figures(out).items()]
    rows.append(("", "elapsed (s)", f"{out.elapsed:.0f}"))
    width = max(len(r[1]) for r in rows)
    lines = [f"{'':8} {'what':<{width}}  figure", "-" * (width + 20)]
    lines += [f"{a:8} {b:<{width}}  {c}" for a, b, c in rows]
    return "\n".join(lines)


# -- the script --------------------------------------------------------------------------
async def main(argv: list[str] | None = None) -> int:
    import tempfile

    from saga import DevServer
    from saga.dev._localstripe import LocalStripe
    from tests.servers.redmine import RedmineProcess

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sagas", type=int, default=300)
    p.add_argument("--cancels", type=int, default=20)
    p.add_argument("--kills", type=int, default=3)
    p.add_argument(
        "--rate",
        type=float,
        default=1.5,
        help="sagas started per second (Redmine on SQLite saturates near 4)",
    )
    p.add_argument(
        "--lenient",
        action="store_true",
        help="count sagas undone by exhausted retries instead of failing on them",
    )
    p.add_argument("--workers", type=int, default=3)
    p.add_argument(
        "--faulty-workers", type=int, default=2, help="workers that lose first responses"
    )
    p.add_argument(
        "--kill-every",
        type=float,
        default=0.0,
        metavar="S",
        help="also SIGKILL a random worker about every S seconds until all sagas end",
    )
    p.add_argument("--seed", type=int, default=7)
    args = p.parse_args(argv)
    cfg = ChaosConfig(sagas=args.sagas, cancels=args.cancels, kills=args.kills,
                      start_rate=args.rate, seed=args.seed, strict=not args.lenient,
                      workers=args.workers, faulty_workers=min(args.faulty_workers, args.workers),
                      kill_every=args.kill_every)  # fmt: skip
    run_dir = Path(tempfile.mkdtemp(prefix="saga-chaos-"))
    # One payload key for this process and the worker processes it starts.
    os.environ.setdefault("SAGA_PAYLOAD_KEYS", PayloadKeys.new_entry("chaos"))
    print(f"chaos soak: {cfg.sagas} sagas; logs in {run_dir}")
    redmine = RedmineProcess()  # Ruby boots while the rest starts
    temporal = DevServer(free_port(), run_dir / "temporal.db")
    local = LocalStripe(free_port(), log_file=run_dir / "localstripe.log")
    try:
        await temporal.start()
        await local.start()
        server = await asyncio.to_thread(redmine.wait_until_up)
        client = await connect(Settings(temporal_address=temporal.address))
        with pg_database("saga_chaos_ledger") as ledger_url, \
                pg_database("saga_chaos_inventory") as inventory_url:  # fmt: skip
            async with world(
                temporal_address=temporal.address, stripe_base=local.url,
                redmine_url=server.url, redmine_key=server.api_key, data_dir=run_dir,
                ledger_url=ledger_url, inventory_url=inventory_url,
            ) as w:  # fmt: skip
                out = await run_chaos(client, w, cfg, run_dir)
    finally:
        redmine.stop()
        local.stop()
        temporal.stop()
    print(summary(out))
    print(json.dumps({"latency": latency_figures(out), "kills": out.kills}))
    if out.report is not None:
        print(render(out.report))
    for line in out.unexpected[:10]:
        print(f"undone by exhausted retries: {line}")
    for problem in out.problems[:30]:
        print(f"PROBLEM: {problem}")
    return 1 if out.problems else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
