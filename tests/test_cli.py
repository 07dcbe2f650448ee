"""The `saga` command line against the real server, as a user runs it."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from temporalio.client import Client

from saga import free_port
from tests import effects
from tests.conftest import Stack, eventually, unique

ROOT = Path(__file__).parent.parent


def cli_env(stack: Stack, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        SAGA_TEMPORAL_ADDRESS=stack.client.service_client.config.target_host,
        SAGA_TASK_QUEUE=stack.settings.task_queue,
        SAGA_ACTIVITIES="tests.effects:build_activities",
        SAGA_DATABASE_URL=stack.settings.ledger_url(),
    )
    env.update(extra)
    return env


async def saga(stack: Stack, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
    """Run the CLI in a thread: the worker shares this test's event loop."""
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "saga", *args],
        capture_output=True,
        text=True,
        env=cli_env(stack, **extra),
        cwd=ROOT,
        timeout=120,
    )


def write_plan(tmp_path: Path, plan: Any) -> str:
    path = tmp_path / f"{unique('plan')}.json"
    path.write_text(json.dumps(plan))
    return str(path)


async def test_start_wait_json_completed(stack: Stack, tmp_path: Path) -> None:
    plan = {"steps": [{"id": "a", "action": "effects.apply", "args": {"name": "a"}}]}
    sid = unique()
    proc = await saga(
        stack, "start", "--plan", write_plan(tmp_path, plan), "--id", sid, "--wait", "--json"
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["status"] == "completed"
    assert result["steps"][0]["external_id"].startswith("eff-")
    status = await saga(stack, "status", sid, "--json")
    assert status.returncode == 0 and json.loads(status.stdout)["status"] == "completed"
    listed = await saga(stack, "list", "--json")
    assert sid in {row["saga_id"] for row in json.loads(listed.stdout)}
    again = await saga(stack, "start", "--plan", write_plan(tmp_path, plan), "--id", sid)
    assert again.returncode == 2 and f"saga {sid} already exists" in again.stderr
    assert len(effects.effects_of(stack.effects, sid)) == 1


async def test_start_in_act_mode(stack: Stack, tmp_path: Path) -> None:
    sid = unique()
    request = "effects.apply name=a then effects.notify name=done"
    proc = await saga(stack, "start", "--mode", "act", request, "--id", sid, "--wait")
    assert proc.returncode == 0, proc.stderr
    assert "call-1" in proc.stdout and "call-2" in proc.stdout
    shown = await saga(stack, "status", sid, "--json")
    result = json.loads(shown.stdout)
    assert result["mode"] == "act" and result["status"] == "completed"
    assert result["answer"].endswith("did effects.apply, effects.notify")
    text = await saga(stack, "status", sid)
    assert "answer: offline planner (no OPENAI_API_KEY): did effects.apply" in text.stdout
    plan = write_plan(tmp_path, {"steps": []})
    both = await saga(stack, "start", "--mode", "act", "--plan", plan)
    assert both.returncode == 2
    assert "--mode act takes a request in words, not a plan" in both.stderr


async def test_compensated_saga_exits_non_zero(stack: Stack, tmp_path: Path) -> None:
    plan = {
        "steps": [
            {"id": "a", "action": "effects.apply", "args": {"name": "a"}},
            {"id": "b", "action": "effects.apply", "args": {"name": "b", "fail": "before"}},
        ]
    }
    proc = await saga(stack, "start", "--plan", write_plan(tmp_path, plan), "--wait")
    assert proc.returncode == 1
    assert "compensated" in proc.stdout and "injected business failure" in proc.stdout


async def test_cancel_from_the_cli(stack: Stack, tmp_path: Path) -> None:
    plan = {
        "steps": [
            {"id": "a", "action": "effects.apply", "args": {"name": "a"}},
            {"id": "w", "action": "saga.wait", "args": {"seconds": 300}},
        ]
    }
    sid = unique()
    assert (
        await saga(stack, "start", "--plan", write_plan(tmp_path, plan), "--id", sid)
    ).returncode == 0
    await eventually(lambda: effects.effects_of(stack.effects, sid))
    proc = await saga(stack, "cancel", sid, "--wait")
    assert proc.returncode == 0, proc.stderr
    status = json.loads((await saga(stack, "status", sid, "--json")).stdout)
    assert status["status"] == "cancelled"
    assert status["steps"][0]["compensation"] == "compensated"
    again = await saga(stack, "cancel", sid)
    assert again.returncode == 1 and "already cancelled: nothing was cancelled" in again.stdout


@pytest.mark.parametrize(
    "args,message",
    [
        (["start", "--plan", "/does/not/exist.json"], "plan file not found"),
        (
            ["start", "--plan", "nope"],
            "plan file not found: nope "
            "(nor a bundled example: order, order_cancel, order_declined)",
        ),
        (["start"], "give a plan (--plan FILE) or a request"),
        (["status", "no-such-saga"], "no saga 'no-such-saga'"),
    ],
)
async def test_bad_input_is_one_clear_line(stack: Stack, args: list[str], message: str) -> None:
    proc = await saga(stack, *args)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


async def test_invalid_plan_file_starts_nothing(stack: Stack, tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    proc = await saga(stack, "start", "--plan", str(bad))
    assert proc.returncode == 2 and "not valid JSON" in proc.stderr
    plan = {
        "steps": [
            {"id": "a", "action": "effects.apply", "args": {"name": "a"}},
            {"id": "a", "action": "payments.steal", "args": {}},
        ]
    }
    sid = unique()
    proc = await saga(stack, "start", "--plan", write_plan(tmp_path, plan), "--id", sid, "--json")
    assert proc.returncode == 2 and proc.stdout == ""
    problems = proc.stderr.splitlines()
    assert any("duplicate id" in p for p in problems)
    assert any("unknown action 'payments.steal'" in p for p in problems)
    assert "Traceback" not in proc.stderr
    unreachable = await saga(stack, "status", sid, SAGA_TEMPORAL_ADDRESS="127.0.0.1:1")
    assert unreachable.returncode == 2 and "cannot reach Temporal" in unreachable.stderr


def _children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(x) for x in out.split()]


async def test_saga_dev_runs_and_stops_cleanly(stack: Stack, tmp_path: Path) -> None:
    port = free_port()
    # The production systems too (the bundled order example), and no SAGA_PAYLOAD_KEYS:
    # `saga dev` makes the key file in its data directory and the CLI reads it there.
    env = cli_env(
        stack,
        SAGA_DATA_DIR=str(tmp_path / "data"),
        SAGA_ACTIVITIES="tests.histories.record:build_activities",
    )
    env.pop("SAGA_TEMPORAL_ADDRESS")
    env.pop("SAGA_DATABASE_URL")
    env.pop("SAGA_PAYLOAD_KEYS")
    env["SAGA_TASK_QUEUE"] = "saga-dev-test"
    log = tmp_path / "dev.out"
    proc = subprocess.Popen(
        # --web-port 0: any free port, and the link printed says which.
        [sys.executable, "-m", "saga", "dev", "--port", str(port), "--web-port", "0"],
        env=env,
        cwd=ROOT,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:

        async def ready() -> bool:
            try:
                client = await Client.connect(f"127.0.0.1:{port}")
            except RuntimeError:
                return False
            return bool(await client.service_client.check_health())

        await eventually(ready, timeout=90, interval=0.5)
        children = _children(proc.pid)
        assert children, "the dev server should be a child process"
        plan = {"steps": [{"id": "a", "action": "effects.apply", "args": {"name": "a"}}]}
        run = await asyncio.to_thread(
            subprocess.run,
            [
                sys.executable,
                "-m",
                "saga",
                "start",
                "--plan",
                write_plan(tmp_path, plan),
                "--wait",
                "--json",
            ],
            env={**env, "SAGA_TEMPORAL_ADDRESS": f"127.0.0.1:{port}"},
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert run.returncode == 0, run.stderr
        assert (tmp_path / "data" / "temporal.db").exists()
        assert (tmp_path / "data" / "ledger.db").exists()
        assert stat.S_IMODE((tmp_path / "data" / "payload-keys").stat().st_mode) == 0o600
        # `saga dev` gave its localstripe the README's customer, with a saved card.
        look = {"id": "who", "action": "payments.customer", "args": {"email": "ana@example.com"}}
        lookup = write_plan(tmp_path, {"steps": [look]})
        who = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "saga", "start", "--plan", lookup, "--wait", "--json"],
            env={**env, "SAGA_TEMPORAL_ADDRESS": f"127.0.0.1:{port}"},
            cwd=ROOT, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert who.returncode == 0, who.stdout + who.stderr
        [ana] = json.loads(who.stdout)["steps"][0]["result"]["customers"]
        assert [card["last4"] for card in ana["cards"]] == ["4242"]
        # The README's first order: its card number becomes a payment method in dev's
        # localstripe before the saga starts; the output shows neither it nor the email.
        order = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "saga", "start", "--plan", "order", "--wait", "--json"],
            env={**env, "SAGA_TEMPORAL_ADDRESS": f"127.0.0.1:{port}"},
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert order.returncode == 0, order.stdout + order.stderr
        shown = json.loads(order.stdout)
        assert shown["status"] == "completed"
        charge = shown["plan"]["steps"][1]["args"]
        assert "card_number" not in charge and charge["payment_method"].startswith("pm_")
        assert charge["customer_email"] == "a***@example.com"
        assert "4242424242424242" not in order.stdout and "ana@" not in order.stdout
        # The web app came up too, behind a generated operator token.
        url = await eventually(
            lambda: re.search(r"http://127\.0\.0\.1:(\d+)/login\?token=\S+", log.read_text()),
            timeout=60,
        )
        web_port = int(url.group(1))
        assert web_port != 0
        async with httpx.AsyncClient() as http:
            assert (await http.get(f"http://127.0.0.1:{web_port}/api/sagas")).status_code == 401
            login = await http.get(url.group(0), follow_redirects=True)
            assert login.status_code == 200
            listed = await http.get(f"http://127.0.0.1:{web_port}/api/sagas")
            assert listed.status_code == 200
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0
    assert not (tmp_path / "data" / "localstripe.url").exists(), "dev's localstripe is gone"
    deadline = time.monotonic() + 10
    while any(Path(f"/proc/{c}").exists() for c in children) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(Path(f"/proc/{c}").exists() for c in children), "left a process running"


async def test_policy_file_and_approval_from_the_cli(stack: Stack, tmp_path: Path) -> None:
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps({"approval": "always", "allowed_actions": ["effects.apply"]}))
    plan = {"steps": [{"id": "a", "action": "effects.apply", "args": {"name": "a"}}]}
    sid = unique()
    extra = {"SAGA_POLICY_FILE": str(policy)}
    started = await saga(stack, "start", "--plan", write_plan(tmp_path, plan), "--id", sid, **extra)
    assert started.returncode == 0, started.stderr
    status = json.loads((await saga(stack, "status", sid, "--json")).stdout)
    assert status["status"] == "awaiting_approval" and status["approval"] == "pending"
    assert effects.effects_of(stack.effects, sid) == []
    stale = await saga(stack, "approve", sid, "--plan-hash", "0000000000000000")
    assert stale.returncode == 2 and "stale plan hash" in stale.stderr
    approved = await saga(stack, "approve", sid, "--by", "ops")
    assert approved.returncode == 0, approved.stderr
    final = json.loads((await saga(stack, "status", sid, "--json")).stdout)
    assert final["approval"] == "approved"
    await eventually(lambda: len(effects.effects_of(stack.effects, sid)) == 1)
    # The same policy refuses a plan outside it before anything starts.
    bad = {"steps": [{"id": "n", "action": "effects.notify", "args": {"name": "x"}}]}
    refused = await saga(stack, "start", "--plan", write_plan(tmp_path, bad), **extra)
    assert refused.returncode == 2 and "not allowed by policy" in refused.stderr
