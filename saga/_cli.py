"""The `saga` command line: dev stack, worker, and operations on sagas."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import json
import logging
import os
import signal
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from pydantic import ValidationError
from rich.console import Console
from rich.table import Table
from temporalio.client import Client, WorkflowUpdateFailedError
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError

from saga._catalog import catalog
from saga._client import connect_client, saga_state, start_saga, update_saga, wait_saga
from saga._codec import payload_keys
from saga._errors import PlanRejected, Refused, SagaError
from saga._examples import example_names, find_example
from saga._limits import check_saga_input
from saga._models import (
    ApprovalDecision,
    OperatorAction,
    SagaInput,
    SagaResult,
    SagaStatus,
    StepState,
)
from saga._plan import check_plan
from saga._policy import Policy
from saga._problems import (
    check_database,
    database_errors,
    model_problems,
    read_json_file,
    read_policy_file,
    system_problem,
)
from saga._settings import Settings, load_settings

if TYPE_CHECKING:
    from saga._agent_settings import AgentSettings
    from saga._ledger import Ledger

# What users and servers wrote (step ids, requests, paths, errors) is printed as it is:
# never read as Rich markup or emoji codes.
out = Console(markup=False, emoji=False)
err = Console(stderr=True, soft_wrap=True, markup=False, emoji=False, highlight=False)


class UsageError(Refused):
    """Bad input on the command line: one line per problem on stderr, exit code 2."""

    def __init__(self, *problems: str) -> None:
        super().__init__(list(problems))


class _Parser(argparse.ArgumentParser):
    """Argument errors are bad input too: one line, exit code 2 (not the usage text)."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see `{self.prog} --help`)")


def _port(text: str) -> int:
    port = int(text) if text.isdigit() else -1
    if not 0 <= port < 65536:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}")
    return port


def _positive(text: str) -> int:
    value = int(text) if text.isdigit() else 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"not a positive whole number: {text!r}")
    return value


def load_catalog(settings: Settings) -> None:
    """Import the configured activities modules so their actions are in the catalog."""
    from saga._systems import activity_sources

    for module, _ in activity_sources(settings):
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise UsageError(f"SAGA_ACTIVITIES: cannot import {module!r} ({exc})") from None


def load_activities(settings: Settings) -> list[Callable[..., Any]]:
    """The worker's activities from SAGA_ACTIVITIES (`module:function`)."""
    from saga._worker import load_activities as load

    load_catalog(settings)
    try:
        with database_errors(*_inventory_variable(settings)):  # the systems' one database
            return load(settings)
    except AttributeError as exc:
        raise UsageError(f"SAGA_ACTIVITIES: {settings.activities!r}: {exc}") from None


def _inventory_variable(settings: Settings) -> tuple[str, str]:
    """The variable that says where the inventory database is, and its URL."""
    variable = "SAGA_INVENTORY_URL" if settings.inventory_url else "SAGA_DATA_DIR"
    return variable, settings.inventory_db_url()


def open_ledger(settings: Settings) -> Ledger:
    """The ledger at SAGA_DATABASE_URL (migrated), or one line on why it cannot be used."""
    from saga._ledger import Ledger

    variable = "SAGA_DATABASE_URL" if settings.database_url else "SAGA_DATA_DIR"
    with database_errors(variable, settings.ledger_url()):
        return Ledger(settings.ledger_url())


def agent_settings() -> AgentSettings:
    """The planner's settings (SAGA_MODEL..., OPENAI_...), checked before a worker starts."""
    from saga._agent_settings import AgentSettings

    return load_settings(AgentSettings)


# -- rendering ----------------------------------------------------------------------------
def render(result: SagaResult) -> Table:
    table = Table(title=f"saga {result.saga_id}: {result.status.value}", title_justify="left")
    for col in ("step", "action", "status", "external id", "compensation"):
        table.add_column(col, overflow="fold")
    for s in result.steps:
        comp = s.compensation.value
        if s.compensation_error and comp == "failed":
            comp += f" ({s.compensation_error})"
        table.add_row(s.id, s.action, s.status.value, s.external_id or "-", comp)
    return table


