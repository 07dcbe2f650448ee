"""What the engine needs from an external system, given by the system itself.

The engine imports no system. A system's module registers, next to its actions:

* a :class:`Reconciler` (``catalog.add_reader(action, factory)``): given settings, it
  lists the effects standing in the system by idempotency key and looks one up by its
  external id; `saga reconcile` iterates the registered readers;
* a dev seeding hook (``catalog.add_seed(name, seed)``): what `saga dev` and the demo
  prepare in the system (a schema, sample data) and what the demo shows of it;
* a card vault (``catalog.add_card_vault(action, factory)``): at the edge, before a
  saga starts, card numbers become payment method ids.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from saga._errors import SagaError

if TYPE_CHECKING:
    from saga._settings import Settings


@dataclass(frozen=True)
class Effect:
    """One effect a system holds."""

    system: str
    key: str
    """The saga idempotency key it carries ("" when none)."""
    external_id: str
    standing: bool
    """Still in force: money kept, stock held, ticket open."""
    state: str
    """What it is, for people: e.g. ``pi_1 succeeded, refunded 0/1250``."""


class SystemUnavailable(SagaError):
    """The system cannot be read (not configured, no database): its message says why."""


class Reconciler(Protocol):
    """Reads one system for :func:`saga reconcile <saga._reconcile.reconcile>`."""

    system: str
    """The system's name, e.g. ``payments``."""
    where: str
    """Which system is read, without credentials."""

    async def effects(self, saga_prefix: str) -> list[Effect]:
        """Every effect the system holds that the reconciliation should see: those
        carrying a saga idempotency key that starts with ``saga_prefix``, and any others
        it lists anyway (they are matched by external id). Raises
        :class:`SystemUnavailable` when the system cannot be read."""
        ...

    async def lookup(self, external_id: str) -> Effect | None:
        """One effect by its external id (one the listing did not show), or None."""
        ...

    async def aclose(self) -> None:
        """Release the reader's clients."""
        ...


ReaderFactory = Callable[["Settings"], Reconciler]


@dataclass(frozen=True)
class Seed:
    """A system's dev seeding: prepare it (idempotent), and describe what the demo shows
    of it (e.g. the stock of a product; None when it has no such thing)."""

    prepare: Callable[[Settings], None]
    show: Callable[[Settings, str], object] | None = None


class CardVault(Protocol):
    """Turns a card number into a payment method id at the edge, before a saga starts,
    so history never holds the number (registered by the payments system)."""

    test_mode: bool
    """Whether card numbers are accepted at all (test mode only)."""

    async def payment_method(self, card_number: str) -> str:
        """A payment method id for the number; :class:`SystemUnavailable` says why not."""
        ...

    async def aclose(self) -> None: ...


CardVaultFactory = Callable[["Settings"], CardVault]


def activity_sources(settings: Settings) -> list[tuple[str, str]]:
    """``SAGA_ACTIVITIES`` as (module, function) pairs: a comma list of `module:function`
    (the function defaults to ``build_activities``)."""
    pairs = []
    for part in settings.activities.split(","):
        module_name, _, func_name = part.strip().partition(":")
        if module_name:
            pairs.append((module_name, func_name or "build_activities"))
    return pairs
