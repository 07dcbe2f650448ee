"""The command line's contract, run as a user runs it: every bad input, file or setting
is one line per problem on stderr naming what is wrong, exit code 2, no traceback, no
workflow started and no ledger row; what users write is never read as markup."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from temporalio.service import RPCError, RPCStatusCode

from saga import InputRejected, SagaInput, SagaStatus, start_saga, wait_saga
from saga._limits import MAX_ARG_BYTES, MAX_PLAN_BYTES, MAX_REQUEST_BYTES
from tests.conftest import Stack, eventually, unique
from tests.test_cli import ROOT, cli_env, write_plan

UNREACHABLE_PG = "postgresql+psycopg://saga:s3cret@127.0.0.1:1/ledger"
GOOD = {"steps": [{"id": "a", "action": "effects.apply", "args": {"name": "a"}}]}


async def run(
    stack: Stack, *args: str, timeout: float = 120, env: dict[str, str] | None = None, **extra: str
) -> subprocess.CompletedProcess[str]:
    """The CLI in a subprocess (in a thread: the session's worker shares this loop)."""
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "saga", *args],
        capture_output=True,
        text=True,
        env=env or cli_env(stack, **extra),
        cwd=ROOT,
        timeout=timeout,
    )


def assert_refused(proc: subprocess.CompletedProcess[str], *lines: str) -> None:
    """Exit 2, nothing on stdout, and exactly one stderr line per expected problem."""
    assert "Traceback" not in proc.stderr + proc.stdout, proc.stderr[-3000:]
    assert proc.returncode == 2, (proc.returncode, proc.stdout[-2000:], proc.stderr[-2000:])
    assert proc.stdout == ""
    got = proc.stderr.splitlines()
    assert len(got) == len(lines), got
    assert all(line.startswith("saga: ") for line in got), got
    unmatched = list(got)
    for expected in lines:  # in any order: pydantic reports fields in declaration order
        found = next((line for line in unmatched if expected in line), None)
        assert found is not None, (expected, got)
        unmatched.remove(found)


async def assert_nothing_started(stack: Stack, sid: str) -> None:
    with pytest.raises(RPCError) as no_workflow:
        await stack.client.get_workflow_handle(sid).describe()
    assert no_workflow.value.status == RPCStatusCode.NOT_FOUND
    assert stack.ledger.saga(sid) is None


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def plan_with(**args: Any) -> dict[str, Any]:
    return {"steps": [{"id": "a", "action": "effects.apply", "args": {"name": "a", **args}}]}