def masked(result: SagaResult) -> SagaResult:
    """What the terminal shows: card numbers and email addresses masked, as on the web."""
    from saga.web._redact import redact

    return SagaResult.model_validate(redact(result.model_dump(mode="json")))


def show(result: SagaResult, as_json: bool) -> None:
    result = masked(result)
    if as_json:
        print(result.model_dump_json(indent=2))
        return
    out.print(render(result))
    if result.plan is not None and not result.steps and result.plan_hash:
        out.print(f"plan {result.plan_hash} ({result.planner or 'hand-written'}):")
        for st in result.plan.steps:
            out.print(f"  {st.id}: {st.action} {json.dumps(st.args)}")
    if result.status is SagaStatus.AWAITING_APPROVAL:
        out.print(f"waiting for approval: saga approve {result.saga_id}")
    if result.error:
        out.print(f"error: {result.error}")
    for problem in result.problems:
        out.print(f"  - {problem}")
    for stuck in result.stuck_steps:
        out.print(
            f"needs attention: step {stuck.id} ({stuck.external_id}): "
            f"saga retry {result.saga_id} {stuck.id} | saga resolve {result.saga_id} {stuck.id}"
        )
    if result.status is SagaStatus.NEEDS_ATTENTION:
        for parked in result.uncertain_steps:
            for line in parked_lines(result.saga_id, parked):
                out.print(line, markup=False, highlight=False, soft_wrap=True)


def parked_lines(saga_id: str, step: StepState) -> list[str]:
    """What an operator needs for a step parked as uncertain: the evidence, the choices."""
    ev = dict(step.evidence or {})
    lines = [
        f"needs attention: step {step.id} ({step.action}) may already have taken effect; "
        "it was not repeated",
        f"  attempt {ev.pop('attempt', '?')} began delivering at {ev.pop('started_at', '?')} "
        f"on worker {ev.pop('worker', '?')}; {ev.pop('ended', '?')}",
    ]
    lines += [f"  {key}: {value}" for key, value in ev.items()]
    return [
        *lines,
        f'  it did take effect:    saga resolve {saga_id} {step.id} --note "how you know"'
        "  (counts as done; the saga goes on)",
        f"  do it again:           saga retry {saga_id} {step.id}  (it may then happen twice)",
        f"  undo the steps before: saga cancel {saga_id}",
    ]


def exit_code(result: SagaResult) -> int:
    return 0 if result.status is SagaStatus.COMPLETED else 1


def load_policy(settings: Settings) -> Policy:
    """The policy from SAGA_POLICY_FILE, or the default (whole catalog, no approval)."""
    if settings.policy_file is None:
        return Policy(max_steps=min(Policy().max_steps, settings.max_steps))
    policy = read_policy_file(settings.policy_file)
    # SAGA_MAX_STEPS caps the plans this CLI starts, in the workflow too.
    return policy.model_copy(update={"max_steps": min(policy.max_steps, settings.max_steps)})


def _plan_source(plan: str) -> Traversable:
    """`--plan`: a file path, which wins when it exists, or a bundled example by name."""
    path = Path(plan)
    if path.is_file():
        return path
    example = find_example(plan)
    if example is None:
        raise UsageError(
            f"plan file not found: {plan} (nor a bundled example: {', '.join(example_names())})"
        )
    return example


# -- commands -----------------------------------------------------------------------------
async def cmd_start(args: argparse.Namespace, settings: Settings) -> int:
    """Everything is checked (input, sizes, plan, policy) before a workflow is started."""
    if args.plan is not None and args.request:
        raise UsageError("give a plan (--plan) or a request in words, not both")
    if args.id is not None and not args.id.strip():
        raise UsageError("--id is empty")
    load_catalog(settings)
    saga_id = args.id or f"saga-{uuid.uuid4().hex[:12]}"
    policy = load_policy(settings)
    plan: Any = None
    request: str | None = None
    if args.plan is not None:
        plan = read_json_file(_plan_source(args.plan), "plan")
    elif args.request:
        request = " ".join(args.request)
    else:
        raise UsageError("give a plan (--plan FILE) or a request in words")
    saga_input = SagaInput(plan=plan, request=request, policy=policy)
    check_saga_input(saga_input)
    if plan is not None:
        check_plan(plan, catalog, policy)
    client = await connect_client(settings)
    try:
        await start_saga(
            client,
            plan,
            saga_id=saga_id,
            task_queue=settings.task_queue,
            input=saga_input,
            settings=settings,
        )
    except WorkflowAlreadyStartedError:
        raise UsageError(f"saga {saga_id} already exists; `saga status {saga_id}`") from None
    if not args.wait:
        if args.json:
            print(json.dumps({"saga_id": saga_id, "status": "started"}))
        else:
            out.print(f"started saga {saga_id}")
        return 0
    result = await follow(client, saga_id, live=not args.json)
    show(result, args.json)
    return exit_code(result)


