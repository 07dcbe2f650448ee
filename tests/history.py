"""Workflow history as searchable text: payloads are base64 in the JSON form."""

from __future__ import annotations

import base64
import binascii
import re

from temporalio.client import WorkflowHistory

_DATA = re.compile(r'"data":\s*"([A-Za-z0-9+/=]+)"')


def history_text(history: WorkflowHistory) -> str:
    """The history's JSON plus every payload decoded, so a search sees inputs and results."""
    raw = history.to_json()
    decoded = []
    for blob in _DATA.findall(raw):
        try:
            decoded.append(base64.b64decode(blob).decode("utf-8", "replace"))
        except (binascii.Error, ValueError):
            continue
    return raw + "\n" + "\n".join(decoded)
