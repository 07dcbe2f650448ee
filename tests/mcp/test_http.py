"""`saga mcp --http`: streamable HTTP behind a token, as the web app is. Each person's
token carries their role; a missing or wrong token is refused before any tool runs."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import httpx2
import pytest
from mcp import Client, MCPError
from mcp.client.streamable_http import streamable_http_client

from saga import free_port
from tests.conftest import unique
from tests.mcp import answer, text
from tests.mcp.conftest import ROOT, Dev, order_plan

TOKEN = "bootstrap-token-for-mcp-tests"


@dataclass
class Http:
    url: str
    viewer: str
    operator: str


def _add(dev: Dev, name: str, role: str) -> str:
    added = subprocess.run(
        [sys.executable, "-m", "saga", "people", "add", name, "--role", role],
        env=dev.env(), cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    match = re.search(r"saga_\S+", added.stdout)
    assert match is not None, added.stdout
    return match.group(0)


@pytest.fixture(scope="module")
def http(dev: Dev, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Http]:
    viewer = _add(dev, unique("bo"), "viewer")
    operator = _add(dev, unique("ops"), "operator")
    port = free_port()
    log = tmp_path_factory.mktemp("mcp-http") / "mcp.out"
    proc = subprocess.Popen(
        [sys.executable, "-m", "saga", "mcp", "--http", "--port", str(port)],
        env=dev.env(SAGA_WEB_TOKEN=TOKEN), cwd=ROOT, stdout=log.open("w"),
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while "saga mcp on" not in log.read_text():
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        yield Http(f"http://127.0.0.1:{port}/mcp", viewer, operator)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0, Path(log).read_text()


@asynccontextmanager
async def over_http(url: str, token: str | None) -> AsyncIterator[Client]:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    transport = streamable_http_client(url, http_client=httpx2.AsyncClient(headers=headers))
    async with Client(transport, cache=None) as client:
        yield client


def _mcp_errors(group: BaseException) -> list[MCPError]:
    if isinstance(group, MCPError):
        return [group]
    if isinstance(group, BaseExceptionGroup):
        return [e for sub in group.exceptions for e in _mcp_errors(sub)]
    return []


async def _refused(url: str, token: str | None) -> str:
    try:
        async with over_http(url, token):
            pass
    except BaseException as exc:
        [error] = _mcp_errors(exc)
        assert error.error.code == -32001
        return error.error.message
    raise AssertionError("connected without a valid token")


async def test_a_missing_or_wrong_token_is_refused(dev: Dev, http: Http) -> None:
    async with httpx.AsyncClient() as plain:
        bare = await plain.post(http.url, json={"jsonrpc": "2.0", "id": 1, "method": "ping"})
    assert bare.status_code == 401
    assert bare.headers["www-authenticate"] == "Bearer"
    assert bare.json()["error"]["message"].startswith("a token is required")
    assert await _refused(http.url, None) == ("a token is required: Authorization: Bearer <token>")
    assert await _refused(http.url, "saga_not-a-token") == "that token is not valid"
    refusals = [e for e in dev.trail() if e.action == "login" and e.via == "mcp"]
    assert refusals and refusals[-1].outcome == "refused: not a valid token"


async def test_each_token_acts_with_its_persons_role(dev: Dev, http: Http) -> None:
    sku = dev.product(stock=5)
    refused_id, saga_id = unique("mcp-viewer"), unique("mcp-http")
    async with over_http(http.url, http.viewer) as client:
        tools = await client.list_tools()
        assert len(tools.tools) == 7
        assert answer(await client.call_tool("list_actions"))["result"]
        start = await client.call_tool(
            "start_saga", {"plan": order_plan(sku), "saga_id": refused_id}
        )
        assert start.is_error
        assert re.fullmatch(
            r"forbidden: bo-\w+ is a viewer; start needs the role operator or admin", text(start)
        ), text(start)
    async with over_http(http.url, http.operator) as client:
        answer(await client.call_tool("start_saga", {"plan": order_plan(sku), "saga_id": saga_id}))
        waited = answer(
            await client.call_tool("wait_saga", {"saga_id": saga_id, "timeout_seconds": 60})
        )
        assert waited["status"] == "completed", waited
    async with over_http(http.url, TOKEN) as client:  # the bootstrap admin reads it too
        status = answer(await client.call_tool("saga_status", {"saga_id": saga_id}))
        assert status["status"] == "completed"
    [intent] = await dev.charges(saga_id)
    assert intent.status == "succeeded"
    assert dev.stock(sku) == 3
    assert await dev.charges(refused_id) == []
    [refused] = dev.trail(refused_id)
    [started] = dev.trail(saga_id)
    assert refused.who.startswith("bo-") and refused.outcome.startswith("refused: forbidden")
    assert (started.who[:4], started.via, started.outcome) == ("ops-", "mcp", "done")
