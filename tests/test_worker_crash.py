"""A real worker process killed with SIGKILL mid-step: the saga still ends, effects once."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

from saga import SagaStatus, start_saga, wait_saga
from tests import effects
from tests.conftest import Stack, eventually, unique
from tests.test_cli import ROOT, cli_env


def spawn_worker(stack: Stack, queue: str, log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "saga", "worker"],
        env=cli_env(stack, SAGA_TASK_QUEUE=queue),
        cwd=ROOT,
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
    )


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
        await start_saga(stack.client, plan, saga_id=sid, task_queue=queue)

        def b_running() -> bool:
            row = stack.ledger.step(f"{sid}/b")
            return row is not None and row.status == "running"

        await eventually(b_running, timeout=120, interval=0.05)
        first.kill()  # SIGKILL: no cleanup, the activity is mid-flight
        assert first.wait(timeout=10) == -9
        second = spawn_worker(stack, queue, tmp_path / "worker2.log")
        result = await asyncio.wait_for(wait_saga(stack.client, sid), timeout=180)
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                proc.wait(timeout=30)
    assert result.status == SagaStatus.COMPLETED
    rows = effects.effects_of(stack.effects, sid)
    assert [r["name"] for r in rows] == ["a", "b", "c"]
    # b was started twice (killed, then retried on the new worker) and took effect once.
    assert stack.ledger.step(f"{sid}/b").attempts == 2  # type: ignore[union-attr]
    assert effects.log_of(stack.effects, sid) == [("apply", "a"), ("apply", "b"), ("apply", "c")]
