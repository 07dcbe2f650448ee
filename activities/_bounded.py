"""What a look-up hands a language model is bounded: text from the outside world is
clipped to one line of known length, lists to a known count.

Every look-up result is read by a model, and what it reads was written by whoever could
write to the system (a product name, a ticket subject, a customer's name). Nothing here
makes such text trustworthy; it keeps it short and on one line, so that no field can
carry pages of instructions or fake the layout of the model's input. The policy, not
the text, decides what runs.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Annotated

from pydantic import Field

ELLIPSIS = "…"
MAX_LIMIT = 50
Limit = Annotated[
    int, Field(ge=1, le=MAX_LIMIT, strict=True, description="At most this many results (1-50).")
]
"""The ``limit`` of every look-up's input (``limit: Limit = 10``)."""

_SPACES = re.compile(r"\s+")


def clip(value: object, max_chars: int) -> str:
    """``value`` as text on one line of at most ``max_chars`` characters.

    Control and format characters (newlines, tabs, zero-width and direction marks)
    become spaces, runs of spaces one space; a longer text is cut and ends in ``…``.
    """
    text = "" if value is None else str(value)
    text = "".join(" " if unicodedata.category(ch) in ("Cc", "Cf") else ch for ch in text)
    text = _SPACES.sub(" ", text).strip()
    if len(text) > max_chars:
        text = text[: max_chars - 1].rstrip() + ELLIPSIS
    return text


def clip_or_none(value: object, max_chars: int) -> str | None:
    """:func:`clip`, or None for a missing or blank value."""
    text = clip(value, max_chars)
    return text or None


def small_int(value: object, low: int, high: int) -> int | None:
    """``value`` as an int within ``[low, high]``, or None when it is not one."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        return None
    try:
        number = int(value)
    except ValueError:
        return None
    return number if low <= number <= high else None
