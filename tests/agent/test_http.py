"""The real `openai` client over HTTP, against a local OpenAI-compatible server.

The server (aiohttp, on a free port) answers /v1/chat/completions and /v1/responses with
a scripted plan and records what it was sent: the HTTP path of the model activity runs
for real, and nothing leaves 127.0.0.1.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web

from saga import SagaMode, SagaStatus, free_port
from saga.planner._agent import AGENT_LABEL, RULES
from tests import effects
from tests.agent.conftest import RunWorker, model_activity_runs
from tests.history import history_text

PLAN = {
    "steps": [
        {"id": "a", "action": "effects.apply", "args_json": json.dumps({"name": "a"})},
        {"id": "tell", "action": "effects.notify", "args_json": json.dumps({"name": "t"})},
    ],
    "cannot_plan": None,
}
KEY = "sk-local-test-key"


@dataclass
class FakeOpenAI:
    base_url: str
    requests: list[dict[str, Any]] = field(default_factory=list)
    fail_first: int = 0
    """Answer this many requests with HTTP 503 first (the activity retries)."""


def _chat(body: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": "chatcmpl-local",
        "object": "chat.completion",
        "created": 0,
        "model": body["model"],
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": json.dumps(PLAN)},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 10, "completion_tokens": 10, "total_tokens": 20},
    }


def _responses(body: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": "resp_local",
        "object": "response",
        "created_at": 0,
        "status": "completed",
        "model": body["model"],
        "output": [
            {
                "type": "message",
                "id": "msg_local",
                "status": "completed",
                "role": "assistant",
                "content": [{"type": "output_text", "text": json.dumps(PLAN), "annotations": []}],
            }
        ],
        "parallel_tool_calls": True,
        "tool_choice": "auto",
        "tools": [],
        "usage": {
            "input_tokens": 10,
            "output_tokens": 10,
            "total_tokens": 20,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens_details": {"reasoning_tokens": 0},
        },
    }


@pytest.fixture
async def fake_openai() -> AsyncIterator[FakeOpenAI]:
    port = free_port()
    server = FakeOpenAI(base_url=f"http://127.0.0.1:{port}/v1")

    async def handle(request: web.Request) -> web.Response:
        body = await request.json()
        server.requests.append(
            {"path": request.path, "auth": request.headers.get("Authorization"), "body": body}
        )
        if server.fail_first > 0:
            server.fail_first -= 1
            return web.json_response({"error": {"message": "busy"}}, status=503)
        make = _chat if request.path.endswith("/chat/completions") else _responses
        return web.json_response(make(body))

    app = web.Application()
    app.router.add_post("/v1/chat/completions", handle)
    app.router.add_post("/v1/responses", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield server
    finally:
        await runner.cleanup()


@pytest.mark.parametrize("api", ["chat_completions", "responses"])
async def test_plan_over_http(run_worker: RunWorker, fake_openai: FakeOpenAI, api: str) -> None:
    async with run_worker(
        None,
        openai_api_key=KEY,
        openai_base_url=fake_openai.base_url,
        model="local-planner",
        model_api=api,
    ) as stack:
        handle = await stack.start("apply a, then tell")
        result = await handle.result()
    assert result.status == SagaStatus.COMPLETED, result
    assert result.planner == AGENT_LABEL
    assert len(effects.effects_of(stack.effects, handle.id)) == 1
    assert len(fake_openai.requests) == 1
    sent = fake_openai.requests[0]
    assert sent["auth"] == f"Bearer {KEY}"
    body = sent["body"]
    assert body["model"] == "local-planner"
    if api == "chat_completions":
        assert sent["path"] == "/v1/chat/completions"
        system, user = body["messages"]
        assert system["role"] == "system" and RULES in system["content"]
        assert user == {"role": "user", "content": "apply a, then tell"}
        schema = body["response_format"]
    else:
        assert sent["path"] == "/v1/responses"
        assert RULES in body["instructions"]
        assert body["input"][0]["content"] == "apply a, then tell"
        schema = body["text"]["format"]
    assert schema["type"] == "json_schema" and schema.get("strict", True)
    assert "args_json" in json.dumps(schema)
    # The API key is a worker secret: it is not in the workflow's history.
    history = history_text(await handle.fetch_history())
    assert "apply a, then tell" in history  # payloads decoded: the request is visible
    assert KEY not in history


async def test_http_errors_are_retried_by_the_activity(
    run_worker: RunWorker, fake_openai: FakeOpenAI
) -> None:
    fake_openai.fail_first = 1
    async with run_worker(
        None,
        openai_api_key=KEY,
        openai_base_url=fake_openai.base_url,
        model_max_attempts=3,
    ) as stack:
        handle = await stack.start("apply a, then tell")
        result = await handle.result()
    assert result.status == SagaStatus.COMPLETED, result
    assert len(fake_openai.requests) == 2  # one 503, then the plan
    assert await model_activity_runs(handle) == 1  # one activity, two attempts


async def test_unreachable_endpoint_rejects_after_the_attempts(run_worker: RunWorker) -> None:
    """The conftest guard's refusing address: the saga ends rejected, with no effect."""
    async with run_worker(
        None, openai_api_key=KEY, openai_base_url="http://127.0.0.1:9/v1", model_max_attempts=2
    ) as stack:
        handle = await stack.start("apply a, then tell")
        result = await handle.result()
    assert result.status == SagaStatus.REJECTED
    assert result.error == (
        "the model could not be reached at http://127.0.0.1:9/v1: connection refused "
        "(is the server running?)"
    )
    assert effects.log_of(stack.effects, handle.id) == []


