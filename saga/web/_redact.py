"""What an operator may see: card numbers masked, secrets hidden, everything else as is.

Applied to every saga state before it leaves the server (web page, JSON API, live table).
Card numbers are found two ways: by the name of the field that holds them, and by shape
anywhere in free text (13-19 digits, spaces or dashes allowed, passing the Luhn check).
"""

from __future__ import annotations

import re
from typing import Any

HIDDEN = "[hidden]"

_SECRET_KEYS = re.compile(
    r"(pass(word)?|secret|token|api_?key|authorization|cvc|cvv|cvc2|security_?code|pin)$",
    re.IGNORECASE,
)
_CARD_KEYS = re.compile(r"(card(_?number)?|pan|account_?number|number)$", re.IGNORECASE)
_KEEP_KEYS = frozenset({"saga_id", "plan_hash", "id", "step_id"})
_DIGIT_RUN = re.compile(r"(?<![\w-])(?:\d[ -]?){12,18}\d(?![\w-])")


def _luhn(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def mask_card(number: str) -> str:
    """`4242 4242 4242 4242` -> `•••• 4242`."""
    digits = re.sub(r"\D", "", number)
    return f"•••• {digits[-4:]}" if len(digits) >= 4 else "••••"


def mask_text(text: str) -> str:
    """Mask every card-number-shaped run of digits in free text."""

    def repl(m: re.Match[str]) -> str:
        digits = re.sub(r"\D", "", m.group(0))
        if 13 <= len(digits) <= 19 and _luhn(digits):
            return mask_card(digits)
        return m.group(0)

    return _DIGIT_RUN.sub(repl, text)


def redact(value: Any, key: str | None = None) -> Any:
    """A copy of a JSON-like value that is safe to show to an operator."""
    if key is not None and key not in _KEEP_KEYS:
        if _SECRET_KEYS.search(key) and value not in (None, ""):
            return HIDDEN
        if _CARD_KEYS.search(key) and isinstance(value, str | int) and not isinstance(value, bool):
            digits = re.sub(r"\D", "", str(value))
            if len(digits) >= 8:
                return mask_card(digits)
    if isinstance(value, dict):
        return {k: redact(v, str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact(v) for v in value]
    if isinstance(value, str) and key not in _KEEP_KEYS:
        return mask_text(value)
    return value
