"""Planner tests: scripted models behind the real plugin, on the real Temporal dev server.

A scripted model stands in for the LLM (the plugin's ``TestModel``): it answers from a
list and records what it was asked, so tests count model calls and read the repair
feedback. Each worker gets its own client with the agents plugin (sharing the session's
connection), its own task queue and ledger; effects are counted in the session's SQL.
"""

from __future__ import annotations

import dataclasses
import json
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from agents import ModelResponse
from sqlalchemy import Engine
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowHandle
from temporalio.converter import DefaultPayloadConverter
from temporalio.openai_agents import OpenAIAgentsPlugin
from temporalio.openai_agents.testing import ResponseBuilders, TestModel, TestModelProvider
from temporalio.worker import Worker

from saga import Ledger, SagaResult, SagaWorkflow, Settings, create_worker
from saga._models import SagaInput, SagaMode
from saga._policy import Policy
from saga.planner._agent_settings import AgentSettings, agents_plugin
from tests.agent import money  # noqa: F401  (registers money.charge in the catalog)

MODEL_ACTIVITY = "invoke_model_activity"


class ScriptedModel(TestModel):
    """Answers with the scripted responses in order; records every call's input."""

    __test__ = False

    def __init__(self, responses: Sequence[ModelResponse]) -> None:
        self.responses = list(responses)
        self.calls: list[dict[str, Any]] = []
        super().__init__(self._next)

    def _next(self) -> ModelResponse:
        if not self.responses:
            raise AssertionError("the model was called more often than scripted")
        return self.responses.pop(0)

    async def get_response(
        self, system_instructions: Any, input: Any, *args: Any, **kw: Any
    ) -> ModelResponse:
        self.calls.append({"instructions": system_instructions, "input": input})
        return await super().get_response(system_instructions, input, *args, **kw)

    def feedback(self, call: int) -> str:
        """The last user message the model saw on call ``call`` (0-based)."""
        items = self.calls[call]["input"]
        users = [i for i in items if isinstance(i, dict) and i.get("role") == "user"]
        content = users[-1]["content"]
        return content if isinstance(content, str) else json.dumps(content)


def plan_response(*steps: tuple[str, str, dict[str, Any] | str]) -> ModelResponse:
    """A model answer with the plan ``(id, action, args)``; str args are sent verbatim."""
    return answer(
        {
            "steps": [
                {
                    "id": sid,
                    "action": action,
                    "args_json": a if isinstance(a, str) else json.dumps(a),
                }
                for sid, action, a in steps
            ],
            "cannot_plan": None,
        }
    )


def answer(output: dict[str, Any] | str) -> ModelResponse:
    text = output if isinstance(output, str) else json.dumps(output)
    return ResponseBuilders.output_message(text)


def test_settings(**kw: Any) -> AgentSettings:
    """Fail fast: one attempt per model call, so an unscripted call shows at once."""
    return AgentSettings(
        **{"model_max_attempts": 1, "model_timeout_seconds": 30, "openai_api_key": None, **kw}
    )


test_settings.__test__ = False  # type: ignore[attr-defined]


def plugin_for(model: Any) -> OpenAIAgentsPlugin:
    return agents_plugin(test_settings(), model_provider=TestModelProvider(model))


def client_with(base: Client, plugin: OpenAIAgentsPlugin) -> Client:
    """``base``'s connection (and interceptors) with the agents plugin on it."""
    config = base.config()
    # The plugin brings its own payload converter; the codec (encryption) stays.
    config["data_converter"] = dataclasses.replace(
        base.data_converter, payload_converter_class=DefaultPayloadConverter
    )
    config["plugins"] = [plugin]
    return Client(**config)


@dataclass
class AgentStack:
    client: Client
    settings: Settings
    ledger: Ledger
    effects: Engine
    worker: Worker

    async def start(
        self,
        request: str,
        policy: Policy | None = None,
        saga_id: str | None = None,
        mode: SagaMode = SagaMode.PLAN,
    ) -> WorkflowHandle[SagaWorkflow, SagaResult]:
        return await self.client.start_workflow(
            SagaWorkflow.run,
            SagaInput(request=request, policy=policy or Policy(), mode=mode),
            id=saga_id or f"agent-{uuid.uuid4().hex[:10]}",
            task_queue=self.settings.task_queue,
        )


RunWorker = Callable[..., Any]


@pytest.fixture
def run_worker(client: Client, effects_engine: Engine, tmp_path: Path) -> RunWorker:
    """``async with run_worker(model) as stack``: a worker whose model is ``model``.

    ``run_worker(None, **agent_settings)``: the worker's own model provider instead
    (offline planner, or the OpenAI client over HTTP), as ``create_worker`` builds it.
    """
    ledger_url = f"sqlite:///{tmp_path / 'ledger.db'}"
    task_queue = f"agent-{uuid.uuid4().hex[:8]}"

    @asynccontextmanager
    async def run(
        scripted: Any, base: Client | None = None, **agent_settings: Any
    ) -> AsyncIterator[AgentStack]:
        settings = Settings(
            task_queue=task_queue,
            database_url=ledger_url,
            data_dir=tmp_path,
            activities="tests.agent.money:build_activities",
        )
        ledger = Ledger(ledger_url)
        if scripted is None:  # the worker's own provider, from settings (offline or HTTP)
            agent_client = base or client
            worker = create_worker(
                agent_client, settings, ledger, agent_settings=test_settings(**agent_settings)
            )
        else:
            agent_client = client_with(base or client, plugin_for(scripted))
            worker = create_worker(agent_client, settings, ledger)
        try:
            async with worker:
                yield AgentStack(agent_client, settings, ledger, effects_engine, worker)
        finally:
            ledger.close()

    return run


async def model_activity_runs(handle: WorkflowHandle[Any, Any]) -> int:
    """How many model activities the workflow's history scheduled."""
    n = 0
    async for event in handle.fetch_history_events():
        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            name = event.activity_task_scheduled_event_attributes.activity_type.name
            n += name == MODEL_ACTIVITY
    return n


async def has_event(handle: WorkflowHandle[Any, Any], event_type: EventType.ValueType) -> bool:
    async for event in handle.fetch_history_events():
        if event.event_type == event_type:
            return True
    return False
