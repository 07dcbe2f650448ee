"""The MCP server: the catalog and the engine as tools, each saga's live state as a
resource (``saga://ID``) with change notifications.

Built on the official SDK's ``MCPServer``. A refused call is a tool result with
``isError`` and one line per problem, the same lines as the command line's; nothing
ran. Approval is not a tool: a plan that needs one waits for a person, and the answer
says so with a link to the saga's page.
"""

from __future__ import annotations

import contextvars
import functools
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Annotated, Any, Literal, ParamSpec, TypeVar, cast

import anyio
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import (
    ResourceNotFoundError,
    ToolError,
    UnexpectedToolError,
)
from mcp_types import CallToolResult, InputRequiredResult, TextContent, ToolAnnotations
from pydantic import Field, ValidationError
from temporalio.service import RPCError

from saga._errors import SagaError
from saga._models import SagaMode
from saga._problems import problem_lines
from saga.mcp._answers import ActionInfo, PlanCheck, SagaAnswer, Started
from saga.mcp._operations import Caller, Operations, ToolRefused
from saga.mcp._watch import Watch
from saga.web._service import SagaNotFound, SagaSummary

log = logging.getLogger("saga.mcp")
P = ParamSpec("P")
T = TypeVar("T")

CALLER: contextvars.ContextVar[Caller | None] = contextvars.ContextVar("saga_caller", default=None)
"""Who calls: set per HTTP request from its token; unset over stdio (the local user)."""

INSTRUCTIONS = """\
Sagas: multi-step changes to real systems (payments, stock, tickets, email) that end
fully done or fully undone. list_actions shows what a plan may do and how each step is
undone; validate_plan checks a plan without any effect; start_saga runs a plan (or a
request in words, which the saga's planner turns into one) and answers at once with its
id; wait_saga follows it until it ends or needs a person; cancel_saga undoes what it did,
in reverse order. A plan the policy wants a person to approve waits on its page: tell
the user the link; there is no tool to approve it. Each saga is also the resource
saga://ID, which changes as it runs."""


def refused(lines: list[str]) -> CallToolResult:
    """A tool result saying, one line per problem, why nothing happened."""
    return CallToolResult(content=[TextContent(type="text", text="\n".join(lines))], is_error=True)


