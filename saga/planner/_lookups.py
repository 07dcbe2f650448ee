"""The planner's look-ups: the catalog's read-only actions, offered to the model as tools.

Before it proposes a plan the model may look at the world: stock and prices, a
customer's saved cards, open tickets. Each call goes through the caller's ``LookupRunner``
(in the saga workflow: checked by a worker like any step, then run as an activity
recorded in history and in the ledger), so a look-up is never repeated on replay and
never reaches anything but a read-only catalog action. What comes back is data for the
model, not instructions: it is bounded here, and the rules say so.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from agents import Agent, FunctionTool, ModelResponse, RunContextWrapper, RunHooks
from openai.types.responses import ResponseFunctionToolCall, ResponseOutputMessage

LookupRunner = Callable[[str, dict[str, Any]], Awaitable[dict[str, Any]]]
"""Runs one look-up ``(action, args)``; answers ``{"result": ...}`` or ``{"error": ...}``."""

MAX_ANSWER_CHARS = 4000
"""What the model reads of one look-up's answer, at most."""


def tool_name(action: str) -> str:
    """The tool's name for ``action``: tool names allow no dot (``inventory__product``)."""
    return action.replace(".", "__")


def answer_text(key: str, action: str, answer: dict[str, Any]) -> str:
    """What the model reads of one tool call: ``{key: action, **answer}`` as JSON, cut to
    :data:`MAX_ANSWER_CHARS` as valid JSON (``truncated`` and the start of the text)."""
    text = json.dumps({key: action, **answer}, sort_keys=True, default=str)
    if len(text) > MAX_ANSWER_CHARS:
        text = json.dumps({key: action, "truncated": True, "text": text[: MAX_ANSWER_CHARS - 100]})
    return text


def catalog_tool(
    described: dict[str, Any],
    description: str,
    key: str,
    run: Callable[[dict[str, Any]], Awaitable[dict[str, Any]]],
    refusal: Callable[[], str | None] = lambda: None,
) -> FunctionTool:
    """The catalog action ``described`` as a tool: its arguments (a JSON object, else an
    error for the model) go to ``run``, whose answer the model reads as
    :func:`answer_text` under ``key``. ``refusal``, asked first, may refuse the call."""
    action = str(described["action"])

    async def invoke(_ctx: RunContextWrapper[Any], args_json: str) -> str:
        refused = refusal()
        if refused is not None:
            return answer_text(key, action, {"error": refused})
        try:
            args = json.loads(args_json) if args_json.strip() else {}
        except json.JSONDecodeError as exc:
            return answer_text(key, action, {"error": f"arguments are not JSON ({exc.msg})"})
        if not isinstance(args, dict):
            return answer_text(key, action, {"error": "arguments must be a JSON object"})
        return answer_text(key, action, await run(args))

    return FunctionTool(
        name=tool_name(action),
        description=f"{description}: {described.get('description', '')}",
        params_json_schema=described.get("args_schema") or {"type": "object"},
        on_invoke_tool=invoke,
        strict_json_schema=False,
    )


class Lookups:
    """The read-only actions among ``actions`` (catalog descriptions) as tools, with a
    budget of ``budget`` calls for one planning turn and everything after it."""

    def __init__(self, actions: list[dict[str, Any]], run: LookupRunner, budget: int) -> None:
        self._run = run
        self.budget = budget
        self.calls = 0
        self.tools: list[FunctionTool] = [
            catalog_tool(a, "Look-up (changes nothing)", "lookup", self._runner(a), self._spent)
            for a in actions
            if a.get("kind") == "read_only" and budget > 0
        ]

    def _spent(self) -> str | None:
        if self.calls < self.budget:
            return None
        return (
            f"refused: the policy allows {self.budget} look-up(s) and they are spent; "
            "return your plan now"
        )

    def _runner(
        self, described: dict[str, Any]
    ) -> Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]:
        action = str(described["action"])

        async def run(args: dict[str, Any]) -> dict[str, Any]:
            self.calls += 1
            return await self._run(action, args)

        return run


class TurnLog(RunHooks[Any]):
    """Tells ``sink`` what the model did on each turn: the tools it called (with their
    arguments) and what it said, one line per model call, bounded."""

    def __init__(self, sink: Callable[[str], None]) -> None:
        self._sink = sink

    async def on_llm_end(
        self, context: RunContextWrapper[Any], agent: Agent[Any], response: ModelResponse
    ) -> None:
        parts: list[str] = []
        for item in response.output:
            if isinstance(item, ResponseFunctionToolCall):
                parts.append(f"calls {item.name} {item.arguments[:200]}")
            elif isinstance(item, ResponseOutputMessage):
                text = "".join(getattr(c, "text", "") or "" for c in item.content)
                parts.append(f"says {text[:300]!r}")
        self._sink("; ".join(parts) or "(no output)")
