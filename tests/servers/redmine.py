"""A real Redmine (the Debian package, installed by `.ci/install-redmine.sh`), once per session.

`rails server` (WEBrick) runs as a child process on a free port bound to 127.0.0.1,
with its own PID file (the default `tmp/pids/server.pid` would block a second server),
and is stopped by its PID at the end of the session.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import httpx
import pytest
from tenacity import Retrying, retry_if_exception_type, stop_after_delay, wait_fixed

from saga import free_port

REDMINE_DIR = Path(os.environ.get("SAGA_TEST_REDMINE_DIR", "/usr/share/redmine"))
KEY_FILE = Path(os.environ.get("SAGA_REDMINE_KEY_FILE", "/etc/redmine/default/saga-api-key"))
STARTUP_TIMEOUT = 120.0

log = logging.getLogger(__name__)


class RedmineServer(NamedTuple):
    url: str
    api_key: str


class _NotUp(Exception):
    """Redmine does not answer yet."""


def _api_key() -> str:
    try:
        key = KEY_FILE.read_text().strip()
    except OSError as exc:
        raise RuntimeError(
            f"no Redmine API key at {KEY_FILE} ({exc.strerror}): "
            "run `.ci/install-redmine.sh` (as root) first"
        ) from None
    if not key:
        raise RuntimeError(f"{KEY_FILE} is empty: run `.ci/install-redmine.sh` again")
    return key


def _debian_bundler_version() -> str | None:
    """The version of Debian's `ruby-bundler`, which `.ci/install-redmine.sh` uses for every
    bundle/rake/rails call (Ruby's default bundler cannot see Debian's gems)."""
    try:
        out = subprocess.run(
            ["dpkg-query", "-W", "-f=${Version}", "ruby-bundler"],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        return None
    return out.split(":", 1)[-1].split("-", 1)[0] or None


def _wait_until_up(proc: subprocess.Popen[bytes], url: str, key: str, log_file: Path) -> None:
    def check() -> None:
        if proc.poll() is not None:
            tail = log_file.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"Redmine exited with code {proc.returncode}:\n{tail}")
        try:
            response = httpx.get(
                f"{url}/users/current.json", headers={"X-Redmine-API-Key": key}, timeout=5
            )
        except httpx.TransportError as exc:
            raise _NotUp(str(exc)) from exc
        if response.status_code >= 500:
            raise _NotUp(f"HTTP {response.status_code}")
        if response.status_code != 200:
            raise RuntimeError(
                f"Redmine is up but refuses the API key from {KEY_FILE} "
                f"(HTTP {response.status_code}): run `.ci/install-redmine.sh` again"
            )

    for attempt in Retrying(
        stop=stop_after_delay(STARTUP_TIMEOUT),
        wait=wait_fixed(0.2),
        retry=retry_if_exception_type(_NotUp),
        reraise=True,
    ):
        with attempt:
            check()


class RedmineProcess:
    """`rails server` as a child process this session owns (stopped by its PID)."""

    def __init__(self) -> None:
        self.key = _api_key()
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.run_dir = Path(tempfile.mkdtemp(prefix="saga-redmine-"))
        self.log_file = self.run_dir / "server.log"
        self.started = time.monotonic()
        env = {**os.environ, "RAILS_ENV": "production", "X_DEBIAN_SITEID": "default"}
        env.setdefault("REDMINE_INSTANCE", "default")
        if bundler := _debian_bundler_version():
            env.setdefault("BUNDLER_VERSION", bundler)
        with self.log_file.open("wb") as out:
            self.proc = subprocess.Popen(
                [
                    "ruby", "bin/rails", "server",
                    "-u", "webrick",
                    "-b", "127.0.0.1",
                    "-p", str(self.port),
                    "-P", str(self.run_dir / "server.pid"),
                ],
                cwd=REDMINE_DIR,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )  # fmt: skip

    def wait_until_up(self) -> RedmineServer:
        asked = time.monotonic()
        _wait_until_up(self.proc, self.url, self.key, self.log_file)
        now = time.monotonic()
        log.warning(
            "Redmine up at %s: %.1fs after launch, the fixture waited %.1fs",
            self.url,
            now - self.started,
            now - asked,
        )
        return RedmineServer(self.url, self.key)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        shutil.rmtree(self.run_dir, ignore_errors=True)


_launched: RedmineProcess | None = None


def _launch() -> RedmineProcess:
    global _launched
    if _launched is None:
        if not (REDMINE_DIR / "bin" / "rails").exists():
            raise RuntimeError(f"no Redmine in {REDMINE_DIR}: run `.ci/install-redmine.sh` first")
        _launched = RedmineProcess()
    return _launched


@pytest.hookimpl(trylast=True)  # after -k/-m deselection
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Boot Redmine (~5-20 s of Ruby) while the session's first tests run, if any
    collected test will use it."""
    if any("redmine" in getattr(item, "fixturenames", ()) for item in items):
        with contextlib.suppress(RuntimeError):  # the fixture reports it
            _launch()


def _stop() -> None:
    global _launched
    if _launched is not None:
        _launched.stop()
        _launched = None


def pytest_sessionfinish() -> None:
    _stop()  # launched at collection but never used (deselected, -x, errors)


@pytest.fixture(scope="session")
def redmine() -> Iterator[RedmineServer]:
    """A running Redmine with REST on and project `ops`: yields (url, admin api_key)."""
    process = _launch()
    try:
        yield process.wait_until_up()
    finally:
        _stop()
