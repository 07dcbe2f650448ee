"""`saga web`: a live page per saga, and the JSON API behind its buttons.

Names load on first use: importing ``saga.web`` imports neither the web app nor the
agents SDK. The masking it re-exports lives in the core (``saga._redact``), which the
command line uses without this package.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from saga._redact import mask_card, mask_text, redact
    from saga.web._service import CancelOutcome, SagaService, SagaSummary, SagaView
    from saga.web.app import create_app, operator_token, serve

_EXPORTS = {
    "CancelOutcome": "saga.web._service",
    "SagaService": "saga.web._service",
    "SagaSummary": "saga.web._service",
    "SagaView": "saga.web._service",
    "create_app": "saga.web.app",
    "mask_card": "saga._redact",
    "mask_text": "saga._redact",
    "operator_token": "saga.web.app",
    "redact": "saga._redact",
    "serve": "saga.web.app",
}

__all__ = [
    "CancelOutcome",
    "SagaService",
    "SagaSummary",
    "SagaView",
    "create_app",
    "mask_card",
    "mask_text",
    "operator_token",
    "redact",
    "serve",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'saga.web' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
