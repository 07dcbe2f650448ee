"""Several `python -m saga worker` processes on one task queue: they share the work, and
one killed with SIGKILL under load loses nothing (every saga ends, every effect once).

Who ran what is read from Temporal itself: an activity's `started` event and a pending
activity's `last_worker_identity` name the worker (`<pid>@<host>`).
"""

from __future__ import annotations

import asyncio
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

from temporalio.api.enums.v1 import EventType, TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.service import RPCError, RPCStatusCode

from saga import SagaStatus, start_saga, wait_saga
from tests import effects
from tests.conftest import Stack, eventually, unique
from tests.test_worker_crash import spawn_worker, stop


def plan(delay: float) -> dict[str, Any]:
    return {
        "steps": [
            {"id": "a", "action": "effects.apply", "args": {"name": "a", "delay": delay}},
            {"id": "b", "action": "effects.apply", "args": {"name": "b", "delay": delay}},
            {"id": "c", "action": "effects.apply", "args": {"name": "c"}},
        ]
    }


async def activity_workers(stack: Stack, saga_id: str) -> list[tuple[str, int]]:
    """(worker identity, attempt) of every activity that ran to an end in the saga."""
    history = await stack.client.get_workflow_handle(saga_id).fetch_history()
    return [
        (e.activity_task_started_event_attributes.identity,
         e.activity_task_started_event_attributes.attempt)
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED
    ]  # fmt: skip


def identity_pid(identity: str) -> int:
    return int(identity.split("@", 1)[0])


async def all_polling(stack: Stack, queue: str, procs: list[subprocess.Popen[bytes]]) -> None:
    """Wait until every worker process polls the queue for activities, so none starts late.

    A worker that is still importing when the sagas start would find the work already done
    by the others; the load-sharing claim is about workers that are up.
    """

    async def pollers() -> bool:
        try:
            desc = await stack.client.workflow_service.describe_task_queue(
                DescribeTaskQueueRequest(
                    namespace=stack.client.namespace,
                    task_queue=TaskQueue(name=queue),
                    task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY,
                )
            )
        except RPCError as exc:  # a busy dev server may cancel the call: ask again
            if exc.status not in (RPCStatusCode.CANCELLED, RPCStatusCode.UNAVAILABLE):
                raise
            return False
        seen = {identity_pid(p.identity) for p in desc.pollers}
        return {p.pid for p in procs} <= seen

    await eventually(pollers, timeout=120, interval=0.2)


def assert_each_effect_once(stack: Stack, sagas: list[str]) -> None:
    for sid in sagas:
        rows = effects.effects_of(stack.effects, sid)
        assert sorted(r["name"] for r in rows) == ["a", "b", "c"], (sid, rows)
        assert all(r["reverted"] == 0 for r in rows), rows


async def test_workers_share_the_load(stack: Stack, tmp_path: Path) -> None:
    queue = unique("many")
    workers = [spawn_worker(stack, queue, tmp_path / f"worker{i}.log") for i in range(2)]
    sagas = [unique("share") for _ in range(20)]
    try:
        await all_polling(stack, queue, workers)
        for sid in sagas:
            await start_saga(stack.client, plan(0.3), saga_id=sid, task_queue=queue)
        results = await asyncio.wait_for(
            asyncio.gather(*(wait_saga(stack.client, sid) for sid in sagas)), timeout=180
        )
    finally:
        stop(workers)
    assert {r.status for r in results} == {SagaStatus.COMPLETED}
    ran = Counter()
    for sid in sagas:
        ran.update(identity_pid(who) for who, _ in await activity_workers(stack, sid))
    assert set(ran) == {w.pid for w in workers}, ran  # both workers executed activities
    assert sum(ran.values()) == 3 * len(sagas)
    assert_each_effect_once(stack, sagas)


async def test_sigkill_one_worker_under_load_loses_nothing(stack: Stack, tmp_path: Path) -> None:
    queue = unique("many")
    workers = [spawn_worker(stack, queue, tmp_path / f"worker{i}.log") for i in range(3)]
    victim = workers[0]
    sagas = [unique("load") for _ in range(30)]
    try:
        await all_polling(stack, queue, workers)
        for sid in sagas:
            await start_saga(stack.client, plan(4), saga_id=sid, task_queue=queue)

        async def on_victim(sid: str) -> bool:
            desc = await stack.client.get_workflow_handle(sid).describe()
            return any(
                p.last_worker_identity
                and identity_pid(p.last_worker_identity) == victim.pid
                and p.attempt == 1
                for p in desc.raw_description.pending_activities
            )

        async def victim_busy() -> list[str]:
            """Sagas whose running activity is on the victim right now."""
            busy = await asyncio.gather(*(on_victim(sid) for sid in sagas))
            return [sid for sid, b in zip(sagas, busy, strict=True) if b]

        in_flight = await eventually(victim_busy, timeout=120, interval=0.2)
        victim.kill()  # SIGKILL under load: its activities die mid-step
        assert victim.wait(timeout=10) == -9
        results = await asyncio.wait_for(
            asyncio.gather(*(wait_saga(stack.client, sid) for sid in sagas)), timeout=240
        )
    finally:
        stop(workers)
    assert {r.status for r in results} == {SagaStatus.COMPLETED}, [
        (r.saga_id, r.status, r.error) for r in results if r.status != SagaStatus.COMPLETED
    ]
    assert_each_effect_once(stack, sagas)
    # What the victim held was retried elsewhere, after its heartbeat timed out.
    for sid in in_flight:
        retried = [(who, n) for who, n in await activity_workers(stack, sid) if n > 1]
        assert retried and all(identity_pid(who) != victim.pid for who, _ in retried), sid
    steps = [stack.ledger.step(f"{sid}/{s}") for sid in in_flight for s in "abc"]
    assert any(step is not None and step.attempts == 2 for step in steps)
    # and the survivors did the rest of the work
    ran = Counter()
    for sid in sagas:
        ran.update(identity_pid(who) for who, _ in await activity_workers(stack, sid))
    assert {workers[1].pid, workers[2].pid} <= set(ran), ran
