"""The catalog: every action a plan may name, and what each system registers with it
(reconciliation readers, dev seeding, card vaults). The decorators that declare actions
into it are in ``saga._declare``."""

from __future__ import annotations

import enum
import importlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from temporalio.common import RetryPolicy

from saga._errors import CatalogError
from saga._money import money_fields
from saga._settings import Settings
from saga._systems import CardVaultFactory, ReaderFactory, Seed, activity_sources

DEFAULT_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=30),
    maximum_attempts=5,
)
DEFAULT_COMPENSATION_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=30),
    maximum_attempts=10,
)


DEFAULT_HEARTBEAT_TIMEOUT = timedelta(seconds=5)
"""Every step and compensation heartbeats (the ledger interceptor beats for it): a worker
that dies mid-step is noticed within this, and another worker retries the step."""


def unbounded(policy: RetryPolicy) -> RetryPolicy:
    """``policy`` as given to Temporal: the same back-off, no cap on attempts.

    Temporal counts an attempt lost with its worker (a heartbeat time-out) like any
    other; the ledger interceptor counts only real failures against the policy's
    ``maximum_attempts``, so a worker dying does not spend a step's retry budget.
    """
    return RetryPolicy(
        initial_interval=policy.initial_interval,
        backoff_coefficient=policy.backoff_coefficient,
        maximum_interval=policy.maximum_interval,
        maximum_attempts=0,
        non_retryable_error_types=policy.non_retryable_error_types,
    )


class ActionKind(enum.StrEnum):
    """How a step relates to undoing the saga."""

    COMPENSABLE = "compensable"
    """Has a compensation that undoes it."""
    PIVOT = "pivot"
    """Cannot be undone (an email sent): every compensable step must come before it."""
    READ_ONLY = "read_only"
    """Changes nothing, so there is nothing to undo."""


class Delivery(enum.StrEnum):
    """What a step promises when a retry follows an attempt whose outcome was lost."""

    EXACTLY_ONCE = "exactly_once"
    """The ledger and the action's own look-up by idempotency key make the effect happen
    once however often the step runs (the action finds and adopts an earlier effect)."""
    AT_LEAST_ONCE = "at_least_once"
    """A retry does it again; the receiver gets a stable id (the idempotency key) to drop
    the duplicate by, if it does."""
    AT_MOST_ONCE = "at_most_once"
    """A retry that finds an earlier attempt which may have taken effect does not repeat
    it: the step is parked for an operator (the action marks the point of no return with
    :meth:`saga.StepContext.delivering`)."""


class StepResult(BaseModel):
    """What a forward action returns: at least the id of the effect in its system (a
    PaymentIntent, a reservation, an issue), which the ledger records for the step."""

    external_id: str | None = Field(None, description="The effect's id in its system.")


@dataclass(frozen=True)
class ActionSpec:
    """What the engine knows about one action."""

    name: str
    activity_name: str
    kind: ActionKind
    description: str
    input_model: type[BaseModel]
    output_model: type[BaseModel] | None
    compensation: str | None = None
    undo: str | None = None
    """What the compensation does, in plain words (its docstring's first paragraph)."""
    delivery: Delivery = Delivery.EXACTLY_ONCE
    start_to_close_timeout: timedelta = timedelta(seconds=60)
    heartbeat_timeout: timedelta | None = DEFAULT_HEARTBEAT_TIMEOUT
    """For the step and its compensation; ``None`` turns heartbeats off."""
    retry_policy: RetryPolicy = field(default_factory=lambda: DEFAULT_RETRY)
    """Its ``maximum_attempts`` is the budget of real failures (see :func:`unbounded`)."""
    compensation_timeout: timedelta = timedelta(seconds=60)
    compensation_retry_policy: RetryPolicy = field(
        default_factory=lambda: DEFAULT_COMPENSATION_RETRY
    )
    builtin: bool = False
    summary: str | None = None
    """How a saga summary names the step (``StepOptions.summary``)."""

    @property
    def money(self) -> dict[str, str]:
        """The input's :data:`~saga.Amount` and :data:`~saga.Currency` fields, by name."""
        return money_fields(self.input_model)

    def amounts(self, args: dict[str, Any]) -> list[int]:
        """The amounts in validated ``args``: what the policy counts."""
        return [args[f] for f, kind in self.money.items() if kind == "amount" and f in args]

    def currencies(self, args: dict[str, Any]) -> list[str]:
        return [args[f] for f, kind in self.money.items() if kind == "currency" and f in args]

    def describe(self) -> dict[str, Any]:
        """JSON-ready description: what a planner needs to write a valid step."""
        return {
            "action": self.name,
            "kind": self.kind.value,
            "description": self.description,
            "compensation": self.compensation,
            "undo": self.undo,
            "delivery": self.delivery.value,
            "args_schema": self.input_model.model_json_schema(),
        }