# Each case: the arguments after `saga start` (given a folder for files), extra settings,
# and the expected stderr lines. Every case also passes --id, to prove nothing started.
StartArgs = Callable[[Path], list[str]]
START_CASES: list[tuple[str, StartArgs, dict[str, str], list[str]]] = [
    (
        "request beside --plan",
        lambda d: ["--plan", write_plan(d, GOOD), "charge", "ana"],
        {},
        ["give a plan (--plan) or a request in words, not both"],
    ),
    ("empty request", lambda d: [""], {}, ["the request is empty"]),
    ("blank request", lambda d: ["  ", "\t"], {}, ["the request is empty"]),
    (
        "1 MB request",
        # 16 words of 64 KiB: one argument may not exceed 128 KiB on Linux.
        lambda d: ["x" * 65536] * 16,
        {},
        [f"request is 1,048,591 bytes, over the limit of {MAX_REQUEST_BYTES:,} bytes"],
    ),
    (
        "plan rejected by validation",
        lambda d: [
            "--plan",
            write_plan(
                d,
                {
                    "steps": [
                        {"id": "a", "action": "effects.apply", "args": {"name": "a"}},
                        {"id": "a", "action": "payments.steal", "args": {}},
                    ]
                },
            ),
        ],
        {},
        ["plan rejected: step 'a': duplicate id", "plan rejected: step 'a': unknown action"],
    ),
    (
        "markup in a step id and an action",
        lambda d: [
            "--plan",
            write_plan(d, {"steps": [{"id": "a[/]", "action": "x[/][bold]", "args": {}}]}),
        ],
        {},
        # An invalid id is not echoed (the step's number names it); the action is, as is.
        [
            "plan rejected: step 1: id must match",
            "plan rejected: step 1: unknown action 'x[/][bold]'",
        ],
    ),
    (
        "markup in a plan's path",
        lambda d: ["--plan", _markup_path(d, {"steps": [{"id": "a", "action": "no.such"}]})],
        {},
        ["plan rejected: step 'a': unknown action 'no.such'"],
    ),
    (
        "100,000 nested arrays",
        lambda d: ["--plan", _file(d, "deep.json", nested(100_000))],
        {},
        ["deep.json: nests too deeply to read"],
    ),
    (
        "nested 100 levels in an argument",
        lambda d: ["--plan", write_plan(d, plan_with(name=json.loads(nested(100))))],
        {},
        ["plan nests more than 32 levels deep"],
    ),
    (
        "oversized argument",
        lambda d: ["--plan", write_plan(d, plan_with(name="x" * 70_000))],
        {},
        [f"step 'a': args.name is 70,002 bytes, over the limit of {MAX_ARG_BYTES:,} bytes"],
    ),
    (
        "oversized plan",
        lambda d: [
            "--plan",
            write_plan(d, {"steps": [GOOD["steps"][0] | {"args": {"name": "x" * 60_000}}] * 5}),
        ],
        {},
        [f"over the limit of {MAX_PLAN_BYTES:,} bytes"],
    ),
    (
        "SAGA_MAX_STEPS=abc",
        lambda d: ["--plan", write_plan(d, GOOD)],
        {"SAGA_MAX_STEPS": "abc"},
        ["SAGA_MAX_STEPS: Input should be a valid integer"],
    ),
    (
        "SAGA_MAX_STEPS=0",
        lambda d: ["--plan", write_plan(d, GOOD)],
        {"SAGA_MAX_STEPS": "0"},
        ["SAGA_MAX_STEPS: Input should be greater than or equal to 1 (got '0')"],
    ),
    (
        "a plan longer than SAGA_MAX_STEPS",
        lambda d: [
            "--plan",
            write_plan(d, {"steps": [GOOD["steps"][0] | {"id": f"s{n}"} for n in range(3)]}),
        ],
        {"SAGA_MAX_STEPS": "2"},
        ["plan rejected: plan: has 3 steps, the limit is 2"],
    ),
    (
        "SAGA_TEMPORAL_ADDRESS=garbage",
        lambda d: ["--plan", write_plan(d, GOOD)],
        {"SAGA_TEMPORAL_ADDRESS": "garbage"},
        ["SAGA_TEMPORAL_ADDRESS: must be host:port, e.g. 127.0.0.1:7233 (got 'garbage')"],
    ),
    (
        "invalid policy file",
        lambda d: ["--plan", write_plan(d, GOOD)],
        {"SAGA_POLICY_FILE": "{policy}"},
        [
            "policy.json: approval: Input should be 'always', 'never' or 'risky'",
            "policy.json: max_amount_per_step: Input should be a valid integer",
            "policy.json: unknown: Extra inputs are not permitted",
        ],
    ),
]


def _file(folder: Path, name: str, text: str) -> str:
    path = folder / name
    path.write_text(text)
    return str(path)


def _markup_path(folder: Path, plan: Any) -> str:
    """A plan at `<folder>/x[/]plan.json` (a folder `x[` holding `]plan.json`)."""
    (folder / "x[").mkdir(exist_ok=True)
    return _file(folder / "x[", "]plan.json", json.dumps(plan))


@pytest.mark.parametrize(
    "args,settings,lines", [pytest.param(*c[1:], id=c[0]) for c in START_CASES]
)
async def test_bad_start_is_refused_before_anything_starts(
    stack: Stack,
    tmp_path: Path,
    args: StartArgs,
    settings: dict[str, str],
    lines: list[str],
) -> None:
    policy = json.dumps({"approval": "sometimes", "max_amount_per_step": "ten", "unknown": 1})
    files = {"policy": _file(tmp_path, "policy.json", policy)}
    extra = {k: v.format(**files) for k, v in settings.items()}
    sid = unique("refused")
    proc = await run(stack, "start", *args(tmp_path), "--id", sid, **extra)
    assert_refused(proc, *lines)
    await assert_nothing_started(stack, sid)


