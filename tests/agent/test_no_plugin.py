"""Without Temporal's OpenAI Agents plugin the planner refuses to run: the SDK's own
runner would call the model from workflow code, where nothing is recorded."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from saga.planner._agent import PlanningResult

ROOT = Path(__file__).parent.parent.parent

# A bare process: in this one, a running worker's plugin has swapped the SDK's default
# runner for its own while the session lasts.
PROBE = """\
import asyncio
from agents.run import AgentRunner, get_default_agent_runner
from saga import Policy
from saga.planner._agent import plan_with_agent

assert type(get_default_agent_runner()) is AgentRunner


async def no_problems(raw):
    return []


result = asyncio.run(plan_with_agent("charge 5 EUR to alice", Policy(), [], no_problems))
print(result.model_dump_json())
"""


def test_planner_refuses_without_the_plugin() -> None:
    proc = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, cwd=ROOT, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    result = PlanningResult.model_validate_json(proc.stdout)
    assert result.plan is None and result.model_calls == 0
    assert result.error == (
        "the planner cannot run: this worker has no OpenAI Agents plugin "
        "(build it with saga.create_worker)"
    )
