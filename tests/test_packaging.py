"""A real install: the wheel holds what `saga demo` needs, and an installed copy runs from
any directory with its bundled plans, web assets and migrations read from itself."""

from __future__ import annotations

import configparser
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from saga import PayloadKeys

ROOT = Path(__file__).parent.parent
# What `pip install .` builds from: the files docker/Dockerfile copies into its build.
SOURCES = ("pyproject.toml", "README.md", "saga", "activities", "compensations")
PACKAGES = ("saga", "activities", "compensations")
EXAMPLES = ["order", "order_cancel", "order_declined"]


def _run(
    cmd: list[str], cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def _source_files(package: str) -> set[str]:
    return {
        path.relative_to(ROOT).as_posix()
        for path in (ROOT / package).rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    }


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel `pip wheel .` builds, from a copy so no stale build/ of this tree leaks in."""
    src = tmp_path_factory.mktemp("src")
    for name in SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(ROOT / name, src / name)
    out = tmp_path_factory.mktemp("dist")
    pip = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w"]
    built = _run([*pip, str(out), str(src)])
    assert built.returncode == 0, built.stderr
    (path,) = out.glob("saga_agent-*.whl")
    return path


def test_wheel_holds_what_the_demo_needs(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        (entry_points,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
        scripts = configparser.ConfigParser()
        scripts.read_string(zf.read(entry_points).decode())
    assert {f"saga/examples/{name}.json" for name in EXAMPLES} <= names
    web = ("index.html", "login.html", "saga.html", "app.js", "style.css")
    assert {f"saga/web/{name}" for name in web} <= names
    migrations = ("env.py", "script.py.mako", "versions/0001_ledger.py")
    assert {f"saga/_migrations/{name}" for name in migrations} <= names
    systems = ("inventory", "payments", "tickets")
    assert {f"activities/{s}.py" for s in (*systems, "notify")} <= names
    assert {f"compensations/{s}.py" for s in systems} <= names
    assert scripts["console_scripts"]["saga"] == "saga.cli._main:run"
    # Nothing in the packages is left behind, and nothing outside them comes along.
    for package in PACKAGES:
        assert _source_files(package) - names == set(), package
    assert not any(n.startswith(("examples/", "tests/")) for n in names)


def test_installed_copy_runs_from_any_directory(wheel: Path, tmp_path: Path) -> None:
    target = tmp_path / "site"
    pip = [sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "--target"]
    installed = _run([*pip, str(target), str(wheel)])
    assert installed.returncode == 0, installed.stderr
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    # No site processing (-S), so the editable install of this checkout (a .pth hook) is
    # not loaded; the dependencies come from this venv's site-packages, saga only from
    # the installed wheel. -P keeps the script's directory off sys.path.
    deps = sysconfig.get_paths()["purelib"]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SAGA_", "PYTHON"))}
    env.update(
        SAGA_DATA_DIR=str(tmp_path / "data"),
        SAGA_TEMPORAL_ADDRESS="127.0.0.1:1",
        SAGA_PAYLOAD_KEYS=PayloadKeys.new_entry("packaging"),
    )
    python = [sys.executable, "-S", "-P"]

    def run(*args: str, path: str) -> subprocess.CompletedProcess[str]:
        return _run([*python, *args], cwd=elsewhere, env={**env, "PYTHONPATH": path})

    # Without the installed copy there is no saga at all on this path.
    without = run("-c", "import saga", path=deps)
    assert without.returncode == 1 and "No module named 'saga'" in without.stderr

    path = os.pathsep.join([str(target), deps])
    probe = run(
        "-c",
        "import json, activities, compensations, saga\n"
        "from saga._catalog import catalog\n"
        "from saga.dev._examples import example_names, find_example, read_example\n"
        "from saga._plan import validate_plan\n"
        "print(json.dumps({\n"
        "  'modules': [m.__file__ for m in (saga, activities, compensations)],\n"
        "  'names': example_names(),\n"
        "  'order': str(find_example('order')),\n"
        "  'steps': {n: len(validate_plan(read_example(n), catalog).steps)\n"
        "            for n in example_names()},\n"
        "}))",
        path=path,
    )
    assert probe.returncode == 0, probe.stderr
    found = json.loads(probe.stdout)
    for module in found["modules"]:
        assert Path(module).is_relative_to(target), module
    assert found["names"] == EXAMPLES
    assert Path(found["order"]) == target / "saga" / "examples" / "order.json"
    assert found["steps"] == {"order": 3, "order_cancel": 4, "order_declined": 3}

    # The console script: a bundled plan by name passes validation and reaches the point
    # of connecting (nothing listens on port 1); an unknown name is one line, exit 2.
    saga = str(target / "bin" / "saga")
    by_name = run(saga, "start", "--plan", "order", path=path)
    assert by_name.returncode == 2 and "cannot reach Temporal" in by_name.stderr, by_name.stderr
    unknown = run(saga, "start", "--plan", "nope", path=path)
    assert unknown.returncode == 2
    assert unknown.stderr.strip() == (
        "saga: plan file not found: nope (nor a bundled example: order, order_cancel, "
        "order_declined)"
    )
    # A real file wins over the bundled plan of the same name.
    (elsewhere / "order.json").write_text(
        json.dumps({"steps": [{"id": "x", "action": "payments.steal", "args": {}}]})
    )
    local = run(saga, "start", "--plan", "order.json", path=path)
    assert local.returncode == 2 and "unknown action 'payments.steal'" in local.stderr
