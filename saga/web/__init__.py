"""`saga web`: a live page per saga, and the JSON API behind its buttons."""

from saga.web._redact import mask_card, mask_text, redact
from saga.web._service import CancelOutcome, SagaService, SagaSummary, SagaView
from saga.web.app import create_app, operator_token, serve

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