@dataclass
class Catalog:
    """Actions by name, and by the Temporal activity name that carries them."""

    _by_name: dict[str, ActionSpec] = field(default_factory=dict)
    _by_activity: dict[str, ActionSpec] = field(default_factory=dict)
    _readers: dict[str, ReaderFactory] = field(default_factory=dict)
    _seeds: dict[str, Seed] = field(default_factory=dict)
    _card_vaults: dict[str, CardVaultFactory] = field(default_factory=dict)

    def add_card_vault(self, action: str, vault: CardVaultFactory) -> None:
        """Register how card numbers in ``action``'s arguments become payment method ids."""
        self._card_vaults[action] = vault

    def card_vaults(self) -> dict[str, CardVaultFactory]:
        return dict(self._card_vaults)

    def add_reader(self, action: str, reader: ReaderFactory) -> None:
        """Register how reconciliation reads the effects of ``action`` (its system's
        :class:`~saga.Reconciler`, made from settings)."""
        self._readers[action] = reader

    def readers(self) -> dict[str, ReaderFactory]:
        """Reconciliation readers by action name."""
        return dict(self._readers)

    def add_seed(self, system: str, seed: Seed) -> None:
        """Register what `saga dev` and the demo prepare in ``system``."""
        self._seeds[system] = seed

    def seeds(self) -> dict[str, Seed]:
        return dict(self._seeds)

    def load_systems(self, settings: Settings) -> None:
        """Import the systems ``settings`` configures (``SAGA_ACTIVITIES``, by name):
        importing a system declares its actions, readers and seeding here."""
        for module, _ in activity_sources(settings):
            importlib.import_module(module)

    def prepare_systems(self, settings: Settings) -> None:
        """Run every configured system's dev seeding (idempotent)."""
        self.load_systems(settings)
        for seed in self.seeds().values():
            seed.prepare(settings)

    def register(self, spec: ActionSpec) -> None:
        try:
            spec.money  # noqa: B018 - money the policy could not read is refused here
        except TypeError as exc:
            raise CatalogError(f"action {spec.name!r}: {exc}") from None
        existing = self._by_name.get(spec.name)
        if existing is not None and existing.activity_name != spec.activity_name:
            raise CatalogError(
                f"action {spec.name!r} is declared twice "
                f"({existing.activity_name} and {spec.activity_name})"
            )
        self._by_name[spec.name] = spec
        self._by_activity[spec.activity_name] = spec

    def get(self, name: str) -> ActionSpec | None:
        return self._by_name.get(name)

    def by_activity(self, activity_name: str) -> ActionSpec | None:
        return self._by_activity.get(activity_name)

    def names(self) -> list[str]:
        return sorted(self._by_name)

    def __iter__(self) -> Iterator[ActionSpec]:
        return iter(sorted(self._by_name.values(), key=lambda s: s.name))

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def only(self, names: Iterable[str]) -> Catalog:
        """A catalog of these actions (and the built-in ones) only."""
        keep = set(names)
        out = Catalog()
        for spec in self:
            if spec.builtin or spec.name in keep:
                out.register(spec)
        return out

    def check_compensations(self, activity_names: Iterable[str] | None = None) -> None:
        """Refuse a compensable action whose compensation was never declared (its
        system's ``compensations`` module was not imported): among the actions carried
        by ``activity_names``, or all of them."""
        names = None if activity_names is None else set(activity_names)
        missing = [
            spec
            for spec in self
            if spec.kind is ActionKind.COMPENSABLE
            and spec.compensation is None
            and (names is None or spec.activity_name in names)
        ]
        if missing:
            raise CatalogError(
                "; ".join(
                    f"action {spec.name!r} ({spec.activity_name}) is compensable but has no "
                    "compensation: its system's compensations module was not imported "
                    f"(e.g. compensations.{spec.name.split('.')[0]})"
                    for spec in missing
                )
            )

    def json_schema(self) -> dict[str, Any]:
        """The catalog as JSON schema, one entry per action (the agent reads this)."""
        return {"actions": [spec.describe() for spec in self]}


catalog = Catalog()
"""The process-wide catalog that the decorators register into."""


def activity_name(fn: Callable[..., Any]) -> str:
    """The Temporal activity name of ``fn`` (an ``@activity.defn``), or CatalogError."""
    defn = getattr(fn, "__temporal_activity_definition", None)
    name = getattr(defn, "name", None)
    if not name:
        raise CatalogError(
            f"{getattr(fn, '__qualname__', fn)!r} is not an activity: "
            "put @activity.defn under the saga decorator"
        )
    return str(name)


class WaitInput(BaseModel):
    """Pause the saga on a durable timer."""

    model_config = ConfigDict(extra="forbid")
    seconds: float = Field(gt=0, le=7 * 24 * 3600, description="How long to wait.")


WAIT = ActionSpec(
    name="saga.wait",
    activity_name="",
    kind=ActionKind.READ_ONLY,
    description="Wait for a number of seconds on a durable timer before the next step.",
    input_model=WaitInput,
    output_model=None,
    builtin=True,
)
catalog.register(WAIT)
