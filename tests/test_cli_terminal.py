"""What the terminal shows: a waited-for saga's table once, with its outcome on a line of
its own, on a terminal and piped; Ctrl-C while waiting; a cancel that took effect; a
reader of stdout that goes away; and how `saga dev` is used from another terminal."""

from __future__ import annotations

import asyncio
import fcntl
import os
import re
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from temporalio.client import Client, WorkflowExecutionStatus

from saga import free_port
from tests import effects
from tests.conftest import Stack, eventually, unique
from tests.terminal import Run, run_saga
from tests.test_cli import ROOT, cli_env, saga, write_plan

TABLE_TOP = "┏"  # the first character of every table the CLI prints


def _apply(name: str, **args: object) -> dict[str, object]:
    return {"id": name, "action": "effects.apply", "args": {"name": name, **args}}


def _wait(seconds: int = 300) -> dict[str, object]:
    return {"id": "w", "action": "saga.wait", "args": {"seconds": seconds}}


async def _run(stack: Stack, *args: str, tty: bool, interrupt_when: str | None = None) -> Run:
    """The CLI in a thread (the worker shares this test's event loop)."""
    env = cli_env(stack)
    return await asyncio.to_thread(
        run_saga, list(args), env, tty=tty, interrupt_when=interrupt_when
    )


async def _started(stack: Stack, tmp_path: Path, *steps: dict[str, object]) -> str:
    sid = unique()
    plan = write_plan(tmp_path, {"steps": list(steps)})
    started = await saga(stack, "start", "--plan", plan, "--id", sid)
    assert started.returncode == 0, started.stderr
    await eventually(lambda: effects.effects_of(stack.effects, sid))
    return sid


async def _execution(client: Client, sid: str) -> WorkflowExecutionStatus | None:
    return (await client.get_workflow_handle(sid).describe()).status


# -- the final table once, the outcome on its own line ----------------------------------
@pytest.mark.parametrize("tty", [False, True], ids=["piped", "terminal"])
async def test_start_wait_shows_the_final_table_once(
    stack: Stack, tmp_path: Path, tty: bool
) -> None:
    sid = unique()
    plan = write_plan(tmp_path, {"steps": [_apply("a", delay=2), _apply("b")]})
    run = await _run(stack, "start", "--plan", plan, "--id", sid, "--wait", tty=tty)
    assert run.code == 0, run.stdout + run.stderr
    screen = run.screen
    assert screen.count(TABLE_TOP) == 1, screen
    assert screen.count(sid) == 1, screen
    lines = screen.splitlines()
    assert lines[0] == f"saga {sid}: completed", screen
    assert lines[-1] == "completed: 2 steps done", screen
    assert "Traceback" not in run.stdout + run.stderr
    if tty:  # the live table was drawn while step a ran, and then cleared
        assert re.search(rf"saga {sid}\s+running", run.plain), run.plain
        assert run.stdout.count(TABLE_TOP) > 1
    else:
        assert "\x1b[" not in run.stdout
        assert run.stderr.splitlines() == [
            f"waiting for saga {sid} to end (Ctrl-C stops the waiting, not the saga)"
        ]


@pytest.mark.parametrize("tty", [False, True], ids=["piped", "terminal"])
async def test_cancel_wait_says_what_was_undone(stack: Stack, tmp_path: Path, tty: bool) -> None:
    sid = await _started(stack, tmp_path, _apply("a"), _wait())
    run = await _run(stack, "cancel", sid, "--wait", tty=tty)
    assert run.code == 0, run.stdout + run.stderr
    screen = run.screen
    lines = screen.splitlines()
    assert lines[0] == f"cancel requested for saga {sid}; compensating what ran", screen
    assert screen.count(TABLE_TOP) == 1, screen
    assert lines[1] == f"saga {sid}: cancelled", screen
    assert lines[-1] == "cancelled: 1 step compensated", screen
    assert "error" not in screen
    assert effects.effects_of(stack.effects, sid)[0]["reverted"]


