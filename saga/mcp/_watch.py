"""Change notifications for ``saga://ID``: which sagas clients listen to, and the loop
that tells them when one changes.

Both ways MCP clients subscribe are served: ``subscriptions/listen`` (protocol
2026-07-28, what the SDK's client and openai-agents speak) and ``resources/subscribe``
(2025-11-25 and older). Only sagas someone listens to are looked at, once per
``poll_seconds``; a change of the saga's state (its status, a step, an undo) is
published as ``notifications/resources/updated`` for its URI. Subscribing takes the
saga's state as it is then, so every later change is told.
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import TYPE_CHECKING, Any

import anyio
import mcp_types as types
from mcp.server.subscriptions import InMemorySubscriptionBus, ListenHandler, ResourceUpdated

from saga._errors import SagaError

if TYPE_CHECKING:
    from mcp.server.mcpserver import MCPServer

    from saga.mcp._operations import Operations

log = logging.getLogger("saga.mcp")
PREFIX = "saga://"
RECENT = 20
"""How many of the newest sagas `resources/list` names."""


def saga_of(uri: str) -> str | None:
    return uri[len(PREFIX) :] if uri.startswith(PREFIX) and len(uri) > len(PREFIX) else None


class Watch:
    """The sagas clients listen to, and what each looked like last."""

    def __init__(self, ops: Operations, *, poll_seconds: float = 1.0) -> None:
        self.ops = ops
        self.poll_seconds = poll_seconds
        self.bus = InMemorySubscriptionBus()
        self._listens: Counter[str] = Counter()
        self._sessions: dict[str, set[Any]] = {}
        self._seen: dict[str, str] = {}

    def watched(self) -> set[str]:
        return {s for s, n in self._listens.items() if n > 0} | {
            s for s, sessions in self._sessions.items() if sessions
        }

    async def _state(self, saga_id: str) -> str:
        try:
            view = await (await self.ops.service()).view(saga_id)
        except SagaError as exc:
            return f"unknown: {exc}"
        return view.model_dump_json()

    async def _baseline(self, saga_ids: list[str]) -> None:
        for saga_id in saga_ids:
            if saga_id not in self._seen:
                self._seen[saga_id] = await self._state(saga_id)

    async def publish(self, saga_id: str) -> None:
        uri = f"{PREFIX}{saga_id}"
        await self.bus.publish(ResourceUpdated(uri=uri))
        for session in list(self._sessions.get(saga_id, ())):
            try:
                await session.send_resource_updated(uri)
            except Exception:  # a session that has gone: forget it
                self._sessions[saga_id].discard(session)

    async def look(self) -> int:
        """Look at each watched saga once; returns how many changed (and were told)."""
        watched = self.watched()
        for gone in set(self._seen) - watched:
            del self._seen[gone]
        changed = 0
        for saga_id in sorted(watched):
            state = await self._state(saga_id)
            if self._seen.get(saga_id) != state:
                self._seen[saga_id] = state
                changed += 1
                await self.publish(saga_id)
        return changed

    async def run(self) -> None:
        while True:
            await anyio.sleep(self.poll_seconds)
            try:
                await self.look()
            except Exception:
                log.exception("watching sagas for subscribers failed; trying again")

    # -- the protocol's handlers ---------------------------------------------------------
    def install(self, server: MCPServer[Any]) -> None:
        """Serve listen, subscribe, unsubscribe and the list of recent sagas on
        ``server`` (through its low-level server, where the SDK registers them)."""
        lowlevel = server._lowlevel_server
        listen = ListenHandler(self.bus)

        async def on_listen(
            ctx: Any, params: types.SubscriptionsListenRequestParams
        ) -> types.SubscriptionsListenResult:
            uris = params.notifications.resource_subscriptions or []
            ids = [s for s in (saga_of(str(u)) for u in uris) if s]
            await self._baseline(ids)
            self._listens.update(ids)
            try:
                return await listen(ctx, params)
            finally:
                self._listens.subtract(ids)

        async def on_subscribe(ctx: Any, params: types.SubscribeRequestParams) -> types.EmptyResult:
            saga_id = saga_of(str(params.uri))
            if saga_id is not None:
                await self._baseline([saga_id])
                session = ctx.session
                self._sessions.setdefault(saga_id, set()).add(session)
                # A closed connection ends its subscriptions (sending to it raises nothing).
                stack = getattr(getattr(session, "_connection", None), "exit_stack", None)
                if stack is not None:
                    stack.callback(lambda: self._sessions.get(saga_id, set()).discard(session))
            return types.EmptyResult()

        async def on_unsubscribe(
            ctx: Any, params: types.UnsubscribeRequestParams
        ) -> types.EmptyResult:
            saga_id = saga_of(str(params.uri))
            if saga_id is not None:
                self._sessions.get(saga_id, set()).discard(ctx.session)
            return types.EmptyResult()

        async def on_list(
            ctx: Any, params: types.PaginatedRequestParams | None
        ) -> types.ListResourcesResult:
            rows = await self.ops.list(statuses=[], words=None, min_amount=None, limit=RECENT)
            return types.ListResourcesResult(
                resources=[
                    types.Resource(
                        uri=f"{PREFIX}{row.saga_id}",
                        name=row.saga_id,
                        title=f"{row.saga_id}: {row.summary or row.request or 'saga'}",
                        description=f"{row.status.value if row.status else row.execution}",
                        mime_type="application/json",
                    )
                    for row in rows
                ]
            )

        lowlevel.add_request_handler(
            "subscriptions/listen", types.SubscriptionsListenRequestParams, on_listen
        )
        lowlevel.add_request_handler(
            "resources/subscribe", types.SubscribeRequestParams, on_subscribe
        )
        lowlevel.add_request_handler(
            "resources/unsubscribe", types.UnsubscribeRequestParams, on_unsubscribe
        )
        lowlevel.add_request_handler("resources/list", types.PaginatedRequestParams, on_list)