async def follow(client: Client, saga_id: str, *, live: bool) -> SagaResult:
    """Wait for the saga, showing a live table of its steps when on a terminal."""
    if live:
        try:
            watch = importlib.import_module("saga._live").watch
        except ModuleNotFoundError:
            watch = None
        if watch is not None:
            result: SagaResult = await watch(client, saga_id, out)
            return result
    return await wait_saga(client, saga_id)


async def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    client = await connect_client(settings)
    result = await saga_state(client, args.id)
    show(result, args.json)
    return exit_code(result)


async def cmd_cancel(args: argparse.Namespace, settings: Settings) -> int:
    client = await connect_client(settings)
    before = await saga_state(client, args.id)
    if before.status.final:
        out.print(f"saga {args.id} already {before.status.value}: nothing was cancelled")
        return 1
    await client.get_workflow_handle(args.id).cancel()
    out.print(f"cancel requested for saga {args.id}; compensating what ran")
    if args.wait:
        result = await follow(client, args.id, live=True)
        show(result, False)
    return 0


async def cmd_list(args: argparse.Namespace, settings: Settings) -> int:
    client = await connect_client(settings)
    rows = []
    async for wf in client.list_workflows('WorkflowType="SagaWorkflow"', limit=args.limit):
        rows.append(
            {
                "saga_id": wf.id,
                "status": wf.status.name if wf.status else "UNKNOWN",
                "started": wf.start_time.isoformat(),
            }
        )
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    table = Table("saga", "workflow status", "started")
    for row in rows:
        table.add_row(row["saga_id"], row["status"], row["started"])
    out.print(table)
    return 0


async def _update(settings: Settings, saga_id: str, update: str, arg: Any) -> SagaResult:
    client = await connect_client(settings)
    try:
        return await update_saga(client, saga_id, update, arg)
    except WorkflowUpdateFailedError as exc:
        raise UsageError(str(exc.cause or exc)) from None


async def cmd_approve(args: argparse.Namespace, settings: Settings) -> int:
    client = await connect_client(settings)
    state = await saga_state(client, args.id)
    plan_hash = args.plan_hash or state.plan_hash
    result = await _update(
        settings, args.id, "approve", ApprovalDecision(plan_hash=plan_hash, by=args.by)
    )
    out.print(f"approved plan {plan_hash} of saga {args.id}")
    show(result, args.json)
    return 0


async def cmd_reject(args: argparse.Namespace, settings: Settings) -> int:
    await _update(settings, args.id, "reject", ApprovalDecision(reason=args.reason, by=args.by))
    out.print(f"rejected the plan of saga {args.id}: {args.reason}")
    return 0


async def cmd_retry(args: argparse.Namespace, settings: Settings) -> int:
    result = await _update(
        settings, args.id, "retry_compensation", OperatorAction(step_id=args.step)
    )
    show(result, args.json)
    return 0


async def cmd_resolve(args: argparse.Namespace, settings: Settings) -> int:
    result = await _update(
        settings,
        args.id,
        "resolve_compensation",
        OperatorAction(step_id=args.step, note=args.note),
    )
    show(result, args.json)
    return 0


async def cmd_reconcile(args: argparse.Namespace, settings: Settings) -> int:
    """Compare the ledger with Stripe, the inventory and Redmine; non-zero on drift."""
    from saga._reconcile import reconcile
    from saga._reconcile import render as render_report

    open_ledger(settings).close()  # a ledger that cannot be read is one line, not a dump
    try:
        report = await reconcile(settings, saga_prefix=args.prefix)
    except Exception as exc:
        problem = system_problem(settings, exc)
        if problem is None:
            raise
        raise UsageError(problem) from None
    if args.json:
        print(report.model_dump_json(indent=2))
    else:
        print(render_report(report))
    return 0 if report.clean else 1


