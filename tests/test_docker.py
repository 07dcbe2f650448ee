"""docker/ stays honest: compose, Dockerfile and .env.example agree with the code.

No Docker engine is needed: the files are read, interpolated with docker/.env.example as
`docker compose` would, and checked against saga.Settings, the CLI's parser and
pyproject.toml. The worker's and the migration's commands run for real against the
session's Temporal dev server and PostgreSQL.
"""

from __future__ import annotations

import asyncio
import os
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from sqlalchemy.engine import make_url
from starlette.testclient import TestClient
from temporalio.client import Client

from saga import PayloadKeys, Settings, free_port, temporal_binary
from saga._index import KEYS, registered, server_args
from saga.cli._main import parser
from saga.dev._devserver import DevServer
from saga.planner._agent_settings import AgentSettings
from saga.web.app import TOKEN_ENV, create_app

ROOT = Path(__file__).parent.parent
DOCKER = ROOT / "docker"
COMPOSE = yaml.safe_load((DOCKER / "compose.yaml").read_text())
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
DOCKERFILE = (DOCKER / "Dockerfile").read_text()
SAGA_EXTRA_VARIABLES = {TOKEN_ENV}  # read by the web app itself, not by Settings


# -- compose's variable interpolation, as `docker compose` does it -----------------------
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^${}]*))?\}")
_ESCAPED = "\0dollar\0"


def read_env_file(path: Path) -> dict[str, str]:
    env = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, sep, value = line.partition("=")
            assert sep, f"{path.name}: not KEY=VALUE: {line!r}"
            env[key.strip()] = value.strip()
    return env


ENV_EXAMPLE = read_env_file(DOCKER / ".env.example")


def interpolate(text: str, env: dict[str, str]) -> str:
    """`${VAR}`, `${VAR:-default}`, `${VAR-default}`, `${VAR:?error}`, nested; `$$`."""
    text = text.replace("$$", _ESCAPED)

    def one(m: re.Match[str]) -> str:
        name, op, arg = m.group(1), m.group(2), m.group(3) or ""
        value = env.get(name)
        if op in (":-", ":?") and value == "":
            value = None
        if value is not None:
            return value
        if op in (":?", "?"):
            raise KeyError(f"required variable {name} is not set: {arg}")
        if op in (":-", "-"):
            return arg
        return ""

    while True:
        new = _VAR.sub(one, text)
        if new == text:
            break
        text = new
    assert "${" not in text, f"unparsed interpolation in {text!r}"
    return text.replace(_ESCAPED, "$")


def resolved(value: Any, env: dict[str, str] = ENV_EXAMPLE) -> Any:
    if isinstance(value, str):
        return interpolate(value, env)
    if isinstance(value, list):
        return [resolved(v, env) for v in value]
    if isinstance(value, dict):
        return {k: resolved(v, env) for k, v in value.items()}
    return value


def environment(service: str) -> dict[str, str]:
    env = SERVICES[service].get("environment") or {}
    assert isinstance(env, dict), f"{service}: write environment as a mapping"
    return {k: str(v) for k, v in resolved(env).items()}


def long_running(name: str) -> bool:
    return str(SERVICES[name].get("restart", "")) != "no"


def container_ports(service: str) -> list[int]:
    """Container side of each published port ("127.0.0.1:8080:80" -> 80)."""
    return [
        int(str(p).rsplit(":", 1)[-1].split("/")[0])
        for p in resolved(SERVICES[service].get("ports", []))
    ]


def image_of(service: str) -> str:
    return str(resolved(SERVICES[service]["image"]))


def service_running(image_prefix: str) -> list[str]:
    return [n for n in SERVICES if image_of(n).startswith(image_prefix)]


def healthcheck_command(service: str) -> str:
    test = resolved(SERVICES[service]["healthcheck"]["test"])
    if isinstance(test, str):
        return test
    return " ".join(test[1:]) if test[0] in ("CMD", "CMD-SHELL") else " ".join(test)


# -- the checks ----------------------------------------------------------------------------
def test_every_saga_variable_is_a_setting() -> None:
    known = {f"SAGA_{f.upper()}" for f in Settings.model_fields} | {
        f"SAGA_{f.upper()}" for f in AgentSettings.model_fields
    }
    known |= SAGA_EXTRA_VARIABLES
    used = {k for s in SERVICES for k in (SERVICES[s].get("environment") or {})}
    used |= set(ENV_EXAMPLE)
    unknown = sorted(k for k in used if k.startswith("SAGA_") and k not in known)
    assert not unknown, f"not fields of saga.Settings: {unknown}"


