"""The commands that run until stopped: a worker, the dev stack (`saga dev`, `saga
demo`), the web app and the MCP server.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

from temporalio.client import Client

from saga._client import connect_client
from saga._codec import payload_keys
from saga._problems import check_database
from saga._settings import Settings
from saga.cli._loading import (
    UsageError,
    agent_settings,
    inventory_variable,
    load_activities,
    load_catalog,
    open_ledger,
)
from saga.cli._render import err, out


async def _run_until_signal(run: Callable[[asyncio.Event], Awaitable[None]]) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await run(stop)


async def cmd_worker(args: argparse.Namespace, settings: Settings) -> int:
    from saga._metrics import sdk_runtime
    from saga._worker import close_activities, create_worker

    planner = agent_settings()
    _check_metrics_port(settings)
    payload_keys(settings, create=True)  # once, in the data directory, unless configured
    ledger = open_ledger(settings)
    try:
        acts = load_activities(settings)
        client = await connect_client(settings, sdk_runtime(settings))
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
    from saga._worker import close_activities, connect, create_worker
    from saga.dev._devserver import DevServer
    from saga.dev._devstack import dev_stack

    planner = agent_settings()
    load_catalog(settings)
    payload_keys(settings, create=True)  # once, in the data directory, unless configured
    port = args.port or settings.dev_server_port
    problem = _bind_problem("127.0.0.1", port)
    if problem is not None:  # else the worker would join whatever server holds the port
        raise UsageError(f"{'--port' if args.port else 'SAGA_DEV_SERVER_PORT'}: {problem}")
    _check_metrics_port(settings, sdk=False)
    server = DevServer(port, settings.data_dir / "temporal.db")
    settings = settings.model_copy(update={"temporal_address": server.address})
    ledger = open_ledger(settings)  # the dev stack keeps the ledger URL
    try:
        check_database(*inventory_variable(settings))  # the dev stack seeds it
    except BaseException:
        ledger.close()
        raise

    async def run(stop: asyncio.Event) -> None:
        await server.start()
        err.print(f"temporal dev server on {server.address} (db {server.db_file})")
        async with contextlib.AsyncExitStack() as exits:
            dev_settings = await exits.enter_async_context(dev_stack(settings))
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
            for line in _from_another_terminal(dev_settings):
                err.print(line)
            await stop.wait()

    try:
        await _run_until_signal(run)
    finally:
        server.stop()
        ledger.close()
    return 0


def _from_another_terminal(settings: Settings) -> list[str]:
    """Where `saga dev` sends mail and keeps the inventory, and how another terminal
    reaches it: the variables to set there (the data directory holds the payload keys and
    localstripe's address) and a first command."""
    import shlex

    from saga._problems import hide_password
    from saga.dev._devstack import mail_folder

    given = {
        "SAGA_TEMPORAL_ADDRESS": settings.temporal_address,
        "SAGA_DATA_DIR": str(settings.data_dir.resolve()),
    }
    for field in ("task_queue", "namespace"):
        value = getattr(settings, field)
        if value != Settings.model_fields[field].default:
            given[f"SAGA_{field.upper()}"] = value
    also = sorted(
        name
        for name in (f"SAGA_{field.upper()}" for field in Settings.model_fields)
        if name in os.environ and name not in given
    )
    lines = [
        f"mail: SMTP on {settings.smtp_host}:{settings.smtp_port}; "
        f"each message is saved in {mail_folder(settings).resolve()}",
        f"inventory: {hide_password(settings.inventory_db_url())}",
        "from another terminal:",
        "  export " + " ".join(f"{k}={shlex.quote(v)}" for k, v in given.items()),
        "  saga start --plan order --wait",
    ]
    if also:
        lines.append(f"  (with these set as here too: {', '.join(also)})")
    return lines


async def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    import tempfile

    from saga.dev._demo import run_demo
    from saga.dev._devserver import free_port

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


async def cmd_mcp(args: argparse.Namespace, settings: Settings) -> int:
    """Over stdio until the client closes it; over HTTP until Ctrl-C / SIGTERM."""
    from saga.mcp._serving import operations, serve_stdio, serving_http

    ops = operations(settings)  # a catalog or policy that cannot load: one line, first
    if not args.http:
        if args.token:
            raise UsageError("--token is for --http; over stdio the server runs as you")
        await serve_stdio(ops)
        return 0
    from saga.web.app import operator_token

    token = operator_token(args.token)
    problem = _bind_problem(args.host, args.port)
    if problem is not None:
        raise UsageError(f"--host/--port: {problem}")

    async def run(stop: asyncio.Event) -> None:
        async with serving_http(ops, args.host, args.port, token) as url:
            err.print(f"saga mcp on {url} (Authorization: Bearer SAGA_WEB_TOKEN or a person's "
                      "token); Ctrl-C stops it")  # fmt: skip
            await stop.wait()

    await _run_until_signal(run)
    return 0


@contextlib.asynccontextmanager
async def _web_for_dev(settings: Settings, port: int) -> AsyncIterator[str]:
    """The web app inside `saga dev`, with a generated operator token."""
    import secrets

    import uvicorn

    from saga.dev._devserver import free_port
    from saga.web.app import create_app

    token = os.environ.get("SAGA_WEB_TOKEN") or secrets.token_urlsafe(18)
    if port == 0 or not _port_free(port):  # 0: any free port, named in the link
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


def _check_metrics_port(settings: Settings, sdk: bool = True) -> None:
    """Refuse at start, in one line, a metrics port the worker could not serve on
    (``sdk``: the Temporal SDK's too, which only `saga worker` serves)."""
    ports = {"SAGA_METRICS_PORT": settings.metrics_port}
    if sdk:
        ports["SAGA_TEMPORAL_METRICS_PORT"] = settings.temporal_metrics_port
    for name, port in ports.items():
        problem = None if port is None else _bind_problem(settings.metrics_host, port)
        if problem is not None:
            raise UsageError(f"{name}: {problem}")


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
