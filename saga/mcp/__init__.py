"""`saga mcp`: the catalog and the engine as an MCP server, so that any agent (Claude
Desktop, Cursor, the OpenAI Agents SDK, ...) can discover, check, start, watch and cancel
sagas; each saga's live state is the resource ``saga://ID``.

Importing ``saga.mcp`` imports neither the MCP SDK nor Temporal: names load on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from saga.mcp._server import create_server as create_server
    from saga.mcp._serving import serve_stdio as serve_stdio
    from saga.mcp._serving import serving_http as serving_http

_EXPORTS = {
    "create_server": "saga.mcp._server",
    "serve_stdio": "saga.mcp._serving",
    "serving_http": "saga.mcp._serving",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'saga.mcp' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
