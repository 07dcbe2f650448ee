"""`saga status` and `saga watch` stay light: run against a real saga, they import neither
the Agents SDK (nor Temporal's plugin for it) nor the web app."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

from tests.conftest import Stack, unique
from tests.test_cli import ROOT, cli_env, saga, write_plan

# The command as `saga` runs it (main() is what the console script calls before it
# exits), then the names of every module the process holds.
PROBE = """\
import json, sys
from saga.cli._main import main
code = main(sys.argv[2:])
with open(sys.argv[1], "w") as f:
    json.dump({"code": code, "modules": sorted(sys.modules)}, f)
"""
HEAVY = ("agents", "openai", "temporalio.openai_agents", "temporalio.contrib.openai_agents")
WEB = ("saga.web", "fastapi", "starlette", "uvicorn")


def _heavy(modules: list[str]) -> list[str]:
    return [
        m for m in modules if m.startswith(tuple(f"{p}." for p in HEAVY + WEB)) or m in HEAVY + WEB
    ]


async def _probe(stack: Stack, out: Path, *args: str) -> tuple[int, list[str]]:
    proc = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-c", PROBE, str(out), *args],
        capture_output=True,
        text=True,
        env=cli_env(stack),
        cwd=ROOT,
        timeout=120,
    )
    assert out.exists(), proc.stderr
    found = json.loads(out.read_text())
    return found["code"], found["modules"]


async def test_status_and_watch_import_no_agents_sdk_and_no_web_app(
    stack: Stack, tmp_path: Path
) -> None:
    plan = {"steps": [{"id": "a", "action": "effects.apply", "args": {"name": "a"}}]}
    sid = unique()
    started = await saga(
        stack, "start", "--plan", write_plan(tmp_path, plan), "--id", sid, "--wait"
    )
    assert started.returncode == 0, started.stderr

    for command in (["status", sid], ["status", sid, "--json"], ["watch", sid]):
        code, modules = await _probe(stack, tmp_path / f"{command[0]}.json", *command)
        assert code == 0, command
        # It did reach the saga: the client, and for watch the live view, were loaded.
        assert "saga._client" in modules
        assert ("saga.cli._live" in modules) == (command[0] == "watch")
        assert _heavy(modules) == [], command


def test_the_probe_would_see_them() -> None:
    """The check above is not vacuous: the modules it looks for are real names that a
    heavier command path does import."""
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            "import json, sys, saga.planner._agent, saga.web.app;"
            "print(json.dumps(sorted(sys.modules)))",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    found = set(_heavy(json.loads(proc.stdout)))
    assert {"agents", "temporalio.openai_agents", "saga.web", "fastapi", "starlette"} <= found
