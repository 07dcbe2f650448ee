"""Your own agent in act mode: agents a worker offers by name (``create_worker(agents=)``).

A saga started with ``mode=act`` and ``agent="<name>"`` runs that agent instead of the
built-in one, inside the saga workflow. Its factory gets the saga's tools (the catalog's
look-ups, and its writes, each call a compensable saga step) and the built-in
instructions (the catalog, the policy, the rules), and returns an OpenAI Agents SDK
``Agent`` with your name, instructions, model settings and tools of your own. Your tools
run in workflow code: deterministic, or an activity (``activity_as_tool``).

With ``output_type=saga.ActOutput`` the agent can give up (``done=False``: everything is
undone); any other output ends the run as done, its text the answer.

Workflow code reads the registry, so this module is passed through the sandbox: one
registry per worker process, by task queue. Every worker of a queue must offer the same
agents (a replay runs the factory again).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from agents import Agent, Tool

from saga._errors import SagaError
from saga._limits import AGENT_NAME

AgentFactory = Callable[[list[Tool], str], Agent[Any]]
"""``(tools, instructions) -> Agent``: your agent, given the saga's tools and the
built-in instructions."""

_offered: dict[str, dict[str, AgentFactory]] = {}


def offer(task_queue: str, agents: Mapping[str, AgentFactory]) -> None:
    """Offer ``agents`` by name to act-mode sagas on ``task_queue`` (a worker's start)."""
    for name, factory in agents.items():
        if not AGENT_NAME.match(name):
            raise SagaError(f"agent name {name!r}: use 1-40 of a-z, 0-9, '-', '_'")
        if not callable(factory):
            raise SagaError(f"agent {name!r}: a factory (tools, instructions) -> Agent")
    _offered.setdefault(task_queue, {}).update(agents)


def offered(task_queue: str, name: str) -> AgentFactory | None:
    return _offered.get(task_queue, {}).get(name)