def _act_chat(body: dict[str, Any]) -> dict[str, Any]:
    """Act mode over chat completions: a tool call first; once its answer is in the
    conversation, the last word."""
    answered = any(m.get("role") == "tool" for m in body["messages"])
    message: dict[str, Any] = (
        {"role": "assistant", "content": json.dumps({"done": True, "answer": "applied a"})}
        if answered
        else {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_http_1",
                    "type": "function",
                    "function": {"name": "effects__apply", "arguments": '{"name": "a"}'},
                }
            ],
        }
    )
    return {
        "id": "chatcmpl-act",
        "object": "chat.completion",
        "created": 0,
        "model": body["model"],
        "choices": [
            {
                "index": 0,
                "message": message,
                "finish_reason": "stop" if answered else "tool_calls",
            }
        ],
        "usage": {"prompt_tokens": 15, "completion_tokens": 5, "total_tokens": 20},
    }


async def test_act_mode_over_http(run_worker: RunWorker) -> None:
    requests: list[dict[str, Any]] = []

    async def handle(request: web.Request) -> web.Response:
        body = await request.json()
        requests.append(body)
        return web.json_response(_act_chat(body))

    port = free_port()
    app = web.Application()
    app.router.add_post("/v1/chat/completions", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        async with run_worker(
            None,
            openai_api_key=KEY,
            openai_base_url=f"http://127.0.0.1:{port}/v1",
            model="local-actor",
            model_api="chat_completions",
        ) as stack:
            handle = await stack.start("apply a", mode=SagaMode.ACT)
            result = await handle.result()
    finally:
        await runner.cleanup()
    assert result.status == SagaStatus.COMPLETED, result
    assert result.answer == "applied a" and result.planner == AGENT_LABEL
    assert [(s.id, s.action) for s in result.steps] == [("call-1", "effects.apply")]
    assert (result.model_calls, result.tokens) == (2, 40)
    assert len(effects.effects_of(stack.effects, handle.id)) == 1
    tools = {t["function"]["name"] for t in requests[0]["tools"]}
    assert {"effects__apply", "effects__notify"} <= tools
    tool_answer = next(m for m in requests[1]["messages"] if m.get("role") == "tool")
    assert json.loads(tool_answer["content"])["result"]["external_id"].startswith("eff-")
