"""The `saga` command line: parse, load the settings, run the command, and turn
bad input into one line per problem with exit code 2."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import sys
from typing import NoReturn

from temporalio.service import RPCError

from saga._errors import SagaError
from saga._problems import problem_lines
from saga._settings import Settings, load_settings
from saga.cli._audited import audited, cmd_audit
from saga.cli._commands import (
    cmd_approve,
    cmd_cancel,
    cmd_catalog,
    cmd_reconcile,
    cmd_reject,
    cmd_resolve,
    cmd_retry,
    cmd_start,
    cmd_status,
    cmd_watch,
)
from saga.cli._list import cmd_list
from saga.cli._loading import UsageError
from saga.cli._people import add_parser as add_people_parser
from saga.cli._render import err
from saga.cli._serve import cmd_demo, cmd_dev, cmd_mcp, cmd_web, cmd_worker
from saga.dev._examples import example_names


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

    mcp = sub.add_parser(
        "mcp", help="serve the catalog and sagas to MCP clients (stdio, or --http with a token)"
    )
    mcp.add_argument("--http", action="store_true", help="streamable HTTP instead of stdio")
    mcp.add_argument("--host", default="127.0.0.1", help="with --http (default 127.0.0.1)")
    mcp.add_argument("--port", type=_port, default=8765, help="with --http (default 8765)")
    mcp.add_argument("--token", help="with --http: bootstrap token (default: SAGA_WEB_TOKEN)")
    mcp.set_defaults(func=cmd_mcp)

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
    start.add_argument(
        "--mode",
        choices=["plan", "act"],
        default="plan",
        help="plan: the planner writes the whole plan first (default); act: the agent acts "
        "step by step, each write a saga step",
    )
    start.add_argument(
        "--agent",
        help="act mode: the workers' own agent of that name (create_worker(agents=...)) "
        "instead of the built-in one",
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
    lst.add_argument(
        "--status",
        action="append",
        help="only sagas in this status (repeat, or a comma list): completed, compensated, "
        "cancelled, needs_attention, awaiting_approval, rejected, running, ...",
    )
    lst.add_argument("--search", help="words of the request or the summary, e.g. 'blue mug'")
    lst.add_argument(
        "--min-amount", type=int, help="only sagas moving at least this much (minor units)"
    )
    lst.add_argument("--limit", type=_positive, default=50)
    lst.add_argument("--json", action="store_true")
    lst.set_defaults(func=cmd_list)

    add_people_parser(sub)

    audit = sub.add_parser("audit", help="who decided what, when: the audit trail")
    audit.add_argument("--saga", help="only the decisions on this saga")
    audit.add_argument("--since", help="only the last 30m, 2h, 7d, or since an ISO date/time")
    audit.add_argument("--limit", type=_positive, default=200)
    audit.add_argument("--json", action="store_true")
    audit.set_defaults(func=cmd_audit)

    approve = sub.add_parser("approve", help="approve the plan waiting for approval")
    approve.add_argument("id")
    approve.add_argument("--plan-hash", help="the hash you reviewed (default: current)")
    approve.add_argument(
        "--by", default=None, help="a note for the audit trail (the approval records user@host)"
    )
    approve.add_argument("--json", action="store_true")
    approve.set_defaults(func=cmd_approve)

    reject = sub.add_parser("reject", help="reject the plan waiting for approval")
    reject.add_argument("id")
    reject.add_argument("--reason", required=True)
    reject.add_argument(
        "--by", default=None, help="a note for the audit trail (the rejection records user@host)"
    )
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
    from saga._redact import MaskingFilter

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


def _reader_gone() -> int:
    """The reader of stdout went away (`saga status ID --json | head -1`): stop quietly,
    with the exit code of a command the shell sees killed by SIGPIPE (128 + 13), so that
    `set -o pipefail` tells a cut-off output from a complete one. What is still buffered
    goes to /dev/null, not to the closed pipe."""
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    return 141


def main(argv: list[str] | None = None) -> int:
    settings: Settings | None = None
    try:
        args = parser().parse_args(argv)
        settings = load_settings(Settings)
        _logging(settings, args.command)
        outcome = args.func(args, settings)
        if asyncio.iscoroutine(outcome):
            outcome = asyncio.run(audited(args, settings, outcome))
        code: int = outcome
        sys.stdout.flush()  # a reader that went away shows here, not at exit
        return code
    except BrokenPipeError:
        return _reader_gone()
    except KeyboardInterrupt:
        return 130
    except (SagaError, ValueError, RPCError) as exc:  # refusals, bad input, Temporal's no
        return _say(*problem_lines(exc))
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
