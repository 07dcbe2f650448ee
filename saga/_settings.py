"""Configuration: one settings class, read from ``SAGA_*`` environment variables."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TypeVar

from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from saga._errors import Refused

_ADDRESS = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+):([0-9]{1,5})$")
_SECRET_WORDS = ("key", "url", "token", "password", "secret")
S = TypeVar("S", bound=BaseSettings)


class Settings(BaseSettings):
    """Every knob of the engine, its CLI and its worker.

    Each field reads the environment variable ``SAGA_<FIELD NAME>``.
    """

    model_config = SettingsConfigDict(env_prefix="SAGA_", extra="ignore")

    temporal_address: str = Field(
        "127.0.0.1:7233", description="host:port of the Temporal frontend."
    )
    namespace: str = Field("default", description="Temporal namespace.")
    task_queue: str = Field("saga", description="Task queue the workers poll.")
    data_dir: Path = Field(
        Path(".saga"),
        description="Where the embedded server's database and the SQLite files live.",
    )
    database_url: str | None = Field(
        None,
        description="SQLAlchemy URL of the ledger; default: SQLite file in data_dir.",
    )
    max_steps: int = Field(
        20,
        ge=1,
        le=20,
        description="Largest number of steps a plan started here may have (the engine's "
        "own limit is 20).",
    )
    activities: str = Field(
        "activities:build_activities,compensations:build_compensations",
        description="`module:function` that returns the worker's activities, given "
        "settings; a comma list of them is joined (the default: the systems' forward "
        "activities, then their compensations).",
    )
    agents: str = Field(
        "",
        description="Agents of your own for act mode, as `name=module:function` "
        "(comma list), e.g. `shop=examples.byo_agent:shop_agent`; started with "
        "`saga start --mode act --agent NAME`.",
    )
    faults: str = Field(
        "",
        description="Test fault hooks: `action=N,...` drops the response of the first N "
        "attempts of each step of that action after it took effect; `undo:action=N` does "
        "the same to its compensation, after the ledger recorded it.",
    )
    payload_keys: SecretStr | None = Field(
        None,
        description="Keys that encrypt what Temporal stores and the ledger's personal "
        "columns: `id:base64key,...` (32-byte AES keys); the first encrypts, the others "
        "only decrypt (rotation). Default: the file `payload-keys` in data_dir, created "
        "once (mode 0600) by `saga dev`, `saga demo` or `saga worker`.",
    )
    # -- external systems (secrets live here only, never in workflow inputs) ----------
    inventory_url: str | None = Field(
        None, description="SQLAlchemy URL of the inventory database; default: SQLite in data_dir."
    )
    stripe_api_key: str = Field(
        "sk_test_local", description="Stripe secret key (an sk_test_ key for test mode)."
    )
    stripe_api_base: str | None = Field(
        None, description="Stripe API base URL; set it to a localstripe URL to run locally."
    )
    redmine_url: str | None = Field(None, description="Redmine base URL, e.g. http://host:3000.")
    redmine_api_key: str | None = Field(None, description="Redmine REST API key.")
    redmine_project: str = Field("ops", description="Redmine project identifier for tickets.")
    redmine_create_timeout: float = Field(
        45.0,
        gt=0,
        le=3600,
        description="Seconds tickets.create waits for Redmine to open an issue; an undo "
        "of a create that got no answer waits this long (and 5 s more) for a late issue.",
    )
    ticket_compensation: str = Field(
        "close", description="How tickets.create is undone: `close` (with a note) or `delete`."
    )
    smtp_host: str = Field("127.0.0.1", description="SMTP server host for notify.email.")
    smtp_port: int = Field(8025, description="SMTP server port for notify.email.")
    mail_from: str = Field("saga@localhost", description="Sender address of notify.email.")
    otel_endpoint: str | None = Field(
        None,
        description="OTLP endpoint for OpenTelemetry traces of workflows and activities; "
        "tracing is off when unset.",
    )
    policy_file: Path | None = Field(
        None,
        description="JSON file with the policy guardrails (allowed actions, amount limits, "
        "currencies, max steps, when approval is needed); default: allow the catalog, "
        "no approval.",
    )
    dev_server_port: int = Field(
        7233, description="Port `saga dev` starts the embedded Temporal server on."
    )
    graceful_shutdown_seconds: float = Field(
        10.0,
        ge=0,
        description="On SIGTERM or Ctrl-C a worker stops polling and gives its running steps "
        "this long to finish; the rest are handed back to other workers at once.",
    )
    workflow_sandbox: bool = Field(
        True,
        description="Run saga workflow code in Temporal's sandbox, which refuses "
        "non-deterministic calls (the clock, randomness, I/O) at run time. Off, the same "
        "code runs directly: measured about a quarter less worker CPU per saga on the SQLite "
        "ledger, 11 to 15% on PostgreSQL (README, Benchmark); the replay tests and a scan "
        "of the workflow modules still guard determinism.",
    )
    max_concurrent_activities: int = Field(
        32,
        ge=1,
        description="Steps, compensations and model calls one worker runs at once. A task "
        "it holds but cannot start yet still runs its heartbeat clock on the server, so a "
        "worker taking more than it can serve times out no-op steps under load; the rest "
        "wait on the server, where other workers can take them.",
    )

    metrics_port: int | None = Field(
        None,
        ge=1,
        le=65535,
        description="Port a worker serves its Prometheus metrics on (`/metrics`) while it "
        "runs; unset or empty: none.",
    )
    temporal_metrics_port: int | None = Field(
        None,
        ge=1,
        le=65535,
        description="Port `saga worker` serves the Temporal SDK's own metrics on (task "
        "slots, polls, schedule-to-start latency; `/metrics`); unset or empty: none.",
    )
    metrics_host: str = Field(
        "127.0.0.1",
        description="Address the worker's metrics servers bind (`0.0.0.0` to be scraped "
        "from another host or container).",
    )
    web_url: str = Field(
        "http://127.0.0.1:8080",
        description="Where people open the web app (`saga web`): the saga pages that the "
        "MCP server's answers link to, e.g. for an approval.",
    )
    alert_webhook_url: str | None = Field(
        None,
        description="Alerts (a saga needing a person, an approval waiting too long) are "
        "POSTed here as JSON, retried; each once per event.",
    )
    alert_email: str | None = Field(
        None, description="Alerts are also emailed here (through SAGA_SMTP_HOST/PORT)."
    )
    alert_approval_after_seconds: float = Field(
        3600.0, gt=0, description="An approval waiting longer than this alerts."
    )
    alert_poll_seconds: float = Field(
        10.0, gt=0, description="How often a worker with alerts looks for new events."
    )
    metrics_refresh_seconds: float = Field(
        15.0,
        gt=0,
        description="How often a worker with metrics counts the sagas of its task queue "
        "waiting for a person (Temporal visibility), between scrapes.",
    )

    @field_validator("metrics_port", "temporal_metrics_port", mode="before")
    @classmethod
    def _empty_is_off(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("temporal_address")
    @classmethod
    def _host_port(cls, value: str) -> str:
        match = _ADDRESS.fullmatch(value)
        if match is None or not 0 < int(match.group(2)) < 65536:
            raise ValueError("must be host:port, e.g. 127.0.0.1:7233")
        return value

    def inventory_db_url(self) -> str:
        if self.inventory_url:
            return self.inventory_url
        return f"sqlite:///{(self.data_dir / 'inventory.db').resolve()}"

    def ledger_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'ledger.db').resolve()}"


class SettingsError(Refused):
    """An environment variable holds a value its setting cannot take.

    ``problems`` holds one line per problem, each naming the variable.
    """


def variable(cls: type[BaseSettings], field: str) -> str:
    """The environment variable a settings field is read from."""
    info = cls.model_fields.get(field)
    if info is None:  # the error names the variable itself (an alias)
        return field
    alias = info.validation_alias
    if isinstance(alias, AliasChoices) and isinstance(alias.choices[0], str):
        return alias.choices[0]
    if isinstance(alias, str):
        return alias
    return f"{cls.model_config.get('env_prefix', '')}{field}".upper()


def settings_problems(cls: type[BaseSettings], exc: ValidationError) -> list[str]:
    """One line per invalid setting, naming its variable (and its value, unless secret)."""
    problems = []
    for error in exc.errors():
        field = str(error["loc"][0]) if error["loc"] else ""
        name = variable(cls, field) if field else cls.__name__
        message = error["msg"].removeprefix("Value error, ")
        given = error.get("input")
        if isinstance(given, str) and not any(w in field.lower() for w in _SECRET_WORDS):
            message += f" (got {given!r})"
        problems.append(f"{name}: {message}")
    return problems


def load_settings(cls: type[S]) -> S:
    """``cls()`` read from the environment, or :class:`SettingsError` naming each bad variable."""
    try:
        return cls()
    except ValidationError as exc:
        raise SettingsError(settings_problems(cls, exc)) from None
