"""Real servers, started once per session: Temporal dev server, PostgreSQL databases."""

from __future__ import annotations

import asyncio
import os
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import Engine
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from saga import (
    Ledger,
    PayloadKeys,
    Settings,
    create_worker,
    data_converter,
    payload_keys,
    temporal_binary,
)
from saga._index import server_args
from tests import effects
from tests.pgdb import pg_database

pytest_plugins = sorted(
    f"tests.servers.{p.stem}"
    for p in (Path(__file__).parent / "servers").glob("*.py")
    if p.stem != "__init__"
)

ARTIFACTS = Path(__file__).parent.parent / "test-artifacts"

# Every process of the session (this one, and the CLI and worker subprocesses, which
# inherit the environment) encrypts payloads with one key made for the session.
os.environ.setdefault("SAGA_PAYLOAD_KEYS", PayloadKeys.new_entry("test-session"))
SESSION_KEYS = payload_keys(Settings())


@pytest.fixture(autouse=True)
def _no_real_model_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail any test that would reach a real model endpoint."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-a-real-key")
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/refuse-real-model-calls")


@pytest.fixture(scope="session")
async def env() -> AsyncIterator[WorkflowEnvironment]:
    async with await WorkflowEnvironment.start_local(
        dev_server_existing_path=temporal_binary(),
        dev_server_extra_args=server_args(),
        data_converter=data_converter(SESSION_KEYS),
    ) as env:
        yield env


@pytest.fixture(scope="session")
def client(env: WorkflowEnvironment) -> Client:
    return env.client


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this session, dropped afterwards."""
    with pg_database("saga_test") as url:
        yield url


@pytest.fixture(scope="session")
def effects_engine(tmp_path_factory: pytest.TempPathFactory) -> Engine:
    url = f"sqlite:///{tmp_path_factory.mktemp('effects') / 'effects.db'}"
    os.environ["SAGA_TEST_EFFECTS_URL"] = url
    return effects.make_engine(url)


@dataclass
class Stack:
    """A running worker: its settings (task queue), ledger and the effects it counts."""

    client: Client
    settings: Settings
    ledger: Ledger
    effects: Engine
    worker: Worker


async def _stack(
    client: Client, ledger_url: str, effects_engine: Engine, data_dir: Path
) -> AsyncIterator[Stack]:
    settings = Settings(
        task_queue=f"saga-{uuid.uuid4().hex[:8]}",
        database_url=ledger_url,
        data_dir=data_dir,
        activities="tests.effects:build_activities",
    )
    ledger = Ledger(ledger_url)
    worker = create_worker(client, settings, ledger)
    async with worker:
        yield Stack(client, settings, ledger, effects_engine, worker)
    ledger.close()


@pytest.fixture(scope="session")
async def stack(
    client: Client, effects_engine: Engine, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Stack]:
    """A worker on a SQLite ledger, shared by the session."""
    data = tmp_path_factory.mktemp("saga")
    async for s in _stack(client, f"sqlite:///{data / 'ledger.db'}", effects_engine, data):
        yield s


@pytest.fixture(scope="session", params=["sqlite", "postgresql"])
async def any_stack(
    request: pytest.FixtureRequest,
    client: Client,
    effects_engine: Engine,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[Stack]:
    """A worker on each ledger backend (the test runs once per backend)."""
    data = tmp_path_factory.mktemp("saga")
    if request.param == "sqlite":
        url = f"sqlite:///{data / 'ledger.db'}"
        async for s in _stack(client, url, effects_engine, data):
            yield s
        return
    with pg_database("saga_test") as url:
        async for s in _stack(client, url, effects_engine, data):
            yield s


def unique(prefix: str = "saga") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


async def eventually(check, timeout: float = 20.0, interval: float = 0.1):  # type: ignore[no-untyped-def]
    """Poll ``check`` (sync or async) until it returns a truthy value."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = check()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(interval)


def run(cmd: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, **kwargs)  # type: ignore[call-overload, no-any-return]
