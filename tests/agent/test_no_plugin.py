"""Without Temporal's OpenAI Agents plugin the planner refuses to run: the SDK's own
runner would call the model from workflow code, where nothing is recorded."""

from __future__ import annotations

from agents.run import AgentRunner, get_default_agent_runner

from saga import Policy
from saga.planner._agent import plan_with_agent


async def test_planner_refuses_without_the_plugin() -> None:
    assert type(get_default_agent_runner()) is AgentRunner  # the SDK's own, as in a bare process
    result = await plan_with_agent("charge 5 EUR to alice", Policy())
    assert result.plan is None and result.model_calls == 0
    assert result.error == (
        "the planner cannot run: this worker has no OpenAI Agents plugin "
        "(build it with saga.create_worker)"
    )
