"""A real worker process killed with SIGKILL mid-step: the saga still ends, effects once."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from temporalio.api.enums.v1 import TimeoutType

from saga import SagaStatus, start_saga, wait_saga
from saga._client import WORKFLOW_TASK_TIMEOUT
from tests import effects
from tests.conftest import Stack, eventually, unique
from tests.test_cli import ROOT, cli_env


def spawn_worker(stack: Stack, queue: str, log: Path, **env: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "saga", "worker"],
        env=cli_env(stack, SAGA_TASK_QUEUE=queue, **env),
        cwd=ROOT,
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
    )


def stop(procs: list[subprocess.Popen[bytes]]) -> None:
    """Stop the workers still running (SIGTERM: each drains), and wait for them."""
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
    for proc in procs:
        if proc.poll() is None:
            proc.wait(timeout=30)


async def until_running(
    stack: Stack, sid: str, step_id: str, *, attempts: int | None = None, undo: bool = False
) -> None:
    """Wait until the ledger shows the step (or, with ``undo``, its compensation) running,
    in its ``attempts``-th claim when given."""

    def running() -> bool:
        row = stack.ledger.step(f"{sid}/{step_id}")
        if row is None:
            return False
        if undo:
            return row.compensation_status == "running"
        return row.status == "running" and attempts in (None, row.attempts)

    await eventually(running, timeout=120, interval=0.05)


async def test_sigkill_mid_step_then_new_worker(stack: Stack, tmp_path: Path) -> None:
    queue = unique("crash")
    sid = unique()
    plan = {
        "steps": [
            {"id": "a", "action": "effects.apply", "args": {"name": "a"}},
            {"id": "b", "action": "effects.apply", "args": {"name": "b", "delay": 4}},
            {"id": "c", "action": "effects.apply", "args": {"name": "c"}},
        ]
    }
    first = spawn_worker(stack, queue, tmp_path / "worker1.log")
    second = None
    try:
        handle = await start_saga(stack.client, plan, saga_id=sid, task_queue=queue)
        # A workflow task held by a dead worker is handed on after 5 s, not Temporal's 10.
        config = (await handle.describe()).raw_description.execution_config
        assert config.default_workflow_task_timeout.ToTimedelta() == WORKFLOW_TASK_TIMEOUT
        assert WORKFLOW_TASK_TIMEOUT.total_seconds() == 5
        await until_running(stack, sid, "b")
        first.kill()  # SIGKILL: no cleanup, the activity is mid-flight
        assert first.wait(timeout=10) == -9
        second = spawn_worker(stack, queue, tmp_path / "worker2.log")
        result = await asyncio.wait_for(wait_saga(stack.client, sid), timeout=180)
    finally:
        stop([p for p in (first, second) if p is not None])
    assert result.status == SagaStatus.COMPLETED
    rows = effects.effects_of(stack.effects, sid)
    assert [r["name"] for r in rows] == ["a", "b", "c"]
    # b was started twice (killed, then retried on the new worker) and took effect once.
    assert stack.ledger.step(f"{sid}/b").attempts == 2  # type: ignore[union-attr]
    assert effects.log_of(stack.effects, sid) == [("apply", "a"), ("apply", "b"), ("apply", "c")]


# -- a dead worker costs seconds; it spends no retries; SIGTERM drains -------------------
async def pending(stack: Stack, sid: str, activity_id: str) -> Any:
    """The pending activity ``activity_id`` of the saga, or None."""
    desc = await stack.client.get_workflow_handle(sid).describe()
    for p in desc.raw_description.pending_activities:
        if p.activity_id == activity_id:
            return p
    return None


def last_timeout(p: Any) -> int | None:
    """The timeout type of the pending activity's last failure, if it was a time-out."""
    if p is None or not p.last_failure.HasField("timeout_failure_info"):
        return None
    return int(p.last_failure.timeout_failure_info.timeout_type)


async def test_dead_workers_do_not_spend_the_retry_budget(stack: Stack, tmp_path: Path) -> None:
    """effects.apply may fail 5 times; its worker is killed mid-step 5 times, and the step
    still completes on the 6th attempt (before, Temporal gave up and the saga unwound)."""
    queue = unique("budget")
    sid = unique()
    plan = {
        "steps": [
            {"id": "a", "action": "effects.apply", "args": {"name": "a"}},
            {"id": "b", "action": "effects.apply", "args": {"name": "b", "delay": 4}},
            {"id": "c", "action": "effects.apply", "args": {"name": "c"}},
        ]
    }
    procs = [spawn_worker(stack, queue, tmp_path / "worker0.log")]
    try:
        await start_saga(stack.client, plan, saga_id=sid, task_queue=queue)
        for kill in range(1, 6):
            await until_running(stack, sid, "b", attempts=kill)
            procs[-1].kill()
            assert procs[-1].wait(timeout=10) == -9
            procs.append(spawn_worker(stack, queue, tmp_path / f"worker{kill}.log"))
            # The server notices the dead worker by its missed heartbeats (2 s for
            # effects.apply), not by the step's 30 s start-to-close time-out.
            await eventually(
                lambda n=kill: _retried_after_heartbeat_timeout(stack, sid, n), timeout=30
            )
        result = await asyncio.wait_for(wait_saga(stack.client, sid), timeout=120)
    finally:
        stop(procs)
    assert result.status == SagaStatus.COMPLETED, result.error
    row = stack.ledger.step(f"{sid}/b")
    assert row is not None and row.attempts == 6 and row.failures == 0
    assert effects.log_of(stack.effects, sid) == [("apply", "a"), ("apply", "b"), ("apply", "c")]


