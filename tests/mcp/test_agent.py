"""An OpenAI Agents SDK agent (a scripted model in place of the LLM) that reaches the
sagas only through `saga mcp` over stdio (`MCPServerStdio`): it reads the catalog,
checks its plan, starts the saga and waits for it. The effects are counted in the stack's
localstripe and inventory."""

from __future__ import annotations

import json
import sys
from typing import Any

from agents import Agent, RunConfig, Runner
from agents.mcp import MCPServerStdio
from temporalio.openai_agents.testing import ResponseBuilders

from tests.agent.conftest import ScriptedModel
from tests.conftest import unique
from tests.mcp.conftest import ROOT, Dev, order_plan


def _call(tool: str, args: dict[str, Any], call_id: str) -> Any:
    return ResponseBuilders.tool_call(json.dumps(args), tool, call_id=call_id)


def _outputs(model: ScriptedModel) -> dict[str, Any]:
    """What each tool call answered, by call id, as the model saw it last."""
    items = model.calls[-1]["input"]
    outputs = {
        i["call_id"]: i["output"]
        for i in items
        if isinstance(i, dict) and i.get("type") == "function_call_output"
    }
    return {call: _json(out) for call, out in outputs.items()}


def _json(output: Any) -> Any:
    """A tool's output as the model got it: a text, or one text item per result item."""
    if isinstance(output, list):
        texts = [json.loads(item["text"]) for item in output if item.get("type") == "input_text"]
        return texts[0] if len(texts) == 1 else texts
    return json.loads(output)


async def test_an_agent_runs_a_saga_through_the_mcp_server(dev: Dev) -> None:
    sku = dev.product(stock=5)
    saga_id = unique("mcp-agent")
    plan = order_plan(sku)
    model = ScriptedModel(
        [
            _call("list_actions", {}, "call-actions"),
            _call("validate_plan", {"plan": plan}, "call-check"),
            _call("start_saga", {"plan": plan, "saga_id": saga_id}, "call-start"),
            _call("wait_saga", {"saga_id": saga_id, "timeout_seconds": 60}, "call-wait"),
            ResponseBuilders.output_message(f"Ordered: saga {saga_id} completed."),
        ]
    )
    server = MCPServerStdio(
        params={
            "command": sys.executable,
            "args": ["-m", "saga", "mcp"],
            "cwd": str(ROOT),
            "env": dev.env(),
        },
        name="saga",
        client_session_timeout_seconds=90,  # wait_saga waits up to a minute
    )
    async with server:
        agent = Agent(
            name="shop", instructions="Use the saga tools.", model=model, mcp_servers=[server]
        )
        result = await Runner.run(
            agent,
            f"order 2 of {sku} for ana@example.com",
            run_config=RunConfig(tracing_disabled=True),
        )
    assert result.final_output == f"Ordered: saga {saga_id} completed."
    said = _outputs(model)
    assert "Refund the charge in full" in json.dumps(said["call-actions"])
    assert said["call-check"]["valid"] is True
    assert said["call-start"]["saga_id"] == saga_id
    assert said["call-wait"]["status"] == "completed", said["call-wait"]
    [intent] = await dev.charges(saga_id)
    assert (intent.status, intent.amount) == ("succeeded", 2500)
    assert dev.stock(sku) == 3