async def cmd_catalog(args: argparse.Namespace, settings: Settings) -> int:
    load_catalog(settings)
    print(json.dumps(catalog.json_schema(), indent=2))
    return 0


async def _run_until_signal(run: Callable[[asyncio.Event], Awaitable[None]]) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await run(stop)


async def cmd_worker(args: argparse.Namespace, settings: Settings) -> int:
    from saga._worker import close_activities, create_worker

    planner = agent_settings()
    payload_keys(settings, create=True)  # once, in the data directory, unless configured
    ledger = open_ledger(settings)
    try:
        acts = load_activities(settings)
        client = await connect_client(settings)
    except BaseException:
        ledger.close()
        raise

    async def run(stop: asyncio.Event) -> None:
        async with create_worker(client, settings, ledger, acts, agent_settings=planner):
            err.print(f"worker polling {settings.task_queue} at {settings.temporal_address}")
            await stop.wait()
            err.print(
                "worker stopping: no new steps; running ones get "
                f"{settings.graceful_shutdown_seconds:g}s to finish, then are handed back"
            )

    try:
        await _run_until_signal(run)
    finally:
        await close_activities(acts)
        ledger.close()
    err.print("worker stopped")
    return 0


async def cmd_dev(args: argparse.Namespace, settings: Settings) -> int:
    from saga._devserver import DevServer
    from saga._worker import close_activities, connect, create_worker

    planner = agent_settings()
    load_catalog(settings)
    payload_keys(settings, create=True)  # once, in the data directory, unless configured
    port = args.port or settings.dev_server_port
    problem = _bind_problem("127.0.0.1", port)
    if problem is not None:  # else the worker would join whatever server holds the port
        raise UsageError(f"{'--port' if args.port else 'SAGA_DEV_SERVER_PORT'}: {problem}")
    server = DevServer(port, settings.data_dir / "temporal.db")
    settings = settings.model_copy(update={"temporal_address": server.address})
    ledger = open_ledger(settings)  # the dev stack keeps the ledger URL
    try:
        check_database(*_inventory_variable(settings))  # the dev stack seeds it
    except BaseException:
        ledger.close()
        raise

    async def run(stop: asyncio.Event) -> None:
        await server.start()
        err.print(f"temporal dev server on {server.address} (db {server.db_file})")
        try:
            stack = importlib.import_module("saga._devstack")
        except ModuleNotFoundError:
            stack = None
        async with contextlib.AsyncExitStack() as exits:
            dev_settings = settings
            if stack is not None and hasattr(stack, "dev_stack"):
                dev_settings = await exits.enter_async_context(stack.dev_stack(settings))
            client = await connect(dev_settings, planner)
            acts = load_activities(dev_settings)
            exits.push_async_callback(close_activities, acts)
            await exits.enter_async_context(create_worker(client, dev_settings, ledger, acts))
            err.print(f"worker polling {dev_settings.task_queue}; Ctrl-C stops everything")
            if args.then is not None:
                await args.then(client, dev_settings)
                return
            url = await exits.enter_async_context(_web_for_dev(dev_settings, args.web_port))
            out.print(f"saga web: {url}  (the link logs you in)", soft_wrap=True)
            await stop.wait()

    try:
        await _run_until_signal(run)
    finally:
        server.stop()
        ledger.close()
    return 0


async def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    import tempfile

    from saga._demo import run_demo
    from saga._devserver import free_port

    if "SAGA_DATA_DIR" not in os.environ:
        settings = settings.model_copy(
            update={"data_dir": Path(tempfile.mkdtemp(prefix="saga-demo-"))}
        )
    err.print(f"demo data in {settings.data_dir}")
    result: dict[str, int] = {}

    async def then(client: Client, dev_settings: Settings) -> None:
        result["code"] = await run_demo(client, dev_settings, out)

    args.port = args.port or free_port()
    args.then = then
    args.web_port = 0
    await cmd_dev(args, settings)
    return result.get("code", 1)


