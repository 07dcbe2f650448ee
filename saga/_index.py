"""The saga's own status, summary, request and amount as Temporal search attributes.

So that `saga list --status needs_attention`, the web list's filter and Temporal's own UI
find sagas by what they are, not by the workflow's status (a compensated saga's workflow
reads "Completed"). The attributes must be registered on the namespace: `saga dev`
registers them on its embedded server, `docker/compose.yaml` at start-up, and a worker
that finds them missing registers them itself when the server lets it (else it logs the
``temporal operator search-attribute create`` commands). A worker tells each saga which
of them the server has (in its recorded check answer); a saga on a server without them
is simply not indexed.

Search attributes are stored in the clear: the request and the summary are masked
(emails, card numbers) before they are indexed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import (
    AddSearchAttributesRequest,
    ListSearchAttributesRequest,
)
from temporalio.client import Client
from temporalio.common import SearchAttributeKey
from temporalio.service import RPCError

log = logging.getLogger("saga.index")

STATUS = SearchAttributeKey.for_keyword("SagaStatus")
SUMMARY = SearchAttributeKey.for_text("SagaSummary")
REQUEST = SearchAttributeKey.for_text("SagaRequest")
AMOUNT = SearchAttributeKey.for_int("SagaAmount")
CURRENCY = SearchAttributeKey.for_keyword("SagaCurrency")
KEYS: dict[str, SearchAttributeKey[Any]] = {
    k.name: k for k in (STATUS, SUMMARY, REQUEST, AMOUNT, CURRENCY)
}
_TYPES = {
    "SagaStatus": ("Keyword", IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD),
    "SagaSummary": ("Text", IndexedValueType.INDEXED_VALUE_TYPE_TEXT),
    "SagaRequest": ("Text", IndexedValueType.INDEXED_VALUE_TYPE_TEXT),
    "SagaAmount": ("Int", IndexedValueType.INDEXED_VALUE_TYPE_INT),
    "SagaCurrency": ("Keyword", IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD),
}
MAX_REQUEST_CHARS = 2000


def server_args() -> list[str]:
    """``temporal server start-dev`` flags that register the attributes."""
    return [
        a for name, (kind, _) in _TYPES.items() for a in ("--search-attribute", f"{name}={kind}")
    ]


def create_commands(namespace: str = "default") -> list[str]:
    """The ``temporal operator`` commands that register them on another server."""
    return [
        f"temporal operator search-attribute create --namespace {namespace} "
        f"--name {name} --type {kind}"
        for name, (kind, _) in _TYPES.items()
    ]


async def registered(client: Client) -> list[str]:
    """Which of the attributes the client's namespace has, with the right type."""
    answer = await client.operator_service.list_search_attributes(
        ListSearchAttributesRequest(namespace=client.namespace)
    )
    have = answer.custom_attributes
    return sorted(n for n, (_, kind) in _TYPES.items() if have.get(n) == kind)


async def register(client: Client) -> list[str]:
    """Register the attributes the namespace lacks; returns the names it added."""
    missing = {n: kind for n, (_, kind) in _TYPES.items() if n not in await registered(client)}
    if missing:
        await client.operator_service.add_search_attributes(
            AddSearchAttributesRequest(namespace=client.namespace, search_attributes=missing)
        )
    return sorted(missing)


class Availability:
    """A worker's cached answer to "which attributes does the server have?"; a failed or
    partial answer is asked again after ``retry_after`` seconds."""

    def __init__(self, retry_after: float = 60.0) -> None:
        self._names: list[str] | None = None
        self._asked = 0.0
        self._retry_after = retry_after
        self._lock = asyncio.Lock()

    async def names(self, client: Client) -> list[str]:
        async with self._lock:
            stale = time.monotonic() - self._asked > self._retry_after
            if self._names is None or (len(self._names) < len(_TYPES) and stale):
                self._asked = time.monotonic()
                self._names = await self._ask(client)
            return list(self._names)

    async def _ask(self, client: Client) -> list[str]:
        try:
            names = await registered(client)
            if len(names) < len(_TYPES):
                added = await register(client)
                log.info("registered search attributes %s on %s", added, client.namespace)
                names = await registered(client)
        except RPCError as exc:
            log.warning(
                "sagas are not indexed (saga list cannot filter by status): the saga search "
                "attributes are missing and could not be registered (%s); register them: %s",
                exc.message,
                "; ".join(create_commands(client.namespace)),
            )
            return []
        return names
