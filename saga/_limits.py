"""What may start a saga: size and shape limits, checked at every edge before anything starts.

Temporal refuses a payload over 2 MB, and a saga's input does not travel once: the request
goes on to the model call, the plan to every step and to the saga's result and state. A
1 MB request used to pass the start and then fail the first workflow task forever
(``PayloadsTooLarge``), leaving the saga pending. These limits keep the whole input well
under the payload limit, and refuse a bigger one with one line naming the limit and the
actual size. :func:`saga.start_saga` (every start the package makes: CLI, demo, any
program) calls :func:`check_saga_input`, the CLI before it validates the plan, and the
workflow itself for a start that went around ``start_saga``.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel
from pydantic_core import to_json

from saga._errors import InputRejected
from saga._models import SagaInput, SagaMode

MAX_REQUEST_BYTES = 16 * 1024
"""A request in words (UTF-8): a few pages of text, far more than a request needs."""
MAX_PLAN_BYTES = 256 * 1024
"""A plan, as compact JSON."""
MAX_ARG_BYTES = 64 * 1024
"""One argument of one step, as compact JSON."""
MAX_INPUT_BYTES = 384 * 1024
"""Everything that starts a saga (plan, request and policy) as JSON."""
MAX_JSON_DEPTH = 32
"""How deeply a plan may nest (a plan, its steps, a step, its args: 4 levels)."""
MAX_FILE_BYTES = 1024 * 1024
"""A plan or policy file, read whole before it is parsed (indentation included)."""


AGENT_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,39}$")
"""The name of an agent a worker offers (``create_worker(agents=...)``)."""


def json_depth(value: Any) -> int:
    """How many levels of lists and objects ``value`` nests (without recursing)."""
    deepest = 0
    todo: list[tuple[Any, int]] = [(value, 1)]
    while todo:
        item, depth = todo.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list | tuple):
            children = item
        else:
            continue
        deepest = max(deepest, depth)
        if depth > MAX_JSON_DEPTH:
            return depth  # deep enough to refuse; no need to walk the rest
        todo.extend((child, depth + 1) for child in children)
    return deepest


def _size(value: Any) -> int:
    """Bytes of ``value`` as compact JSON, as the payload converter writes it."""
    return len(to_json(value, serialize_unknown=True))


def _over(what: str, size: int, limit: int) -> str:
    return f"{what} is {size:,} bytes, over the limit of {limit:,} bytes"


def _plan_problems(plan: Any) -> list[str]:
    if isinstance(plan, BaseModel):
        plan = plan.model_dump(mode="json")
    depth = json_depth(plan)
    if depth > MAX_JSON_DEPTH:
        return [f"plan nests more than {MAX_JSON_DEPTH} levels deep (the limit)"]
    size = _size(plan)
    problems = []
    if size > MAX_PLAN_BYTES:
        problems.append(_over("plan", size, MAX_PLAN_BYTES))
    steps = plan.get("steps") if isinstance(plan, dict) else None
    for n, step in enumerate(steps if isinstance(steps, list) else [], start=1):
        args = step.get("args") if isinstance(step, dict) else None
        if not isinstance(args, dict):
            continue
        sid = step.get("id")
        label = f"step {sid!r}" if isinstance(sid, str) and sid else f"step {n}"
        for name, value in args.items():
            arg_size = _size(value)
            if arg_size > MAX_ARG_BYTES:
                problems.append(_over(f"{label}: args.{name}", arg_size, MAX_ARG_BYTES))
    return problems


def saga_input_problems(inp: SagaInput) -> list[str]:
    """Every way ``inp`` breaks the limits, one line each; empty when it may start."""
    problems: list[str] = []
    if inp.plan is None and inp.request is None:
        problems.append("nothing to do: give a plan or a request")
    if inp.request is not None:
        if not inp.request.strip():
            problems.append("the request is empty")
        size = len(inp.request.encode("utf-8", "surrogatepass"))
        if size > MAX_REQUEST_BYTES:
            problems.append(_over("request", size, MAX_REQUEST_BYTES))
    if inp.plan is not None:
        problems += _plan_problems(inp.plan)
    if inp.agent is not None:
        if inp.mode is not SagaMode.ACT:
            problems.append(f"agent {inp.agent[:40]!r}: an agent of your own needs mode act")
        elif not AGENT_NAME.match(inp.agent):
            problems.append(f"agent {inp.agent[:40]!r}: a name of 1-40 of a-z, 0-9, '-', '_'")
    if not problems:
        total = len(inp.model_dump_json().encode())
        if total > MAX_INPUT_BYTES:
            problems.append(_over("the saga's input", total, MAX_INPUT_BYTES))
    return problems


def check_saga_input(inp: SagaInput) -> None:
    """Raise :class:`InputRejected` unless ``inp`` is within every limit."""
    problems = saga_input_problems(inp)
    if problems:
        raise InputRejected(problems)
