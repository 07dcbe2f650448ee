"""What an operator may see: card numbers and email addresses masked, secrets hidden,
everything else as is.

Applied to every saga state before it leaves the server or the command line (web page,
JSON API, live table, `saga start/status`). Card numbers are found two ways: by the name
of the field that holds them, and by shape anywhere in free text (13-19 digits, spaces or
dashes allowed, passing the Luhn check). Email addresses are found by shape and keep
their first letter and domain: `a***@example.com`.
"""

from __future__ import annotations

import logging
import re
from typing import Any

HIDDEN = "[hidden]"

_SECRET_KEYS = re.compile(
    r"(pass(word)?|secret|token|api_?key|authorization|cvc|cvv|cvc2|security_?code|pin)$",
    re.IGNORECASE,
)
_CARD_KEYS = re.compile(r"(card(_?number)?|pan|account_?number|number)$", re.IGNORECASE)
_KEEP_KEYS = frozenset({"saga_id", "plan_hash", "id", "step_id", "external_id"})
_DIGIT_RUN = re.compile(r"(?<![\w-])(?:\d[ -]?){12,18}\d(?![\w-])")
_EMAIL = re.compile(
    # Not our own Message-IDs (<saga-<hex>@domain>): they name a message, not a person,
    # and an operator needs them whole to find it.
    r"(?<![\w.%+-])(?!saga-[0-9a-f]{32}@)"
    r"([A-Za-z0-9._%+-])[A-Za-z0-9._%+-]*@([A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,})"
)


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


def is_card_number(text: str) -> bool:
    """13-19 digits (spaces and dashes aside) that pass the Luhn check."""
    digits = re.sub(r"[ -]", "", text)
    return digits.isdigit() and 13 <= len(digits) <= 19 and _luhn(digits)


def card_numbers(text: str) -> list[str]:
    """The card-number-shaped runs of digits in free text, as written."""
    return [m.group(0) for m in _DIGIT_RUN.finditer(text) if is_card_number(m.group(0))]


def mask_email(address: str) -> str:
    """`ana@example.com` -> `a***@example.com`."""
    return _EMAIL.sub(lambda m: f"{m.group(1)}***@{m.group(2)}", address)


def mask_text(text: str) -> str:
    """Mask every card-number-shaped run of digits and every email address in free text."""

    def repl(m: re.Match[str]) -> str:
        if is_card_number(m.group(0)):
            return mask_card(m.group(0))
        return m.group(0)

    return mask_email(_DIGIT_RUN.sub(repl, text))


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


class MaskingFilter(logging.Filter):
    """A log handler filter: card numbers and email addresses masked in every record, its
    message and its traceback (an activity's error can quote what the user wrote)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = mask_text(message)
        if masked != message:
            record.msg, record.args = masked, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = mask_text(record.exc_text)
        if record.stack_info:
            record.stack_info = mask_text(record.stack_info)
        return True
