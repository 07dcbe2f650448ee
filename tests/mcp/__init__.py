"""`saga mcp` through the official MCP client, over stdio and HTTP, against `saga dev`."""

from __future__ import annotations

import json
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from mcp import Client, StdioServerParameters
from mcp_types import CallToolResult

from tests.mcp.conftest import ROOT, Dev


@asynccontextmanager
async def over_stdio(dev: Dev, **env: str) -> AsyncIterator[Client]:
    """`saga mcp` started by the client, as a desktop client starts it."""
    params = StdioServerParameters(
        command=sys.executable, args=["-m", "saga", "mcp"], cwd=str(ROOT), env=dev.env(**env)
    )
    async with Client(params, cache=None) as client:
        yield client


def answer(result: CallToolResult) -> Any:
    """A successful tool result's structured answer (the text holds the same JSON)."""
    assert not result.is_error, text(result)
    structured = result.structured_content
    assert structured is not None
    shown = [json.loads(getattr(block, "text", "")) for block in result.content]
    if list(structured) == ["result"]:  # a list: one text block per item
        assert shown == structured["result"]
    else:
        assert shown == [structured]
    return structured


def text(result: CallToolResult) -> str:
    return "\n".join(getattr(block, "text", "") for block in result.content)