def cmd_web(args: argparse.Namespace, settings: Settings) -> int:
    """Runs uvicorn's own loop, so it is not a coroutine like the other commands."""
    from saga.web.app import operator_token, serve

    operator_token(args.token)  # no token: say so before anything else
    problem = _bind_problem(args.host, args.port)
    if problem is not None:
        raise UsageError(f"--host/--port: {problem}")
    serve(settings, args.host, args.port, args.token)
    return 0


async def cmd_watch(args: argparse.Namespace, settings: Settings) -> int:
    client = await connect_client(settings)
    result = await follow(client, args.id, live=True)
    show(result, False)
    return exit_code(result)


@contextlib.asynccontextmanager
async def _web_for_dev(settings: Settings, port: int) -> AsyncIterator[str]:
    """The web app inside `saga dev`, with a generated operator token."""
    import secrets

    import uvicorn

    from saga._devserver import free_port
    from saga.web.app import create_app

    token = os.environ.get("SAGA_WEB_TOKEN") or secrets.token_urlsafe(18)
    if not _port_free(port):
        port = free_port()
    app = create_app(settings, token=token)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    # `saga dev` owns Ctrl-C: uvicorn must not take the signal handlers over.
    server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign,assignment]
    task = asyncio.create_task(server.serve())
    try:
        yield f"http://127.0.0.1:{port}/login?token={token}"
    finally:
        server.should_exit = True
        await task


def _port_free(port: int, host: str = "127.0.0.1") -> bool:
    return _bind_problem(host, port) is None


def _bind_problem(host: str, port: int) -> str | None:
    """Why a server could not listen on host:port (in use, unknown host), or None."""
    import socket

    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        with socket.socket(family, kind, proto) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does
            s.bind(address)
    except OSError as exc:
        return f"cannot serve on {host}:{port} ({exc.strerror or exc})"
    return None


# -- entry point ----------------------------------------------------------------------------
def parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="saga", description="Durable plans of real-world actions: fully done or fully undone."
    )
    sub = p.add_subparsers(dest="command", required=True)

    dev = sub.add_parser("dev", help="start the embedded Temporal server and a worker")
    dev.add_argument("--port", type=_port, help="Temporal port (default SAGA_DEV_SERVER_PORT)")
    dev.add_argument("--web-port", type=_port, default=8080, help="web app port (default 8080)")
    dev.set_defaults(func=cmd_dev, then=None)

    demo = sub.add_parser("demo", help="run the example sagas on a fresh embedded stack")
    demo.add_argument("--port", type=_port, help="Temporal port (default: a free one)")
    demo.set_defaults(func=cmd_demo)

    web = sub.add_parser("web", help="serve the web app (needs SAGA_WEB_TOKEN)")
    web.add_argument("--host", default="127.0.0.1")
    web.add_argument("--port", type=_port, default=8080)
    web.add_argument("--token", help="operator token (default: SAGA_WEB_TOKEN)")
    web.set_defaults(func=cmd_web)

    watch = sub.add_parser("watch", help="follow a saga live until it ends")
    watch.add_argument("id")
    watch.set_defaults(func=cmd_watch)

    sub.add_parser("worker", help="run a worker").set_defaults(func=cmd_worker)

    start = sub.add_parser("start", help="start a saga from a plan file or a request")
    start.add_argument("request", nargs="*", help="what you want, in words")
    start.add_argument(
        "--plan",
        help=f"JSON plan file, or a bundled example by name ({', '.join(example_names())})",
    )
    start.add_argument("--id", help="saga id (default: generated)")
    start.add_argument("--wait", action="store_true", help="wait for the outcome")
    start.add_argument("--json", action="store_true", help="print the typed result as JSON")
    start.set_defaults(func=cmd_start)

    status = sub.add_parser("status", help="show a saga's state")
    status.add_argument("id")
    status.add_argument("--json", action="store_true")
    status.set_defaults(func=cmd_status)

    cancel = sub.add_parser("cancel", help="cancel a saga: everything done is compensated")
    cancel.add_argument("id")
    cancel.add_argument("--wait", action="store_true")
    cancel.set_defaults(func=cmd_cancel)

    lst = sub.add_parser("list", help="list sagas, newest first")
    lst.add_argument("--limit", type=_positive, default=50)
    lst.add_argument("--json", action="store_true")
    lst.set_defaults(func=cmd_list)

    approve = sub.add_parser("approve", help="approve the plan waiting for approval")
    approve.add_argument("id")
    approve.add_argument("--plan-hash", help="the hash you reviewed (default: current)")
    approve.add_argument("--by", default=None)
    approve.add_argument("--json", action="store_true")
    approve.set_defaults(func=cmd_approve)

    reject = sub.add_parser("reject", help="reject the plan waiting for approval")
    reject.add_argument("id")
    reject.add_argument("--reason", required=True)
    reject.add_argument("--by", default=None)
    reject.set_defaults(func=cmd_reject)

    for name, func, helptext in (
        ("retry", cmd_retry, "retry a stuck compensation, or do a parked step again"),
        (
            "resolve",
            cmd_resolve,
            "mark a stuck compensation resolved by hand, or confirm a parked step took effect",
        ),
    ):
        sp = sub.add_parser(name, help=helptext)
        sp.add_argument("id")
        sp.add_argument("step")
        sp.add_argument("--json", action="store_true")
        if name == "resolve":
            sp.add_argument("--note", required=True, help="what was done by hand, or how you know")
        sp.set_defaults(func=func)

    rec = sub.add_parser(
        "reconcile", help="compare the ledger with the external systems; exit 1 on drift"
    )
    rec.add_argument("--prefix", default="", help="only sagas whose id starts with this")
    rec.add_argument("--json", action="store_true")
    rec.set_defaults(func=cmd_reconcile)

    cat = sub.add_parser("catalog", help="print the catalog as JSON schema")
    cat.set_defaults(func=cmd_catalog)
    return p


