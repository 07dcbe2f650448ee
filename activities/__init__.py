"""Forward side effects, one module per external system.

Each system module is the system's home (its models, client, error mapping and forward
actions) and defines ``build(settings)``: its forward activities, bound to their
clients. Importing this package declares every action in the catalog; the undo of each
compensable action comes from the mirror module under ``compensations/``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from activities import inventory, notify, payments, tickets
from saga import Settings

SYSTEMS = (inventory, payments, tickets, notify)


def build_activities(settings: Settings) -> list[Callable[..., Any]]:
    """Every forward activity of every system, bound to its clients."""
    acts: list[Callable[..., Any]] = []
    for system in SYSTEMS:
        acts += system.build(settings)
    return acts