async def _retried_after_heartbeat_timeout(stack: Stack, sid: str, kills: int) -> bool:
    p = await pending(stack, sid, "b")
    return (
        p is not None
        and p.attempt == kills + 1
        and last_timeout(p) == TimeoutType.TIMEOUT_TYPE_HEARTBEAT
    )


async def test_real_failures_still_use_up_the_retry_budget(stack: Stack) -> None:
    sid = unique()
    plan = {
        "steps": [
            {"id": "a", "action": "effects.apply", "args": {"name": "a"}},
            {"id": "b", "action": "effects.apply", "args": {"name": "b", "transient_failures": 9}},
        ]
    }
    await start_saga(stack.client, plan, saga_id=sid, task_queue=stack.settings.task_queue)
    result = await asyncio.wait_for(wait_saga(stack.client, sid), timeout=60)
    assert result.status == SagaStatus.COMPENSATED
    assert "failed 5 times; out of retries" in (result.error or ""), result.error
    row = stack.ledger.step(f"{sid}/b")
    assert row is not None and row.failures == 5 and row.attempts == 5
    assert effects.log_of(stack.effects, sid) == [
        ("apply", "a"),
        ("noop-revert", "b"),
        ("revert", "a"),
    ]


async def test_a_failure_whose_answer_was_lost_is_reported_as_itself(stack: Stack) -> None:
    """The last attempt failed for real, but the server had already given it up (its
    completion came too late): the next attempt finds the budget spent and must report
    that failure, not a time-out, and must not run the action again."""
    sid = unique()
    key = f"{sid}/b"
    # What the ledger holds after 5 real failures of step b, the last one's answer lost.
    stack.ledger.begin_step(key, sid, "b", "effects.apply", 1)
    for _ in range(5):
        stack.ledger.fail_step(key, "CardDeclined: the card was declined")
    plan = {"steps": [{"id": "a", "action": "effects.apply", "args": {"name": "a"}}]}
    plan["steps"].append({"id": "b", "action": "effects.apply", "args": {"name": "b"}})
    await start_saga(stack.client, plan, saga_id=sid, task_queue=stack.settings.task_queue)
    result = await asyncio.wait_for(wait_saga(stack.client, sid), timeout=60)
    assert result.status == SagaStatus.COMPENSATED
    assert result.error == "CardDeclined: the card was declined", result.error
    failed = next(s for s in result.steps if s.id == "b")
    assert failed.error == "CardDeclined: the card was declined"
    assert effects.log_of(stack.effects, sid) == [
        ("apply", "a"),
        ("noop-revert", "b"),
        ("revert", "a"),
    ]


async def test_compensation_of_a_killed_worker_resumes_within_seconds(
    stack: Stack, tmp_path: Path
) -> None:
    queue = unique("comp-crash")
    sid = unique()
    plan = {
        "steps": [
            {"id": "a", "action": "effects.apply", "args": {"name": "a", "revert_delay": 4}},
            {"id": "b", "action": "effects.apply", "args": {"name": "b", "fail": "before"}},
        ]
    }
    first = spawn_worker(stack, queue, tmp_path / "worker1.log")
    second = None
    try:
        await start_saga(stack.client, plan, saga_id=sid, task_queue=queue)
        await until_running(stack, sid, "a", undo=True)
        first.kill()
        assert first.wait(timeout=10) == -9
        second = spawn_worker(stack, queue, tmp_path / "worker2.log")

        async def retried() -> bool:
            p = await pending(stack, sid, "a:compensate:1")
            return (
                p is not None
                and p.attempt == 2
                and last_timeout(p) == TimeoutType.TIMEOUT_TYPE_HEARTBEAT
            )

        await eventually(retried, timeout=30, interval=0.1)
        result = await asyncio.wait_for(wait_saga(stack.client, sid), timeout=120)
    finally:
        stop([p for p in (first, second) if p is not None])
    assert result.status == SagaStatus.COMPENSATED
    assert effects.log_of(stack.effects, sid) == [
        ("apply", "a"),
        ("noop-revert", "b"),
        ("revert", "a"),
    ]
    row = stack.ledger.step(f"{sid}/a")
    assert row is not None and row.compensation_failures == 0


