"""What a command loads before it acts: the catalog, the activities, the policy, the
plan, the ledger and the planner's settings, each failing as one line (exit code 2).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from saga._errors import Refused
from saga._policy import Policy
from saga._problems import database_errors, read_policy_file
from saga._settings import Settings, load_settings
from saga.dev._examples import example_names, find_example

if TYPE_CHECKING:
    from saga._ledger import Ledger
    from saga.planner._agent_settings import AgentSettings


class UsageError(Refused):
    """Bad input on the command line: one line per problem on stderr, exit code 2."""

    def __init__(self, *problems: str) -> None:
        super().__init__(list(problems))


def load_catalog(settings: Settings) -> None:
    """Import the configured activities modules so their actions are in the catalog."""
    from saga._systems import activity_sources

    for module, _ in activity_sources(settings):
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise UsageError(f"SAGA_ACTIVITIES: cannot import {module!r} ({exc})") from None


def load_activities(settings: Settings) -> list[Callable[..., Any]]:
    """The worker's activities from SAGA_ACTIVITIES (`module:function`)."""
    from saga._worker import load_activities as load

    load_catalog(settings)
    try:
        with database_errors(*inventory_variable(settings)):  # the systems' one database
            return load(settings)
    except AttributeError as exc:
        raise UsageError(f"SAGA_ACTIVITIES: {settings.activities!r}: {exc}") from None


def inventory_variable(settings: Settings) -> tuple[str, str]:
    """The variable that says where the inventory database is, and its URL."""
    variable = "SAGA_INVENTORY_URL" if settings.inventory_url else "SAGA_DATA_DIR"
    return variable, settings.inventory_db_url()


def open_ledger(settings: Settings) -> Ledger:
    """The ledger at SAGA_DATABASE_URL (migrated), or one line on why it cannot be used."""
    from saga._ledger import Ledger

    variable = "SAGA_DATABASE_URL" if settings.database_url else "SAGA_DATA_DIR"
    with database_errors(variable, settings.ledger_url()):
        return Ledger(settings.ledger_url())


def agent_settings() -> AgentSettings:
    """The planner's settings (SAGA_MODEL..., OPENAI_...), checked before a worker starts."""
    from saga.planner._agent_settings import AgentSettings

    return load_settings(AgentSettings)


def load_policy(settings: Settings) -> Policy:
    """The policy from SAGA_POLICY_FILE, or the default (whole catalog, no approval)."""
    if settings.policy_file is None:
        return Policy(max_steps=min(Policy().max_steps, settings.max_steps))
    policy = read_policy_file(settings.policy_file)
    # SAGA_MAX_STEPS caps the plans this CLI starts, in the workflow too.
    return policy.model_copy(update={"max_steps": min(policy.max_steps, settings.max_steps)})


def plan_source(plan: str) -> Traversable:
    """`--plan`: a file path, which wins when it exists, or a bundled example by name."""
    path = Path(plan)
    if path.is_file():
        return path
    example = find_example(plan)
    if example is None:
        raise UsageError(
            f"plan file not found: {plan} (nor a bundled example: {', '.join(example_names())})"
        )
    return example
