"""A model endpoint that fails says so: where, what status, the server's own words.

Each test points the worker's real `openai` client at a local aiohttp server on a free
port (or at a port where nothing listens) and runs the saga on the Temporal dev server.
The saga must end rejected with a headline that tells "the model could not be reached"
or "the endpoint answered an error" from "the model answered, but no valid plan", must
run no step, must retry only what can heal, and must keep the API key out of its error
and its history.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowHandle

from saga import SagaResult, SagaStatus, free_port
from saga._policy import Policy
from tests import effects
from tests.agent.conftest import MODEL_ACTIVITY, AgentStack, RunWorker
from tests.history import history_text

KEY = "sk-local-secret-4711"
ROOT = Path(__file__).parent.parent.parent
Answer = Callable[[web.Request], Any]


@dataclass
class Endpoint:
    """A local HTTP server in the place of the model; ``answer`` decides each reply."""

    base_url: str
    answer: Answer = field(default=lambda request: web.json_response({}))
    bodies: list[dict[str, Any]] = field(default_factory=list)
    release: asyncio.Event = field(default_factory=asyncio.Event)


@pytest.fixture
async def endpoint() -> AsyncIterator[Endpoint]:
    port = free_port()
    server = Endpoint(base_url=f"http://127.0.0.1:{port}/v1")

    async def handle(request: web.Request) -> web.StreamResponse:
        server.bodies.append(await request.json())
        reply = server.answer(request)
        if asyncio.iscoroutine(reply):
            reply = await reply
        assert isinstance(reply, web.StreamResponse)
        return reply

    app = web.Application()
    app.router.add_post("/v1/chat/completions", handle)
    app.router.add_post("/v1/responses", handle)
    runner = web.AppRunner(app, shutdown_timeout=1)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield server
    finally:
        server.release.set()
        await runner.cleanup()


async def rejected(
    run_worker: RunWorker, base_url: str, policy: Policy | None = None, **settings: Any
) -> SagaResult:
    """Run one saga through the worker's own HTTP model provider; it must end rejected,
    with no step run, and the key nowhere in its state, its history or `saga status`."""
    async with run_worker(
        None, openai_api_key=KEY, openai_base_url=base_url, model="planner-x", **settings
    ) as stack:
        handle = await stack.start("apply a, then tell", policy)
        result = await handle.result()
        status_cli = await saga_status(stack, handle.id)
    assert result.status == SagaStatus.REJECTED, result
    assert status_cli.returncode == 1, status_cli
    assert f"rejected: {result.error}" in " ".join(status_cli.stdout.split()), status_cli
    assert KEY not in status_cli.stdout
    assert result.steps == [] and result.plan is None
    assert effects.log_of(stack.effects, handle.id) == []
    assert await scheduled_activities(handle) == {MODEL_ACTIVITY}
    assert KEY not in result.model_dump_json()
    assert KEY not in history_text(await handle.fetch_history())
    return result


async def scheduled_activities(handle: WorkflowHandle[Any, Any]) -> set[str]:
    names = set()
    async for event in handle.fetch_history_events():
        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            names.add(event.activity_task_scheduled_event_attributes.activity_type.name)
    return names


HTML = (
    "<!DOCTYPE html>\n<html><head><title>Sign in</title></head>\n"
    "<body><form>Corporate proxy: sign in to continue</form></body></html>\n"
)


@pytest.mark.parametrize(
    ("api", "path"), [("chat_completions", "chat/completions"), ("responses", "responses")]
)
async def test_200_with_an_html_page_is_not_an_openai_response(
    run_worker: RunWorker, endpoint: Endpoint, api: str, path: str
) -> None:
    """Before: "'tuple' object has no attribute 'choices'" (chat), "'str' object has no
    attribute 'usage'" (responses), retried as if it could heal."""
    endpoint.answer = lambda request: web.Response(text=HTML, content_type="text/html")
    result = await rejected(run_worker, endpoint.base_url, model_api=api, model_max_attempts=3)
    assert result.error == (
        f"the model endpoint {endpoint.base_url}/{path} answered 200 with something that "
        "is not an OpenAI response (text/html: '<!DOCTYPE html> <html><head><title>Sign in"
        "</title></head> <body><form>Corporate ...')"
    )
    assert len(endpoint.bodies) == 1  # not retried: a login page does not heal


async def test_200_with_other_json_is_not_an_openai_response(
    run_worker: RunWorker, endpoint: Endpoint
) -> None:
    endpoint.answer = lambda request: web.json_response({"status": "ok", "items": []})
    result = await rejected(run_worker, endpoint.base_url, model_max_attempts=3)
    assert result.error == (
        f"the model endpoint {endpoint.base_url}/chat/completions answered 200 with "
        """something that is not an OpenAI response (application/json: '{"status": "ok", """
        """"items": []}')"""
    )
    assert len(endpoint.bodies) == 1