def _logging(settings: Settings, command: str) -> None:
    """Errors on the terminal; the full log (expected activity failures too) in a file."""
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    # Their INFO lines are request URLs, which carry query values such as a customer's
    # email (Stripe's customer search): logs hold no personal data.
    for chatty in ("stripe", "httpx", "httpcore"):
        logging.getLogger(chatty).setLevel(logging.WARNING)
    from saga.web._redact import MaskingFilter

    console = logging.StreamHandler()
    console.setLevel(logging.ERROR if command in ("demo", "dev") else logging.WARNING)
    console.addFilter(MaskingFilter())
    root.addHandler(console)
    if command in ("dev", "worker", "web"):
        try:
            settings.data_dir.mkdir(parents=True, exist_ok=True)
            to_file = logging.FileHandler(settings.data_dir / "saga.log")
        except OSError as exc:
            raise UsageError(
                f"SAGA_DATA_DIR: cannot write the log in {settings.data_dir} ({exc.strerror})"
            ) from None
        to_file.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
        to_file.addFilter(MaskingFilter())
        root.addHandler(to_file)


def _say(*problems: str) -> int:
    """Bad input, file or setting: one line per problem on stderr, exit code 2."""
    for problem in problems:
        err.print(f"saga: {problem}")
    return 2


def main(argv: list[str] | None = None) -> int:
    settings: Settings | None = None
    try:
        args = parser().parse_args(argv)
        settings = load_settings(Settings)
        _logging(settings, args.command)
        outcome = args.func(args, settings)
        code: int = asyncio.run(outcome) if asyncio.iscoroutine(outcome) else outcome
        return code
    except KeyboardInterrupt:
        return 130
    except PlanRejected as exc:
        return _say(*(f"plan rejected: {problem}" for problem in exc.problems))
    except Refused as exc:
        return _say(*exc.problems)
    except ValidationError as exc:
        return _say(*model_problems(exc.title, exc))
    except (SagaError, ValueError) as exc:
        return _say(" ".join(str(exc).splitlines()))
    except RPCError as exc:
        return _say(f"Temporal refused: {exc.message}")
    except RuntimeError as exc:
        if settings is not None and "connect" in str(exc).lower():
            return _say(
                f"SAGA_TEMPORAL_ADDRESS: cannot reach Temporal at {settings.temporal_address} "
                "(start it with `saga dev`)"
            )
        raise


def run() -> None:
    """Console-script entry: exit without interpreter finalization.

    Temporal's Rust runtime threads can abort a finalizing interpreter
    (`PyGILState_Release`), which would turn a clean exit code into SIGABRT.
    """
    code = main()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    run()