def _answering(fn: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
    """A tool whose refusals (bad input, policy, unknown saga, Temporal down) become
    ``isError`` results of one line per problem; anything else is logged in full and
    answered in one line."""

    @functools.wraps(fn)
    async def tool(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await fn(*args, **kwargs)
        except (SagaError, ValueError, RPCError) as exc:  # refusals, bad input
            return cast(T, refused(problem_lines(exc)))
        except Exception as exc:
            log.exception("tool %s failed", fn.__name__)
            return cast(T, refused([f"failed: {' '.join(str(exc).splitlines())}"]))

    return tool


class _SagaServer(MCPServer[Any]):
    """Arguments that do not fit a tool's schema are answered like every other refusal:
    one line per problem, naming the argument, never echoing its value."""

    async def call_tool(
        self, name: str, arguments: dict[str, Any], context: Context[Any, Any] | None = None
    ) -> CallToolResult | InputRequiredResult:
        try:
            return await super().call_tool(name, arguments, context)
        except ToolError as exc:
            cause = exc.__cause__
            if not isinstance(cause, ValidationError) or isinstance(exc, UnexpectedToolError):
                raise
            return refused(
                [
                    f"{name}: {'.'.join(str(p) for p in e['loc']) or 'arguments'}: {e['msg']}"
                    for e in cause.errors()
                ]
            )


_READS = ToolAnnotations(read_only_hint=True, idempotent_hint=True, open_world_hint=False)


def create_server(
    ops: Operations, local: Caller | None, *, poll_seconds: float = 1.0
) -> MCPServer[Any]:
    """The MCP server over ``ops``. ``local`` calls the tools when no token named a
    caller (stdio: the local user, like the command line; HTTP: nobody)."""
    watch = Watch(ops, poll_seconds=poll_seconds)

    def caller() -> Caller:
        who = CALLER.get() or local
        if who is None:
            raise ToolRefused(["no caller: a token is required"])
        return who

    @asynccontextmanager
    async def lifespan(server: MCPServer[Any]) -> AsyncIterator[dict[str, Any]]:
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(watch.run)
            yield {}
            tasks.cancel_scope.cancel()

    server: MCPServer[Any] = _SagaServer(
        "saga",
        title="Sagas: changes that end fully done or fully undone",
        instructions=INSTRUCTIONS,
        version="1",
        lifespan=lifespan,
        subscriptions=watch.bus,
    )
    watch.install(server)

    @server.tool(title="What a plan may do", annotations=_READS)
    @_answering
    async def list_actions() -> list[ActionInfo]:
        """Every action a plan may name: its arguments (JSON schema), its kind
        (compensable, pivot, read_only), what undoing it does in plain words, and whether
        it is a pivot (cannot be undone, so it must come after every step that can)."""
        return ops.list_actions()

    @server.tool(title="Check a plan, without any effect", annotations=_READS)
    @_answering
    async def validate_plan(
        plan: Annotated[
            dict[str, Any],
            Field(
                description='{"steps": [{"id": "charge", "action": "payments.charge", '
                '"args": {...}}, ...]}; actions and their args from list_actions.'
            ),
        ],
    ) -> PlanCheck:
        """Check a plan exactly as start_saga would (the catalog, the arguments, sizes and
        the money policy) and say whether a person must approve it; nothing runs. An
        invalid plan answers valid=false with one line per problem."""
        return ops.validate_plan(plan)

    @server.tool(
        title="Start a saga",
        annotations=ToolAnnotations(
            read_only_hint=False, destructive_hint=False, idempotent_hint=False
        ),
    )
    @_answering
    async def start_saga(
        plan: Annotated[
            dict[str, Any] | None,
            Field(description="A plan, as for validate_plan; or give request instead."),
        ] = None,
        request: Annotated[
            str | None,
            Field(description="What you want in words; the saga's planner writes the plan."),
        ] = None,
        mode: Annotated[
            Literal["plan", "act"],
            Field(description="With a request: plan (a whole plan first) or act (step by step)."),
        ] = "plan",
        saga_id: Annotated[
            str | None, Field(description="Your id for it (default: generated); one run per id.")
        ] = None,
    ) -> Started:
        """Start a saga from a plan or a request in words and answer at once with its id.
        The plan is checked first: a rejected one starts nothing. Follow it with
        wait_saga; a plan the policy wants approved waits for a person on its page."""
        return await ops.start(
            caller(), plan=plan, request=request, mode=SagaMode(mode), saga_id=saga_id
        )

    @server.tool(title="A saga's state", annotations=_READS)
    @_answering
    async def saga_status(saga_id: str) -> SagaAnswer:
        """Where a saga is: its status, what that means outside (done, undone, ...), each
        step with its external id and its undo, and what it waits for."""
        return await ops.status(saga_id)

    @server.tool(title="Wait for a saga", annotations=_READS)
    @_answering
    async def wait_saga(
        ctx: Context,
        saga_id: str,
        timeout_seconds: Annotated[
            float, Field(ge=0, le=60, description="Wait at most this long (up to 60 s).")
        ] = 30,
    ) -> SagaAnswer:
        """Wait until the saga ends, or needs a person (an approval, a stuck undo), or
        the time is up, then say where it is (finished tells which). Progress is
        reported as its steps move."""

        return await ops.wait(saga_id, timeout_seconds, ctx.report_progress)

    @server.tool(
        title="Cancel a saga",
        annotations=ToolAnnotations(
            read_only_hint=False, destructive_hint=True, idempotent_hint=True
        ),
    )
    @_answering
    async def cancel_saga(
        saga_id: str,
        wait_seconds: Annotated[
            float,
            Field(ge=0, le=60, description="Wait up to this long for the undo to finish."),
        ] = 20,
    ) -> SagaAnswer:
        """Cancel a running saga: what it did is undone in reverse order (refunds,
        releases, closed tickets). A saga that already ended is left as it is, and the
        answer says so."""
        return await ops.cancel(caller(), saga_id, wait_seconds)

    @server.tool(title="Find sagas", annotations=_READS)
    @_answering
    async def list_sagas(
        status: Annotated[
            list[str] | None,
            Field(description="Only these statuses: completed, cancelled, running, ..."),
        ] = None,
        search: Annotated[
            str | None, Field(max_length=200, description="Words of the request or summary.")
        ] = None,
        min_amount: Annotated[int | None, Field(ge=0, description="Minor units.")] = None,
        limit: Annotated[int, Field(ge=1, le=200)] = 20,
    ) -> list[SagaSummary]:
        """Sagas, newest first, with status, what each does and its amount."""
        return await ops.list(
            statuses=status or [], words=search, min_amount=min_amount, limit=limit
        )

    @server.resource(
        "saga://{saga_id}",
        name="saga",
        title="A saga's live state",
        description="The saga's state (card numbers and emails masked), its steps, its "
        "outcome and what can be done; subscribe to hear when it changes.",
        mime_type="application/json",
    )
    async def saga_resource(saga_id: str) -> str:
        try:
            view = await (await ops.service()).view(saga_id)
        except SagaNotFound as exc:
            raise ResourceNotFoundError(str(exc)) from None
        return json.dumps(view.model_dump(mode="json"))

    return server
