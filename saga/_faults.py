"""Fault hooks for tests and drills: answers lost after an action or its undo took effect."""

from __future__ import annotations

from dataclasses import dataclass, field

UNDO_FAULT = "undo:"


class LostResponse(Exception):
    """Injected by a fault hook: the action took effect, its response is dropped."""


@dataclass
class Faults:
    """Fault hooks for tests: drop the response of an action's first attempt(s).

    ``lose_response["payments.charge"] = 1`` makes the first attempt of every
    ``payments.charge`` step take effect and then fail before the ledger records it,
    exactly as if the worker died right after the external call.
    """

    lose_response: dict[str, int]
    lose_undo_response: dict[str, int] = field(default_factory=dict)
    """``undo:payments.charge=1``: the first attempt(s) of that action's compensation
    take effect and are recorded, then the answer is lost."""

    @classmethod
    def parse(cls, text: str) -> Faults:
        out: dict[str, int] = {}
        undo: dict[str, int] = {}
        for part in filter(None, (p.strip() for p in text.split(","))):
            action, _, times = part.partition("=")
            if action.startswith(UNDO_FAULT):
                undo[action.removeprefix(UNDO_FAULT)] = int(times or 1)
            else:
                out[action] = int(times or 1)
        return cls(lose_response=out, lose_undo_response=undo)