async def test_401_says_the_servers_message_without_the_key(
    run_worker: RunWorker, endpoint: Endpoint
) -> None:
    """The server quotes the key back; the saga's error, `saga status` and the history
    show its message with the key blanked. Not retried: a wrong key does not heal."""
    endpoint.answer = lambda request: web.json_response(
        {"error": {"message": f"Incorrect API key provided: {KEY}.", "code": "invalid_api_key"}},
        status=401,
    )
    result = await rejected(run_worker, endpoint.base_url, model_max_attempts=3)
    assert result.error == (
        f"the model endpoint {endpoint.base_url}/chat/completions answered HTTP 401 "
        "Unauthorized: Incorrect API key provided: ***. (check OPENAI_API_KEY)"
    )
    assert len(endpoint.bodies) == 1


@pytest.mark.parametrize(
    ("status", "reply", "attempts", "said"),
    [
        (
            404,
            {"detail": "The model `planner-x` does not exist."},
            1,
            "HTTP 404 Not Found: The model `planner-x` does not exist. (check the model "
            "name 'planner-x', SAGA_MODEL, and OPENAI_BASE_URL)",
        ),
        (
            429,
            {"error": {"message": "Rate limit reached"}},
            2,
            "HTTP 429 Too Many Requests: Rate limit reached",
        ),
        (
            500,
            "upstream exploded: shard 3 is down\nTraceback (most recent call last): ...",
            2,
            "HTTP 500 Internal Server Error: upstream exploded: shard 3 is down",
        ),
        (
            502,
            "<html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>",
            2,
            "HTTP 502 Bad Gateway: 502 Bad Gateway nginx",
        ),
    ],
)
async def test_http_status_names_the_endpoint_status_and_message(
    run_worker: RunWorker,
    endpoint: Endpoint,
    status: int,
    reply: dict[str, Any] | str,
    attempts: int,
    said: str,
) -> None:
    """404 is not retried; 429 and 5xx are, up to the attempts, then fail with the message."""

    def answer(request: web.Request) -> web.Response:
        if isinstance(reply, dict):
            return web.json_response(reply, status=status)
        kind = "text/html" if reply.startswith("<html>") else "text/plain"
        return web.Response(text=reply, status=status, content_type=kind)

    endpoint.answer = answer
    result = await rejected(run_worker, endpoint.base_url, model_max_attempts=2)
    assert (
        result.error == f"the model endpoint {endpoint.base_url}/chat/completions answered {said}"
    )
    assert len(endpoint.bodies) == attempts


async def test_nothing_listening_is_the_model_could_not_be_reached(run_worker: RunWorker) -> None:
    base_url = f"http://127.0.0.1:{free_port()}/v1"
    result = await rejected(run_worker, base_url, model_max_attempts=2)
    assert result.error == (
        f"the model could not be reached at {base_url}: connection refused (is the server running?)"
    )


async def test_a_server_that_never_answers_times_out_with_the_endpoint(
    run_worker: RunWorker, endpoint: Endpoint
) -> None:
    async def never(request: web.Request) -> web.Response:
        await asyncio.wait_for(endpoint.release.wait(), 60)  # set at teardown
        return web.json_response({})

    endpoint.answer = never
    result = await rejected(
        run_worker, endpoint.base_url, model_timeout_seconds=1, model_max_attempts=2
    )
    assert result.error == (
        f"the model could not be reached at {endpoint.base_url}: no answer within 1 s "
        "(SAGA_MODEL_TIMEOUT_SECONDS)"
    )
    assert len(endpoint.bodies) == 2  # a time-out is retried


async def test_a_model_that_answers_invalid_plans_is_no_valid_plan(
    run_worker: RunWorker, endpoint: Endpoint
) -> None:
    """The endpoint works; the plan it returns stays invalid after the repair turn."""
    plan = {
        "steps": [{"id": "x", "action": "effects.explode", "args_json": "{}"}],
        "cannot_plan": None,
    }
    endpoint.answer = lambda request: web.json_response(chat_completion(json.dumps(plan)))
    result = await rejected(
        run_worker, endpoint.base_url, Policy(max_repairs=1), model_max_attempts=3
    )
    assert result.error == (
        "the planner found no valid plan: the model answered, but its plan was still "
        "invalid after 1 repair turn(s)"
    )
    assert any("unknown action 'effects.explode'" in p for p in result.problems), result
    assert len(endpoint.bodies) == 2  # the plan, then the repair turn
    assert "The engine rejected that plan" in json.dumps(endpoint.bodies[1]["messages"])


# -- helpers ---------------------------------------------------------------------------
def chat_completion(content: str) -> dict[str, Any]:
    return {
        "id": "chatcmpl-local",
        "object": "chat.completion",
        "created": 0,
        "model": "planner-x",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "finish_reason": "stop",
            }
        ],
    }


async def saga_status(stack: AgentStack, saga_id: str) -> subprocess.CompletedProcess[str]:
    """`saga status <id>` as a user runs it, against this test's server and queue."""
    env = dict(os.environ)
    env.update(
        SAGA_TEMPORAL_ADDRESS=stack.client.service_client.config.target_host,
        SAGA_TASK_QUEUE=stack.settings.task_queue,
        SAGA_ACTIVITIES=stack.settings.activities,
        SAGA_DATABASE_URL=stack.settings.ledger_url(),
        COLUMNS="400",
    )
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "saga", "status", saga_id],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=120,
    )
