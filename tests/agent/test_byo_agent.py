"""Bring your own agent: examples/byo_agent.py's workflow, with a scripted model, on a
saga worker (real Temporal dev server, SQL ledger and effects)."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from agents import ModelResponse
from sqlalchemy import Engine
from temporalio.client import Client, WorkflowFailureError, WorkflowHandle
from temporalio.exceptions import ApplicationError, CancelledError

from examples.byo_agent import SHOP, ShopAgentWorkflow, ShopRequest, ShopResult, shop_agent
from saga import (
    Ledger,
    Policy,
    SagaInput,
    SagaMode,
    SagaResult,
    SagaStatus,
    SagaWorkflow,
    Settings,
    create_worker,
)
from saga._limits import saga_input_problems
from saga._models import CompensationStatus
from saga.planner._lookups import tool_name
from tests import effects
from tests.agent.conftest import ResponseBuilders, ScriptedModel, answer, client_with, plugin_for
from tests.conftest import eventually

ACTIONS = ["effects.apply", "money.charge"]


def call(name: str, args: dict[str, Any], call_id: str) -> ModelResponse:
    return ResponseBuilders.tool_call(json.dumps(args), name, call_id=call_id)


@asynccontextmanager
async def shop(
    client: Client, tmp_path: Path, model: ScriptedModel, **worker: Any
) -> AsyncIterator[tuple[Client, Settings, Ledger]]:
    settings = Settings(
        task_queue=f"byo-{uuid.uuid4().hex[:8]}",
        database_url=f"sqlite:///{tmp_path / 'ledger.db'}",
        data_dir=tmp_path,
        activities="tests.agent.money:build_activities",
    )
    ledger = Ledger(settings.ledger_url())
    agent_client = client_with(client, plugin_for(model))
    running = create_worker(
        agent_client, settings, ledger, extra_workflows=[ShopAgentWorkflow], **worker
    )
    try:
        async with running:
            yield agent_client, settings, ledger
    finally:
        ledger.close()


async def start(client: Client, settings: Settings) -> WorkflowHandle[Any, ShopResult]:
    return await client.start_workflow(
        ShopAgentWorkflow.run,
        ShopRequest(request="apply a, charge 9 eur", actions=ACTIONS),
        id=f"shop-{uuid.uuid4().hex[:8]}",
        task_queue=settings.task_queue,
        result_type=ShopResult,
    )


def applied(engine: Engine, handle: WorkflowHandle[Any, Any]) -> dict[str, int]:
    return {e["name"]: e["reverted"] for e in effects.effects_of(engine, handle.id)}


async def test_your_agent_with_compensable_tools_completes(
    client: Client, effects_engine: Engine, tmp_path: Path
) -> None:
    model = ScriptedModel(
        [
            call("shipping_cost", {"quantity": 2}, "byo-1"),
            call(tool_name("effects.apply"), {"name": "a"}, "byo-2"),
            call(
                tool_name("money.charge"),
                {"name": "p", "amount": 900, "currency": "eur"},
                "byo-3",
            ),
            answer({"ok": True, "summary": "applied a, charged 9 eur"}),
        ]
    )
    async with shop(client, tmp_path, model) as (agent_client, settings, ledger):
        handle = await start(agent_client, settings)
        result = await handle.result()
        rows = {s.step_id: s.status for s in ledger.steps(handle.id)}
    assert result == ShopResult(summary="applied a, charged 9 eur", steps=["call-1", "call-2"])
    assert rows == {"call-1": "succeeded", "call-2": "succeeded"}
    assert applied(effects_engine, handle) == {"a": 0, "p": 0}
    shipping = [
        i
        for i in model.calls[1]["input"]
        if isinstance(i, dict) and i.get("type") == "function_call_output"
    ]
    assert shipping[0]["output"] == "700"  # your own tool ran in the workflow


async def test_when_your_agent_gives_up_every_step_is_undone(
    client: Client, effects_engine: Engine, tmp_path: Path
) -> None:
    model = ScriptedModel(
        [
            call(tool_name("effects.apply"), {"name": "a"}, "byo-1"),
            call(tool_name("effects.apply"), {"name": "b", "fail": "after"}, "byo-2"),
            answer({"ok": False, "summary": "b is broken"}),
        ]
    )
    async with shop(client, tmp_path, model) as (agent_client, settings, _ledger):
        handle = await start(agent_client, settings)
        with pytest.raises(WorkflowFailureError) as failed:
            await handle.result()
    cause = failed.value.cause
    assert isinstance(cause, ApplicationError) and cause.message == "the agent gave up: b is broken"
    # b failed after its effect: undone at once, and the model was told; a is undone
    # when the workflow gives up.
    assert applied(effects_engine, handle) == {"a": 1, "b": 1}
    told = [
        json.loads(i["output"])
        for i in model.calls[2]["input"]
        if isinstance(i, dict) and i.get("type") == "function_call_output"
    ]
    assert told[1] == {
        "action": "effects.apply",
        "error": "Broken: injected failure after the effect",
    }


async def test_cancelling_your_workflow_undoes_its_steps(
    client: Client, effects_engine: Engine, tmp_path: Path
) -> None:
    model = ScriptedModel(
        [
            call(tool_name("effects.apply"), {"name": "a"}, "byo-1"),
            call(tool_name("effects.apply"), {"name": "stuck", "fail": "hang_after"}, "byo-2"),
        ]
    )
    async with shop(client, tmp_path, model) as (agent_client, settings, _ledger):
        handle = await start(agent_client, settings)

        async def hanging() -> bool:
            return "stuck" in applied(effects_engine, handle)

        await eventually(hanging)
        await handle.cancel()
        with pytest.raises(WorkflowFailureError) as failed:
            await handle.result()
    assert isinstance(failed.value.cause, CancelledError)
    assert applied(effects_engine, handle) == {"a": 1, "stuck": 1}


async def act_as(client: Client, settings: Settings, agent: str) -> SagaResult:
    inp = SagaInput(
        request="apply a, charge 9 eur",
        mode=SagaMode.ACT,
        agent=agent,
        policy=Policy(allowed_actions=ACTIONS),
    )
    return await client.execute_workflow(
        SagaWorkflow.run,
        inp,
        id=f"shop-act-{uuid.uuid4().hex[:8]}",
        task_queue=settings.task_queue,
        result_type=SagaResult,
    )


async def test_your_agent_inside_the_saga_workflow(
    client: Client, effects_engine: Engine, tmp_path: Path
) -> None:
    """The worker offers your agent by name; an act-mode saga runs it in the saga
    workflow: your role and tools, the saga's tools (each write a step) and rules."""
    model = ScriptedModel(
        [
            call("shipping_cost", {"quantity": 2}, "in-1"),
            call(tool_name("effects.apply"), {"name": "a"}, "in-2"),
            call(
                tool_name("money.charge"), {"name": "p", "amount": 900, "currency": "eur"}, "in-3"
            ),
            answer({"done": True, "answer": "applied a, charged 9 eur"}),
        ]
    )
    async with shop(client, tmp_path, model, agents={"shop": shop_agent}) as (c, settings, _):
        result = await act_as(c, settings, "shop")
    assert result.status == SagaStatus.COMPLETED, result
    assert result.answer == "applied a, charged 9 eur"
    assert [(s.id, s.action, s.status) for s in result.steps] == [
        ("call-1", "effects.apply", "succeeded"),
        ("call-2", "money.charge", "succeeded"),
    ]
    assert result.model_calls == 4
    instructions = model.calls[0]["instructions"]
    assert instructions.startswith(SHOP) and "You are the agent of a saga engine" in instructions
    shipping = [
        i
        for i in model.calls[1]["input"]
        if isinstance(i, dict) and i.get("type") == "function_call_output"
    ]
    assert shipping[0]["output"] == "700"