async def test_a_policy_rejection_is_bad_input(stack: Stack, tmp_path: Path) -> None:
    policy = _file(tmp_path, "policy.json", json.dumps({"allowed_actions": ["effects.notify"]}))
    sid = unique("refused")
    proc = await run(
        stack, "start", "--plan", write_plan(tmp_path, GOOD), "--id", sid, "--json",
        SAGA_POLICY_FILE=policy,
    )  # fmt: skip
    assert_refused(proc, "plan rejected: step 'a': action effects.apply is not allowed by policy")
    await assert_nothing_started(stack, sid)


@pytest.mark.parametrize("command", ["worker", "reconcile"])
@pytest.mark.parametrize(
    "url,line",
    [
        pytest.param(
            "garbage",
            "SAGA_DATABASE_URL: not a database URL: 'garbage' (e.g. postgresql+psycopg://",
            id="garbage",
        ),
        pytest.param(
            UNREACHABLE_PG,
            "SAGA_DATABASE_URL: cannot use postgresql+psycopg://saga:***@127.0.0.1:1/ledger: "
            "connection failed",
            id="unreachable-postgres",
        ),
    ],
)
async def test_a_ledger_that_cannot_be_opened_is_one_line(
    stack: Stack, tmp_path: Path, command: str, url: str, line: str
) -> None:
    proc = await run(
        stack, command, SAGA_DATABASE_URL=url, SAGA_DATA_DIR=str(tmp_path / "data"), timeout=60
    )
    assert_refused(proc, line)
    assert "s3cret" not in proc.stderr


def _listening() -> socket.socket:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen()
    return s


@pytest.mark.parametrize(
    "args,settings,line",
    [
        pytest.param(["status", "x"], {"SAGA_SMTP_PORT": "x"}, "SAGA_SMTP_PORT: ", id="smtp-port"),
        pytest.param(
            ["status", "x"],
            {"SAGA_TEMPORAL_ADDRESS": "http://temporal:7233"},
            "SAGA_TEMPORAL_ADDRESS: must be host:port",
            id="temporal-address-url",
        ),
        pytest.param(
            ["status", "x"],
            {"SAGA_TEMPORAL_ADDRESS": "127.0.0.1:1"},
            "SAGA_TEMPORAL_ADDRESS: cannot reach Temporal at 127.0.0.1:1",
            id="temporal-unreachable",
        ),
        pytest.param(
            ["worker"],
            {"SAGA_MODEL_TIMEOUT_SECONDS": "soon"},
            "SAGA_MODEL_TIMEOUT_SECONDS: Input should be a valid number",
            id="planner-setting",
        ),
        pytest.param(
            ["worker"],
            {
                "SAGA_INVENTORY_URL": UNREACHABLE_PG,
                "SAGA_ACTIVITIES": "activities:build_activities,compensations:build_compensations",
            },
            "SAGA_INVENTORY_URL: cannot use postgresql+psycopg://saga:***@127.0.0.1:1/ledger",
            id="inventory-unreachable",
        ),
        pytest.param(
            ["list", "--limit", "many"],
            {},
            "argument --limit: not a positive whole number: 'many' (see `saga list --help`)",
            id="argument",
        ),
        pytest.param(
            ["web", "--port", "{busy}"],
            {"SAGA_WEB_TOKEN": "t" * 24},
            "--host/--port: cannot serve on 127.0.0.1:{busy} (Address already in use)",
            id="web-port-in-use",
        ),
        pytest.param(
            ["web"],
            {"SAGA_WEB_TOKEN": "secret"},
            "SAGA_WEB_TOKEN: at least 16 characters (got 6); e.g. python -c 'import secrets; "
            "print(secrets.token_urlsafe(24))'",
            id="web-token-too-short",
        ),
        pytest.param(
            ["worker"],
            {"SAGA_METRICS_PORT": "{busy}"},
            "SAGA_METRICS_PORT: cannot serve on 127.0.0.1:{busy} (Address already in use)",
            id="metrics-port-in-use",
        ),
        pytest.param(
            ["worker"],
            {"SAGA_TEMPORAL_METRICS_PORT": "{busy}"},
            "SAGA_TEMPORAL_METRICS_PORT: cannot serve on 127.0.0.1:{busy} (Address already in use)",
            id="temporal-metrics-port-in-use",
        ),
        pytest.param(
            ["dev", "--port", "{busy}"],
            {},
            "--port: cannot serve on 127.0.0.1:{busy} (Address already in use)",
            id="dev-port-in-use",
        ),
    ],
)
async def test_bad_settings_and_arguments_are_one_line(
    stack: Stack, tmp_path: Path, args: list[str], settings: dict[str, str], line: str
) -> None:
    with _listening() as busy:
        port = str(busy.getsockname()[1])
        proc = await run(
            stack,
            *(a.format(busy=port) for a in args),
            SAGA_DATA_DIR=str(tmp_path / "data"),
            timeout=60,
            **{k: v.format(busy=port) for k, v in settings.items()},
        )
    assert_refused(proc, line.format(busy=port))
    assert "s3cret" not in proc.stderr


