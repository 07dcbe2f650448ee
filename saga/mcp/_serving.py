"""`saga mcp`: the server over stdio (for desktop clients, which start it themselves)
or over streamable HTTP at ``/mcp``, where every request needs a token, as the web app
does: ``Authorization: Bearer`` with the bootstrap ``SAGA_WEB_TOKEN`` or a person's own
token (``saga people add``); each tool then runs with that person's role.

Over stdio the server runs as the local user, like the command line: whoever can start
it can reach Temporal and the ledger anyway.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

from mcp.server.mcpserver import MCPServer
from starlette.types import ASGIApp, Receive, Scope, Send

from saga._audit import cli_identity
from saga._people import Person, Role
from saga._settings import Settings
from saga.cli._loading import load_catalog, load_policy
from saga.mcp._operations import Caller, Operations
from saga.mcp._server import CALLER, create_server
from saga.web._auth import Brake, Guard
from saga.web._decisions import Decisions

log = logging.getLogger("saga.mcp")
PATH = "/mcp"
UNAUTHORIZED = -32001


def operations(settings: Settings) -> Operations:
    """The tools' work, with the catalog of SAGA_ACTIVITIES and SAGA_POLICY_FILE."""
    load_catalog(settings)
    return Operations(settings, load_policy(settings))


def local_caller() -> Caller:
    """Over stdio: the local user, with the command line's rights."""
    return Caller(Person(name=cli_identity(), role=Role.ADMIN))


async def serve_stdio(ops: Operations, *, poll_seconds: float = 1.0) -> None:
    server = create_server(ops, local_caller(), poll_seconds=poll_seconds)
    await server.run_stdio_async()


class TokenGate:
    """The ASGI app in front of the MCP endpoint: a request without a valid token gets
    401 (a JSON-RPC error, so MCP clients show its message), wrong tokens are slowed and
    recorded; a valid one names the caller of the tools it calls."""

    def __init__(self, app: ASGIApp, guard: Guard, brake: Brake, decisions: Decisions) -> None:
        self.app, self.guard, self.brake, self.decisions = app, guard, brake, decisions

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # lifespan: starts the SDK's session manager
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        scheme, _, value = headers.get(b"authorization", b"").decode("latin-1").partition(" ")
        person = None
        if scheme.lower() == "bearer":
            person = await self.guard.person_of_token(value.strip())
        if person is None:
            if value:
                await self._refused(scope)
            await _unauthorized(send, "a token is required: Authorization: Bearer <token>"
                                if not value else "that token is not valid")  # fmt: skip
            return
        reset = CALLER.set(Caller(person))
        try:
            await self.app(scope, receive, send)
        finally:
            CALLER.reset(reset)

    async def _refused(self, scope: Scope) -> None:
        client = (scope.get("client") or ("?",))[0]
        await self.decisions.refused_login(client, "mcp")
        await self.brake.failed(client)


async def _unauthorized(send: Send, message: str) -> None:
    body = json.dumps(
        {"jsonrpc": "2.0", "id": None, "error": {"code": UNAUTHORIZED, "message": message}}
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 401,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"www-authenticate", b"Bearer"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def http_app(
    server: MCPServer[Any], ops: Operations, token: str, *, host: str = "127.0.0.1"
) -> TokenGate:
    """The MCP endpoint at ``/mcp`` behind the token gate. Bound to a loopback ``host``,
    the SDK also refuses requests naming another host (DNS rebinding)."""
    guard = Guard(token, ops.ledger.people)
    inner = server.streamable_http_app(streamable_http_path=PATH, host=host)
    return TokenGate(inner, guard, Brake(), Decisions(ops.ledger))


@contextlib.asynccontextmanager
async def serving_http(
    ops: Operations, host: str, port: int, token: str, *, poll_seconds: float = 1.0
) -> AsyncIterator[str]:
    """Serve over HTTP until the block ends; yields the endpoint's URL."""
    import asyncio

    import uvicorn

    server = create_server(ops, None, poll_seconds=poll_seconds)
    app = http_app(server, ops, token, host=host)
    web = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning"))
    task = asyncio.create_task(web.serve())
    try:
        while not web.started and not task.done():  # noqa: ASYNC110 - uvicorn has no event
            await asyncio.sleep(0.05)
        if task.done():
            task.result()  # the reason it could not start
            raise RuntimeError(f"the MCP server did not start on {host}:{port}")
        yield f"http://{host}:{port}{PATH}"
    finally:
        web.should_exit = True
        await task