async def test_sigterm_lets_the_running_step_finish_then_exits_0(
    stack: Stack, tmp_path: Path
) -> None:
    queue = unique("drain")
    sid = unique()
    plan = {
        "steps": [
            {"id": "a", "action": "effects.apply", "args": {"name": "a"}},
            {"id": "b", "action": "effects.apply", "args": {"name": "b", "delay": 3}},
            {"id": "c", "action": "effects.apply", "args": {"name": "c"}},
        ]
    }
    log = tmp_path / "worker1.log"
    first = spawn_worker(stack, queue, log, SAGA_GRACEFUL_SHUTDOWN_SECONDS="30")
    second = None
    try:
        await start_saga(stack.client, plan, saga_id=sid, task_queue=queue)
        await until_running(stack, sid, "b")
        first.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(first.wait, 40) == 0
        # The draining worker finished b (it polled no new work, so c waits).
        row = stack.ledger.step(f"{sid}/b")
        assert row is not None and row.status == "succeeded" and row.attempts == 1
        assert stack.ledger.step(f"{sid}/c") is None
        second = spawn_worker(stack, queue, tmp_path / "worker2.log")
        result = await asyncio.wait_for(wait_saga(stack.client, sid), timeout=120)
    finally:
        stop([p for p in (first, second) if p is not None])
    assert result.status == SagaStatus.COMPLETED
    assert effects.log_of(stack.effects, sid) == [("apply", "a"), ("apply", "b"), ("apply", "c")]
    text = log.read_text()
    assert "worker stopping" in text and "worker stopped" in text, text[-2000:]


async def test_sigterm_hands_back_a_step_longer_than_the_grace_period(
    stack: Stack, tmp_path: Path
) -> None:
    queue = unique("handback")
    sid = unique()
    plan = {
        "steps": [
            {"id": "a", "action": "effects.apply", "args": {"name": "a", "delay": 8}},
            {"id": "b", "action": "effects.apply", "args": {"name": "b"}},
        ]
    }
    first = spawn_worker(stack, queue, tmp_path / "worker1.log", SAGA_GRACEFUL_SHUTDOWN_SECONDS="1")
    second = None
    try:
        await start_saga(stack.client, plan, saga_id=sid, task_queue=queue)
        await until_running(stack, sid, "a")
        first.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(first.wait, 30) == 0
        # It left before the 8 s step took effect; the step went back to the server.
        assert effects.effects_of(stack.effects, sid) == []
        p = await eventually(lambda: pending(stack, sid, "a"), timeout=10)
        assert last_timeout(p) is None, p.last_failure  # handed back, not timed out
        second = spawn_worker(stack, queue, tmp_path / "worker2.log")
        result = await asyncio.wait_for(wait_saga(stack.client, sid), timeout=120)
    finally:
        stop([p for p in (first, second) if p is not None])
    assert result.status == SagaStatus.COMPLETED
    assert effects.log_of(stack.effects, sid) == [("apply", "a"), ("apply", "b")]
    row = stack.ledger.step(f"{sid}/a")
    assert row is not None and row.attempts == 2 and row.failures == 0


async def test_sigkill_mid_act_loop_repeats_no_model_call_and_no_write(
    stack: Stack, tmp_path: Path
) -> None:
    """Act mode (the worker's offline model): the worker dies during the agent's second
    write; another worker finishes the run from history. No model call is made twice and
    every write takes effect once."""
    from saga import SagaInput, SagaMode
    from tests.agent.conftest import model_activity_runs

    queue = unique("crash-act")
    sid = unique()
    request = "effects.apply name=a; effects.apply name=b delay=4; effects.apply name=c"
    offline = {"OPENAI_API_KEY": ""}  # the workers' own offline model
    first = spawn_worker(stack, queue, tmp_path / "worker1.log", **offline)
    second = None
    try:
        handle = await start_saga(
            stack.client,
            None,
            saga_id=sid,
            task_queue=queue,
            input=SagaInput(request=request, mode=SagaMode.ACT),
        )
        await until_running(stack, sid, "call-2")
        first.kill()
        assert first.wait(timeout=10) == -9
        second = spawn_worker(stack, queue, tmp_path / "worker2.log", **offline)
        result = await asyncio.wait_for(wait_saga(stack.client, sid), timeout=180)
    finally:
        stop([p for p in (first, second) if p is not None])
    assert result.status == SagaStatus.COMPLETED, result
    assert [s.id for s in result.steps] == ["call-1", "call-2", "call-3"]
    # Three writes and the last word: four model calls in history, none repeated.
    assert await model_activity_runs(handle) == 4
    assert result.model_calls == 4
    assert effects.log_of(stack.effects, sid) == [("apply", "a"), ("apply", "b"), ("apply", "c")]
    assert stack.ledger.step(f"{sid}/call-2").attempts == 2  # type: ignore[union-attr]