async def test_cancel_wait_stops_when_an_undo_needs_a_person(stack: Stack, tmp_path: Path) -> None:
    """An undo that fails past its retries: `cancel --wait` ends non-zero with what to do
    (it waited forever before); doing it finishes the cancel."""
    sid = await _started(stack, tmp_path, _apply("a", revert_failures=1000), _wait())
    run = await _run(stack, "cancel", sid, "--wait", tty=False)
    assert run.code == 1, run.stdout + run.stderr
    assert run.stdout.count(TABLE_TOP) == 1
    assert "undoing what ran (cancelled)" in run.stdout.splitlines()
    command = f"saga resolve {sid} a"
    assert "needs attention: step a (eff-" in run.stdout and command in run.stdout
    resolved = await saga(stack, "resolve", sid, "a", "--note", "undone by hand")
    assert resolved.returncode == 0, resolved.stderr
    await eventually(lambda: _closed_as(stack.client, sid, WorkflowExecutionStatus.CANCELED))
    shown = await saga(stack, "status", sid)
    lines = shown.stdout.splitlines()
    # The outcome under the table, then the decisions that led there (the audit trail).
    outcome = lines.index("cancelled: 0 steps compensated, 1 step resolved by hand")
    assert lines[outcome + 1] == "decisions:"
    decided = [ln.split(" (cli): ", 1)[1] for ln in lines[outcome + 2 :]]
    assert decided[-2:] == ["cancel -> exit 1", "resolve step a -> done (note undone by hand)"]


# -- Ctrl-C while waiting ---------------------------------------------------------------
@pytest.mark.parametrize("tty", [False, True], ids=["piped", "terminal"])
@pytest.mark.parametrize("command", ["start", "watch", "cancel"])
async def test_ctrl_c_while_waiting_says_the_saga_goes_on(
    stack: Stack, tmp_path: Path, command: str, tty: bool
) -> None:
    # On a terminal Ctrl-C comes once the live table shows; piped, once the CLI says it waits.
    shown = TABLE_TOP if tty else "Ctrl-C stops the waiting"
    if command == "start":
        sid = unique()
        plan = write_plan(tmp_path, {"steps": [_apply("a"), _wait()]})
        args = ["start", "--plan", plan, "--id", sid, "--wait"]
    else:
        undo = {"revert_delay": 6} if command == "cancel" else {}
        sid = await _started(stack, tmp_path, _apply("a", **undo), _wait())
        args = [command, sid] + (["--wait"] if command == "cancel" else [])
    run = await _run(stack, *args, tty=tty, interrupt_when=shown)
    assert run.interrupted and run.code == 130, run.stdout + run.stderr
    said = (run.screen if tty else run.stderr).splitlines()
    assert "Traceback" not in run.stdout + run.stderr
    if command == "cancel":
        assert f"saga {sid} is still being cancelled; Ctrl-C stopped only the waiting" in said
        assert f"  watch it:  saga watch {sid}" == said[-1], said
        # The cancel goes on without the CLI: the undo finishes.
        await eventually(
            lambda: _closed_as(stack.client, sid, WorkflowExecutionStatus.CANCELED), timeout=60
        )
    else:
        assert said[-3:] == [
            f"saga {sid} keeps running; Ctrl-C stopped only the waiting",
            f"  watch it:  saga watch {sid}",
            f"  cancel it: saga cancel {sid}",
        ], said
        assert await _execution(stack.client, sid) == WorkflowExecutionStatus.RUNNING
        await stack.client.get_workflow_handle(sid).cancel()
    if tty:  # the last live table stays above the hint
        assert run.screen.count(TABLE_TOP) == 1 and re.search(rf"saga {sid}\s+\w", run.screen)


async def _closed_as(client: Client, sid: str, status: WorkflowExecutionStatus) -> bool:
    return await _execution(client, sid) == status


# -- a reader that goes away ------------------------------------------------------------
def _cut_off(args: list[str], env: dict[str, str]) -> tuple[int, str, bytes]:
    """`saga ARGS | head -1` through a pipe that holds 4 KiB: an output much longer than
    that is still being written when head exits."""
    read_end, write_end = os.pipe()
    fcntl.fcntl(write_end, fcntl.F_SETPIPE_SZ, 4096)
    proc = subprocess.Popen(
        [sys.executable, "-m", "saga", *args], stdout=write_end, stderr=subprocess.PIPE,
        env=env, cwd=ROOT,
    )  # fmt: skip
    os.close(write_end)
    head = subprocess.run(["head", "-1"], stdin=read_end, capture_output=True, timeout=60)
    os.close(read_end)
    _, stderr = proc.communicate(timeout=60)
    return proc.returncode, stderr.decode(), head.stdout


