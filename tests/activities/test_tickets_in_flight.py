"""An undo must not look for a ticket too soon: a create that got no answer may still
land in Redmine after its attempt stopped waiting (the saga was cancelled mid-request, or
the worker died), and the undo then waits for it instead of finding nothing and leaving
the late issue open. Seen in the chaos test: a cancelled saga left issue 300 open.

Redmine is real; in front of it, a small HTTP proxy holds each create for a few seconds
and delivers it whether or not the client is still there, as a busy Redmine does.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Coroutine
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import Engine
from temporalio.client import Client

from saga import SagaStatus, start_saga, wait_saga
from tests.activities.test_tickets import _worker, issue, issues_marked, ticket_step
from tests.conftest import unique
from tests.servers.redmine import RedmineServer

HOLD = 4.0


class SlowCreates:
    """An HTTP/1.1 proxy to Redmine that holds every ``POST /issues.json`` for ``hold``
    seconds, then sends it on even when the client has gone (cancelled, timed out)."""

    def __init__(self, upstream: str, hold: float) -> None:
        self.upstream = upstream
        self.hold = hold
        self.held = asyncio.Event()
        self.landed: list[int] = []
        self.url = ""
        self._tasks: set[asyncio.Task[bytes]] = set()

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[SlowCreates]:
        async with httpx.AsyncClient(base_url=self.upstream, timeout=30) as http:
            self._http = http
            server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
            self.url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
            try:
                yield self
            finally:
                server.close()
                for task in self._tasks:
                    task.cancel()
                await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
            method, path, _ = head[0].split(" ", 2)
            headers = dict(line.split(": ", 1) for line in head[1:] if ": " in line)
            length = int(next((v for k, v in headers.items() if k.lower() == "content-length"), 0))
            body = await reader.readexactly(length) if length else b""
            keep = {k: v for k, v in headers.items() if k.lower() not in ("host", "connection")}
            send = self._send(method, path, keep, body)
            if method == "POST" and path.startswith("/issues.json"):
                self.held.set()
                # The create goes on in a task of its own: Redmine finishes it even if the
                # client is gone by then.
                task = asyncio.create_task(self._late(send))
                self._tasks.add(task)
                response = await asyncio.shield(task)
            else:
                response = await send
            writer.write(response)
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def _late(self, send: Coroutine[Any, Any, bytes]) -> bytes:
        await asyncio.sleep(self.hold)
        return await send

    async def _send(self, method: str, path: str, headers: dict[str, str], body: bytes) -> bytes:
        answer = await self._http.request(method, path, headers=headers, content=body)
        if method == "POST" and answer.status_code == 201:
            self.landed.append(int(answer.json()["issue"]["id"]))
        lines = [f"HTTP/1.1 {answer.status_code} {answer.reason_phrase}"]
        lines += ["Content-Type: application/json", f"Content-Length: {len(answer.content)}"]
        lines += ["Connection: close", "", ""]
        return "\r\n".join(lines).encode() + answer.content


async def test_an_undo_after_a_create_with_no_answer_waits_for_the_late_issue(
    client: Client, redmine: RedmineServer, effects_engine: Engine, tmp_path: Path
) -> None:
    async with (
        SlowCreates(redmine.url, HOLD).running() as proxy,
        _worker(
            client,
            RedmineServer(proxy.url, redmine.api_key),
            tmp_path,
            redmine_create_timeout=6.0,
        ) as stack,
        httpx.AsyncClient(
            base_url=redmine.url, headers={"X-Redmine-API-Key": redmine.api_key}, timeout=15
        ) as rest,
    ):
        sid = unique("in-flight")
        await start_saga(
            client, {"steps": [ticket_step()]}, saga_id=sid, task_queue=stack.settings.task_queue
        )
        await asyncio.wait_for(proxy.held.wait(), 30)
        await client.get_workflow_handle(sid).cancel()  # mid-request: no answer comes
        result = await wait_saga(client, sid)
        for task in list(proxy._tasks):  # the held create lands, if it has not yet
            await task
        assert result.status == SagaStatus.CANCELLED, result
        assert len(proxy.landed) == 1
        assert await issues_marked(rest, sid, "t") == proxy.landed
        late = await issue(rest, str(proxy.landed[0]))
        assert late is not None
        assert late["status"]["name"] == "Closed", late["status"]
        step = stack.ledger.step(f"{sid}/t")
        assert step is not None and step.compensation_status == "compensated"
        assert step.attempts == 1  # the cancel stopped the step: no second create