@pytest.mark.parametrize("service", ["worker", "web", "ledger-migrate"])
def test_service_environment_validates_as_settings(
    service: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key in list(Settings.model_fields):
        monkeypatch.delenv(f"SAGA_{key.upper()}", raising=False)
    for key, value in environment(service).items():
        monkeypatch.setenv(key, value)
    settings = Settings()
    AgentSettings()
    assert settings.data_dir == Path("/var/lib/saga") or service == "ledger-migrate"
    # Empty optional values mean "off", as the defaults do.
    assert not settings.otel_endpoint
    assert settings.stripe_api_base is None  # production Stripe, never localstripe


def test_env_example_documents_every_variable() -> None:
    text = (DOCKER / "compose.yaml").read_text()
    referenced = {m.group(1) for m in _VAR.finditer(text.replace("$$", ""))}
    missing = sorted(referenced - set(ENV_EXAMPLE))
    assert not missing, f"add to docker/.env.example: {missing}"
    with pytest.raises(KeyError, match="LEDGER_DB_PASSWORD"):
        resolved(SERVICES["ledger-db"]["environment"], {})


def test_images_are_pinned() -> None:
    for name in SERVICES:
        image = image_of(name)
        repo, _, tag = image.rpartition(":")
        assert repo and "/" not in tag, f"{name}: no tag in {image!r}"
        assert tag != "latest" and re.match(r"\d+\.\d+", tag), f"{name}: {image!r} not pinned"
    base = re.findall(r"^FROM\s+(\S+)", DOCKERFILE, re.MULTILINE)
    assert len(base) == 1 and re.fullmatch(r"python:3\.11\.\d+-slim(-\w+)?", base[0]), base
    assert service_running("temporalio/auto-setup:") or service_running("temporalio/server:")
    assert service_running("temporalio/ui:")
    assert len(service_running("postgres:")) == 2  # Temporal's and the ledger's


def test_every_long_running_service_has_a_healthcheck() -> None:
    for name, svc in SERVICES.items():
        if long_running(name):
            check = svc.get("healthcheck")
            assert check and check.get("test") and not check.get("disable"), name


def test_dependencies_wait_for_health() -> None:
    for name, svc in SERVICES.items():
        deps = svc.get("depends_on") or {}
        assert isinstance(deps, dict), f"{name}: depends_on needs conditions"
        for dep, how in deps.items():
            assert dep in SERVICES, f"{name} depends on unknown {dep}"
            condition = how.get("condition")
            if long_running(dep):
                assert condition == "service_healthy", (name, dep, condition)
            else:
                assert condition == "service_completed_successfully", (name, dep, condition)
    assert set(SERVICES["worker"]["depends_on"]) >= {"temporal", "ledger-db", "ledger-migrate"}
    assert set(SERVICES["web"]["depends_on"]) >= {"temporal"}
    assert set(SERVICES["temporal"]["depends_on"]) == {"temporal-db"}


def test_worker_scales() -> None:
    worker = SERVICES["worker"]
    assert "container_name" not in worker and "hostname" not in worker
    assert not worker.get("ports"), "a fixed host port stops `--scale worker=N`"
    assert resolved(worker["command"]) == ["worker"]
    assert parser().parse_args(resolved(worker["command"])).command == "worker"
    assert not any("container_name" in svc for svc in SERVICES.values())


def test_temporal_address_points_at_the_temporal_service() -> None:
    (temporal,) = [
        n for n in SERVICES if image_of(n).startswith("temporalio/auto-setup:") and long_running(n)
    ]
    frontend = 7233
    assert frontend in container_ports(temporal)
    for name, key in (
        ("worker", "SAGA_TEMPORAL_ADDRESS"),
        ("web", "SAGA_TEMPORAL_ADDRESS"),
        ("temporal-ui", "TEMPORAL_ADDRESS"),
        ("temporal-search-attributes", "TEMPORAL_ADDRESS"),
    ):
        host, _, port = environment(name)[key].rpartition(":")
        assert (host, int(port)) == (temporal, frontend), (name, key)
    assert f"--address {temporal}:{frontend}" in healthcheck_command(temporal)
    assert environment(temporal)["POSTGRES_SEEDS"] in SERVICES
    assert environment(temporal)["DEFAULT_NAMESPACE"] == environment("worker")["SAGA_NAMESPACE"]


def test_web_port_lines_up() -> None:
    web = SERVICES["web"]
    args = parser().parse_args(resolved(web["command"]))
    assert args.command == "web" and args.host == "0.0.0.0"
    assert container_ports("web") == [args.port]
    url = re.search(r"https?://[^'\" ]+", healthcheck_command("web"))
    assert url and urlsplit(url.group(0)).port == args.port
    assert TOKEN_ENV in web["environment"]
    assert "${SAGA_WEB_TOKEN:?" in str(web["environment"][TOKEN_ENV]), "the token is required"


def test_web_health_path_needs_no_token() -> None:
    url = re.search(r"https?://[^'\" ]+", healthcheck_command("web"))
    assert url
    app = create_app(Settings(), token="t" * 24)
    with TestClient(app) as http:
        assert http.get(urlsplit(url.group(0)).path).status_code == 200
        assert http.get("/api/sagas").status_code == 401


@pytest.mark.parametrize("key", ["SAGA_DATABASE_URL", "SAGA_INVENTORY_URL"])
def test_database_urls_point_at_the_ledger_postgres(key: str) -> None:
    url = make_url(environment("worker")[key])
    assert url.drivername == "postgresql+psycopg"
    assert url.host in SERVICES and image_of(url.host).startswith("postgres:")
    db = environment(url.host)
    assert (url.port or 5432) == 5432
    assert url.database == db["POSTGRES_DB"]
    assert url.username == db["POSTGRES_USER"]
    assert url.password == db["POSTGRES_PASSWORD"]
    assert (
        environment("ledger-migrate")["SAGA_DATABASE_URL"]
        == environment("worker")["SAGA_DATABASE_URL"]
    )


def test_dockerfile_runs_the_console_script_as_non_root() -> None:
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    entry = re.findall(r"^ENTRYPOINT\s+(.+)$", DOCKERFILE, re.MULTILINE)
    assert len(entry) == 1
    assert yaml.safe_load(entry[0]) == ["saga"] and "saga" in scripts
    assert re.search(r"^RUN pip install \.(\s|$)", DOCKERFILE, re.MULTILINE)
    users = re.findall(r"^USER\s+(\S+)", DOCKERFILE, re.MULTILINE)
    assert users and users[-1] not in ("root", "0", "0:0")
    assert "SAGA_DATA_DIR=/var/lib/saga" in DOCKERFILE
    # What the Dockerfile copies is what the package is built from, and is not ignored.
    ignore = (DOCKER / "Dockerfile.dockerignore").read_text().split()
    for src in re.findall(r"^COPY\s+(.+)\s+\S+$", DOCKERFILE, re.MULTILINE):
        for path in src.split():
            assert (ROOT / path).exists(), path
            assert f"!{path}" in ignore or f"!{path}/" in ignore, path
    for service in ("worker", "web", "ledger-migrate"):
        build = SERVICES[service]["build"]
        assert (DOCKER / build["context"] / build["dockerfile"]).resolve() == (
            DOCKER / "Dockerfile"
        ).resolve()


def _run_in_image_env(
    service: str, command: list[str], overrides: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    """Run a service's command with its environment (as the image would), locally."""
    env = {**environment(service), **overrides}
    base = {k: v for k, v in os.environ.items() if not k.startswith("SAGA_")}
    return subprocess.run(
        [sys.executable, *command],
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def _python_command(service: str, entry: str) -> list[str]:
    """`python -c CODE` of a service's healthcheck or one-shot command."""
    if entry == "healthcheck":
        test = SERVICES[service]["healthcheck"]["test"]
        assert test[:3] == ["CMD", "python", "-c"], test
        return ["-c", test[3]]
    svc = SERVICES[service]
    assert svc["entrypoint"] == ["python", "-c"]
    return ["-c", *svc["command"]]


async def test_migrate_then_worker_healthcheck_against_real_servers(
    client: Client, pg_url: str, tmp_path: Path
) -> None:
    """The migration job and the worker's health check, on real Temporal and PostgreSQL."""
    import uuid

    from sqlalchemy import create_engine, text

    # A fresh database: the health check fails before the migration, passes after it.
    name = f"saga_docker_{uuid.uuid4().hex[:8]}"
    admin = create_engine(pg_url.rsplit("/", 1)[0] + "/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = pg_url.rsplit("/", 1)[0] + f"/{name}"
    address = client.service_client.config.target_host
    overrides = {
        "SAGA_TEMPORAL_ADDRESS": address,
        "SAGA_DATABASE_URL": url,
        "SAGA_DATA_DIR": str(tmp_path),
        "SAGA_PAYLOAD_KEYS": PayloadKeys.new_entry("docker"),
    }
    check = _python_command("worker", "healthcheck")
    no_temporal = {**overrides, "SAGA_TEMPORAL_ADDRESS": "127.0.0.1:9"}
    placeholder = {**overrides, "SAGA_PAYLOAD_KEYS": ENV_EXAMPLE["SAGA_PAYLOAD_KEYS"]}
    try:
        # Each run imports saga afresh (slow on a loaded machine): two at once.
        before, unreachable, unkeyed = await asyncio.gather(
            asyncio.to_thread(_run_in_image_env, "worker", check, overrides),
            asyncio.to_thread(_run_in_image_env, "worker", check, no_temporal),
            asyncio.to_thread(_run_in_image_env, "worker", check, placeholder),
        )
        assert before.returncode != 0
        assert 'relation "saga" does not exist' in before.stderr  # not migrated yet
        assert unreachable.returncode != 0 and "127.0.0.1:9" in unreachable.stderr
        # The example's placeholder key is not a key: the worker is unhealthy, and says why.
        assert unkeyed.returncode != 0
        assert "SAGA_PAYLOAD_KEYS: entry 1 is not `id:base64key`" in unkeyed.stderr
        migrated = await asyncio.to_thread(
            _run_in_image_env,
            "ledger-migrate",
            _python_command("ledger-migrate", "command"),
            overrides,
        )
        assert migrated.returncode == 0, migrated.stderr
        healthy = await asyncio.to_thread(_run_in_image_env, "worker", check, overrides)
        assert healthy.returncode == 0, healthy.stderr
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def test_worker_and_web_share_required_payload_keys() -> None:
    """Both encrypt and decrypt payloads: the same keys, and compose refuses to start
    without them rather than fall back to a key file inside one container."""
    for service in ("worker", "web"):
        raw = str(SERVICES[service]["environment"]["SAGA_PAYLOAD_KEYS"])
        assert raw.startswith("${SAGA_PAYLOAD_KEYS:?"), (service, raw)
    assert environment("worker")["SAGA_PAYLOAD_KEYS"] == environment("web")["SAGA_PAYLOAD_KEYS"]
    with pytest.raises(KeyError, match="SAGA_PAYLOAD_KEYS"):
        resolved(SERVICES["worker"]["environment"], {**ENV_EXAMPLE, "SAGA_PAYLOAD_KEYS": ""})


def test_shell_healthchecks_parse() -> None:
    for name in SERVICES:
        test = SERVICES[name]["healthcheck"]["test"] if "healthcheck" in SERVICES[name] else None
        if test and test[0] == "CMD-SHELL":
            assert shlex.split(resolved(" ".join(test[1:]))), name


def test_worker_drains_within_the_stop_grace_period() -> None:
    """`docker compose stop` sends SIGTERM, then SIGKILL after stop_grace_period: the
    worker's own grace for running steps must end first, or the drain is cut short."""
    worker = SERVICES["worker"]
    grace = resolved(worker["environment"], ENV_EXAMPLE)["SAGA_GRACEFUL_SHUTDOWN_SECONDS"]
    stop = str(worker["stop_grace_period"])
    assert stop.endswith("s"), stop
    assert float(grace) + 10 <= float(stop[:-1]), (grace, stop)


def _search_attribute_job() -> str:
    """The one-shot job's shell script, as the container's shell gets it."""
    svc = SERVICES["temporal-search-attributes"]
    assert svc["entrypoint"] == ["sh", "-c"] and len(svc["command"]) == 1
    return str(svc["command"][0]).replace("$$", "$")


def test_search_attribute_job_registers_what_sagas_index() -> None:
    pairs = re.search(r"for a in ([^;]+);", _search_attribute_job())
    assert pairs is not None
    assert pairs.group(1).split() == server_args()[1::2]
    assert (
        environment("temporal-search-attributes")["NAMESPACE"]
        == (environment("worker")["SAGA_NAMESPACE"])
    )
    assert SERVICES["worker"]["depends_on"]["temporal-search-attributes"] == {
        "condition": "service_completed_successfully"
    }


async def test_search_attribute_job_against_a_real_server(tmp_path: Path) -> None:
    """The job, run twice on a server that has none of the attributes: all five exist,
    and the second run leaves them as they are."""
    server = DevServer(free_port(), tmp_path / "temporal.db", search_attributes=False)
    await server.start()
    try:
        client = await Client.connect(server.address)
        assert await registered(client) == []
        env = {
            **os.environ,
            "PATH": f"{Path(temporal_binary()).parent}:{os.environ['PATH']}",
            "NAMESPACE": "default",
            "TEMPORAL_ADDRESS": server.address,
        }
        for _ in range(2):
            done = await asyncio.to_thread(
                subprocess.run,
                ["sh", "-c", _search_attribute_job()],
                env=env,
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert done.returncode == 0, done.stderr
        assert await registered(client) == sorted(KEYS)
    finally:
        server.stop()