def _closed_reader(args: list[str], env: dict[str, str]) -> tuple[int, str]:
    """`saga ARGS` writing to a pipe nobody reads any more."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    proc = subprocess.run(
        [sys.executable, "-m", "saga", *args], stdout=write_end, stderr=subprocess.PIPE,
        env=env, cwd=ROOT, timeout=60,
    )  # fmt: skip
    os.close(write_end)
    return proc.returncode, proc.stderr.decode()


async def test_a_reader_that_goes_away_ends_the_command_quietly(
    stack: Stack, tmp_path: Path
) -> None:
    """`saga status ID --json | head -1` (and any command, table or JSON): no traceback,
    exit code 141 (128 + SIGPIPE), as for a command the shell saw killed by SIGPIPE."""
    steps = [
        {"id": f"s{i}", "action": "effects.apply", "args": {"name": "x" * 100}} for i in range(20)
    ]
    sid = unique()
    done = await saga(
        stack, "start", "--plan", write_plan(tmp_path, {"steps": steps}), "--id", sid, "--wait"
    )
    assert done.returncode == 0, done.stderr
    whole = await saga(stack, "status", sid, "--json")
    assert len(whole.stdout) > 4 * 4096  # far more than the pipe and head's read hold
    env = cli_env(stack)
    code, stderr, first = await asyncio.to_thread(_cut_off, ["status", sid, "--json"], env)
    assert (code, stderr, first) == (141, "", b"{\n")
    for args in (["status", sid], ["catalog"]):
        assert await asyncio.to_thread(_closed_reader, args, env) == (141, ""), args


# -- `saga dev` from another terminal ----------------------------------------------------
async def test_saga_dev_says_how_to_use_it_from_another_terminal(
    stack: Stack, tmp_path: Path
) -> None:
    """The lines `saga dev` prints are enough: the variables it names, set in a terminal
    elsewhere (another directory, none of dev's SAGA_* variables), run its example
    command; the mail lands where it says, the inventory is where it says."""
    env = cli_env(
        stack,
        SAGA_DATA_DIR=str(tmp_path / "data"),
        SAGA_ACTIVITIES="tests.histories.record:build_activities",
        SAGA_TASK_QUEUE=unique("dev-queue"),
    )
    for name in ("SAGA_TEMPORAL_ADDRESS", "SAGA_DATABASE_URL", "SAGA_PAYLOAD_KEYS"):
        env.pop(name)
    port, web_port = free_port(), free_port()
    log = tmp_path / "dev.err"
    with log.open("w") as sink:
        dev = subprocess.Popen(
            [sys.executable, "-m", "saga", "dev", "--port", str(port), "--web-port", str(web_port)],
            env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=sink,
        )  # fmt: skip
    try:
        said = await eventually(
            lambda: re.search(
                r"^mail: SMTP on 127\.0\.0\.1:(\d+); each message is saved in (.+)\n"
                r"inventory: (.+)\n"
                r"from another terminal:\n"
                r"  export (.+)\n"
                r"  (saga .+)\n"
                r"  \(with these set as here too: (.+)\)\n",
                log.read_text(),
                re.MULTILINE,
            ),
            timeout=90,
            interval=0.5,
        )
        mail, inventory, export, command, also = said.group(2, 3, 4, 5, 6)
        given = dict(pair.split("=", 1) for pair in shlex.split(export))
        assert given == {
            "SAGA_TEMPORAL_ADDRESS": f"127.0.0.1:{port}",
            "SAGA_DATA_DIR": str((tmp_path / "data").resolve()),
            "SAGA_TASK_QUEUE": env["SAGA_TASK_QUEUE"],
        }
        assert "SAGA_ACTIVITIES" in also.split(", ")
        assert inventory == f"sqlite:///{(tmp_path / 'data' / 'inventory.db').resolve()}"
        assert Path(mail) == (tmp_path / "data" / "mail").resolve()
        elsewhere = tmp_path / "elsewhere"
        elsewhere.mkdir()
        other = {k: v for k, v in os.environ.items() if not k.startswith("SAGA_")}
        other.update(given, **{name: env[name] for name in also.split(", ")})
        other["PYTHONPATH"] = str(ROOT)  # where the tests' activities import from
        argv = shlex.split(command)
        assert argv[0] == "saga"
        ran = await asyncio.to_thread(
            subprocess.run,
            [str(Path(sys.executable).parent / "saga"), *argv[1:]],
            env=other, cwd=elsewhere, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert ran.returncode == 0, ran.stdout + ran.stderr
        assert ran.stdout.splitlines()[-1] == "completed: 3 steps done", ran.stdout
        assert [p.suffix for p in Path(mail).iterdir()] == [".eml"]
        assert Path(inventory.removeprefix("sqlite:///")).is_file()
    finally:
        dev.send_signal(signal.SIGINT)
        assert dev.wait(timeout=30) == 0
