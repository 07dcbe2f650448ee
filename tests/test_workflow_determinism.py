"""Workflow code makes the same commands on every replay, with or without the sandbox.

With ``SAGA_WORKFLOW_SANDBOX=false`` nothing refuses a clock read or a random number in
workflow code at run time, so this scan refuses them in the modules whose code runs in the
workflow; and a saga run without the sandbox replays with it and without it.
"""

from __future__ import annotations

import ast
from pathlib import Path

from temporalio.client import Client

from saga import SagaStatus, create_worker, start_saga, wait_saga
from tests import effects
from tests.conftest import SESSION_KEYS, Stack, unique
from tests.histories import replayer

ROOT = Path(__file__).resolve().parent.parent
WORKFLOW_MODULES = [
    "saga/_workflow.py",
    "saga/_planning.py",
    "saga/_approval.py",
    "saga/_compensations.py",
    "saga/_step_header.py",
    "saga/_models.py",
    "saga/_plan_model.py",
    "saga/_policy.py",
    "saga/_limits.py",
    "saga/planner/_agent.py",
    "saga/planner/_lookups.py",
    "saga/planner/_act.py",
    "saga/_acting.py",
]
FORBIDDEN = {
    ("datetime", "now"),
    ("datetime", "utcnow"),
    ("datetime", "today"),
    ("date", "today"),
    ("time", "time"),
    ("time", "time_ns"),
    ("time", "monotonic"),
    ("time", "perf_counter"),
    ("time", "sleep"),
    ("uuid", "uuid1"),
    ("uuid", "uuid4"),
    ("os", "environ"),
    ("os", "getenv"),
    ("os", "urandom"),
    ("secrets", "token_hex"),
}
FORBIDDEN_MODULES = {"random", "socket", "threading", "subprocess", "requests", "httpx"}
FORBIDDEN_CALLS = {"open", "input"}


def nondeterministic(source: str) -> list[str]:
    """What in ``source`` reads the clock, randomness, the environment or does I/O."""
    found: list[str] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            if (node.value.id, node.attr) in FORBIDDEN or node.value.id in FORBIDDEN_MODULES:
                found.append(f"line {node.lineno}: {node.value.id}.{node.attr}")
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            if node.func.id in FORBIDDEN_CALLS:
                found.append(f"line {node.lineno}: {node.func.id}()")
        elif isinstance(node, ast.Import | ast.ImportFrom):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            module = node.module if isinstance(node, ast.ImportFrom) else None
            for name in [*names, *([module] if module else [])]:
                if name.split(".")[0] in FORBIDDEN_MODULES:
                    found.append(f"line {node.lineno}: import {name}")
    return found


def test_the_scan_finds_what_it_looks_for() -> None:
    planted = (
        "import random\nfrom datetime import datetime\n"
        "def f():\n    return datetime.now(), time.time(), open('x'), os.environ['A']\n"
    )
    assert len(nondeterministic(planted)) == 5, nondeterministic(planted)


def test_workflow_modules_read_no_clock_randomness_or_environment() -> None:
    problems = {
        name: found
        for name in WORKFLOW_MODULES
        if (found := nondeterministic((ROOT / name).read_text()))
    }
    assert problems == {}


async def test_a_saga_without_the_sandbox_runs_and_replays_either_way(
    client: Client, stack: Stack
) -> None:
    settings = stack.settings.model_copy(
        update={"task_queue": unique("no-sandbox"), "workflow_sandbox": False}
    )
    sid = unique()
    plan = {
        "steps": [
            {"id": "a", "action": "effects.apply", "args": {"name": "a"}},
            {"id": "b", "action": "effects.apply", "args": {"name": "b", "fail": "before"}},
        ]
    }
    async with create_worker(client, settings, stack.ledger) as worker:
        assert type(worker.config()["workflow_runner"]).__name__ == "UnsandboxedWorkflowRunner"
        await start_saga(client, plan, saga_id=sid, task_queue=settings.task_queue)
        result = await wait_saga(client, sid)
    assert result.status == SagaStatus.COMPENSATED
    assert effects.log_of(stack.effects, sid) == [
        ("apply", "a"),
        ("noop-revert", "b"),
        ("revert", "a"),
    ]
    history = await client.get_workflow_handle(sid).fetch_history()
    await replayer(keys=SESSION_KEYS, sandbox=False).replay_workflow(history)
    await replayer(keys=SESSION_KEYS, sandbox=True).replay_workflow(history)