# -- what users write is printed as written ----------------------------------------------
async def test_markup_in_a_saga_id_is_printed_as_written(stack: Stack, tmp_path: Path) -> None:
    sid = unique("id[/]x[bold]")
    started = await run(stack, "start", "--plan", write_plan(tmp_path, GOOD), "--id", sid)
    assert started.returncode == 0, started.stderr[-2000:]
    assert started.stdout.strip() == f"started saga {sid}"
    await eventually(lambda: stack.ledger.saga(sid), timeout=60)
    status = await run(stack, "status", sid)
    assert status.returncode == 0, status.stderr[-2000:]
    assert f"saga {sid}: completed" in status.stdout
    listed = await run(stack, "list", "--limit", "500")
    assert "Traceback" not in status.stderr + listed.stderr
    assert listed.returncode == 0 and "[/]" in listed.stdout


async def test_markup_in_a_request_is_printed_as_written(stack: Stack, tmp_path: Path) -> None:
    """The offline planner quotes a request it cannot plan; the quote comes back intact."""
    queue = unique("queue")
    env = cli_env(stack, SAGA_TASK_QUEUE=queue, SAGA_DATA_DIR=str(tmp_path / "data"))
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL"):  # the offline planner, no endpoint
        env.pop(name, None)
    log = tmp_path / "worker.log"
    with log.open("w") as sink:
        worker = subprocess.Popen(
            [sys.executable, "-m", "saga", "worker"], env=env, cwd=ROOT, stderr=sink, stdout=sink
        )
    try:
        await eventually(lambda: "worker polling" in log.read_text(), timeout=90)
        sid = unique("request")
        request = "paint the fence [/] [bold]blue[/bold] :smile:"
        proc = await run(stack, "start", request, "--id", sid, "--wait", env=env)
    finally:
        worker.send_signal(signal.SIGINT)
        worker.wait(timeout=60)
    assert "Traceback" not in proc.stderr + proc.stdout, proc.stderr[-3000:]
    assert proc.returncode == 1, (proc.stdout[-2000:], proc.stderr[-2000:])
    assert "rejected" in proc.stdout
    assert request in " ".join(proc.stdout.split()), proc.stdout


# -- every edge has the limits, not only the command line -------------------------------
async def test_start_saga_refuses_what_would_not_fit(stack: Stack) -> None:
    sid = unique("too-big")
    with pytest.raises(InputRejected) as refused:
        await start_saga(
            stack.client,
            None,
            saga_id=sid,
            task_queue=stack.settings.task_queue,
            request="x" * 1_000_000,
        )
    assert refused.value.problems == [
        f"request is 1,000,000 bytes, over the limit of {MAX_REQUEST_BYTES:,} bytes"
    ]
    with pytest.raises(InputRejected, match="the request is empty"):
        await start_saga(
            stack.client, None, saga_id=sid, task_queue=stack.settings.task_queue, request=" "
        )
    await assert_nothing_started(stack, sid)


async def test_a_start_around_start_saga_is_rejected_by_the_workflow(stack: Stack) -> None:
    """A 1 MB request started on Temporal directly (not through start_saga) is rejected by
    the workflow itself, naming the limit, before the planner and its payloads see it."""
    sid = unique("raw-too-big")
    await stack.client.start_workflow(
        "SagaWorkflow",
        SagaInput(request="x" * 1_000_000),
        id=sid,
        task_queue=stack.settings.task_queue,
    )
    result = await asyncio.wait_for(wait_saga(stack.client, sid), timeout=60)
    assert result.status == SagaStatus.REJECTED
    assert result.problems == [
        f"request is 1,000,000 bytes, over the limit of {MAX_REQUEST_BYTES:,} bytes"
    ]
    await eventually(lambda: (stack.ledger.saga(sid) or {}).get("status") == "rejected")
