"""Compensations: the undo of each forward activity, mirroring ``activities/`` module by
module. Each module imports its forward module and declares the pairing with
``@compensates``; importing this package declares every action and its undo.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from compensations import inventory, payments, tickets
from saga import Settings

SYSTEMS = (inventory, payments, tickets)
"""notify has no undo: an email sent is a pivot."""


def build_compensations(settings: Settings) -> list[Callable[..., Any]]:
    """Every compensation of every system, bound to clients of its own."""
    acts: list[Callable[..., Any]] = []
    for system in SYSTEMS:
        acts += system.build(settings)
    return acts
