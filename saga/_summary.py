"""What a saga does, in one line: ``2 x mug-blue, charge 25.00 EUR, email``.

Built by a worker from a checked plan and its catalog (each action's
``StepOptions.summary``), recorded in history with the worker's answer, shown by
`saga list`, the web list and the saga page, and indexed for search. Personal data
(emails, card numbers) is masked: the summary is stored in the clear.
"""

from __future__ import annotations

import string
from collections.abc import Iterable, Mapping
from typing import Any

from saga._catalog import ActionKind, ActionSpec
from saga._redact import mask_text

MAX_SUMMARY = 300
ZERO_DECIMAL = frozenset("bif clp djf gnf jpy kmf krw mga pyg rwf ugx vnd vuv xaf xof xpf".split())
"""Currencies without a minor unit (amounts are whole units)."""


def money_text(amount: int, currency: str | None) -> str:
    """``2500, "eur"`` -> ``25.00 EUR`` (the amount is in the currency's minor unit)."""
    code = (currency or "").lower()
    if code in ZERO_DECIMAL:
        text = f"{amount:,}"
    else:
        units, cents = divmod(amount, 100)
        text = f"{units:,}.{cents:02d}"
    return f"{text} {code.upper()}".strip()


class _Args(dict[str, Any]):
    """Format values: a missing argument reads as ``?``."""

    def __missing__(self, key: str) -> str:
        return "?"


def step_summary(spec: ActionSpec, args: Mapping[str, Any]) -> str | None:
    """How the summary names one step; None for a look-up (it changes nothing)."""
    if spec.kind is ActionKind.READ_ONLY:
        return None
    if spec.summary is None:
        return spec.name
    values = _Args(args)
    money = spec.money
    currency = next((args.get(f) for f, kind in money.items() if kind == "currency"), None)
    for field, kind in money.items():
        if kind == "amount" and isinstance(args.get(field), int):
            values[field] = money_text(args[field], currency)
    try:
        text = string.Formatter().vformat(spec.summary, (), values)
    except (ValueError, IndexError, KeyError, AttributeError):  # a template it cannot fill
        text = spec.name
    return text


def plan_summary(steps: Iterable[tuple[ActionSpec, Mapping[str, Any]]]) -> str:
    """The steps' names joined, masked, at most ``MAX_SUMMARY`` characters."""
    parts = [p for p in (step_summary(spec, args) for spec, args in steps) if p]
    text = mask_text(", ".join(parts))
    return text if len(text) <= MAX_SUMMARY else text[: MAX_SUMMARY - 1] + "…"


def plan_amount(steps: Iterable[tuple[ActionSpec, Mapping[str, Any]]]) -> tuple[int, str | None]:
    """The plan's total amount (minor units) and its currency (None: none or several)."""
    total, currencies = 0, set[str]()
    for spec, args in steps:
        total += sum(spec.amounts(dict(args)))
        currencies.update(str(c).lower() for c in spec.currencies(dict(args)))
    return total, (currencies.pop() if len(currencies) == 1 else None)