async def test_your_agent_in_the_saga_gives_up_or_is_unknown(
    client: Client, effects_engine: Engine, tmp_path: Path
) -> None:
    model = ScriptedModel(
        [
            call(tool_name("effects.apply"), {"name": "a"}, "gu-1"),
            answer({"done": False, "answer": "no stock after all"}),
        ]
    )
    async with shop(client, tmp_path, model, agents={"shop": shop_agent}) as (c, settings, _):
        gave_up = await act_as(c, settings, "shop")
        unknown = await act_as(c, settings, "nope")
    assert gave_up.status == SagaStatus.COMPENSATED, gave_up
    assert gave_up.error == "the agent gave up: no stock after all"
    assert [s.compensation for s in gave_up.steps] == [CompensationStatus.COMPENSATED]
    # An agent the worker does not offer: nothing runs, and the saga says why.
    assert unknown.status == SagaStatus.COMPENSATED and unknown.steps == []
    assert unknown.error is not None and "offers no agent named 'nope'" in unknown.error
    assert unknown.model_calls == 0


def test_an_agent_name_needs_act_mode_and_a_plain_name() -> None:
    assert saga_input_problems(SagaInput(request="x", agent="shop")) == [
        "agent 'shop': an agent of your own needs mode act"
    ]
    assert saga_input_problems(SagaInput(request="x", mode=SagaMode.ACT, agent="../x")) == [
        "agent '../x': a name of 1-40 of a-z, 0-9, '-', '_'"
    ]
    assert saga_input_problems(SagaInput(request="x", mode=SagaMode.ACT, agent="shop-2")) == []
