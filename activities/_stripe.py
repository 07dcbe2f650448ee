"""Stripe's SDK as the payments system uses it: the client, test-mode keys, making a
payment method of a test card number, and the mapping of Stripe errors onto retryable
and non-retryable activity failures.

Part of the payments system (`activities/payments.py` is its home); kept apart only for
size, so that its look-ups (`activities/payments_lookups.py`) and its undo share it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import stripe
from temporalio.exceptions import ApplicationError

from saga import Settings

if TYPE_CHECKING:
    from stripe._base_address import BaseAddresses

HTTP_TIMEOUT_SECONDS = 15.0
"""Per Stripe request; an activity makes a handful, inside its start-to-close timeout."""


def stripe_client(
    settings: Settings, http_client: stripe.HTTPXClient | None = None
) -> stripe.StripeClient:
    """The SDK client, from settings only: the key never enters workflow data.

    The SDK's own network retries are off: Temporal retries the activity, and the
    activity reconciles with what an earlier attempt already did.
    """
    base: BaseAddresses = {"api": settings.stripe_api_base} if settings.stripe_api_base else {}
    return stripe.StripeClient(
        settings.stripe_api_key,
        base_addresses=base,
        max_network_retries=0,
        http_client=http_client or stripe.HTTPXClient(timeout=HTTP_TIMEOUT_SECONDS),
    )


def is_test_key(api_key: str) -> bool:
    """Whether a Stripe key is a test-mode key (card numbers are accepted in test mode only)."""
    return api_key.startswith(("sk_test_", "rk_test_"))


async def card_payment_method(
    client: stripe.StripeClient, card_number: str, idempotency_key: str | None = None
) -> str:
    """A PaymentMethod for a test card number (test mode only: the caller checks).

    The one place a card number someone gave becomes a ``pm_...`` id: at the edge before a
    saga starts (``StripeCardVault``), and in ``payments.charge`` for a plan that still
    carries a number. (Dev seeding saves its own sample card, in ``payments.prepare``.)
    """
    options: stripe.RequestOptions = {}
    if idempotency_key is not None:
        options["idempotency_key"] = idempotency_key
    created = await client.v1.payment_methods.create_async(
        {
            "type": "card",
            "card": {"number": card_number, "exp_month": 12, "exp_year": 2034, "cvc": "123"},
        },
        options,
    )
    return created.id


def stripe_failure(exc: stripe.StripeError) -> ApplicationError:
    """A Stripe error as the activity failure Temporal should see (raise it ``from None``).

    Declines and invalid requests are final; lost connections, timeouts, 409 (an
    idempotent request still in flight), 429 and 5xx are retried by Temporal. The
    details carry Stripe's error code and request id; nothing carries the API key
    (Stripe echoes a masked key in authentication errors, so those get a fixed message).
    """
    message = exc.user_message or type(exc).__name__
    if isinstance(exc, stripe.AuthenticationError):
        message = "Stripe rejected the API key (check SAGA_STRIPE_API_KEY)"
    details = (exc.code or "", exc.request_id or "")
    status = exc.http_status
    if isinstance(exc, stripe.CardError):
        if exc.code == "processing_error":
            return ApplicationError(message, *details, type="CardProcessingError")
        kind = "CardDeclined" if exc.code in (None, "card_declined") else "CardError"
        return ApplicationError(message, *details, type=kind, non_retryable=True)
    kind = f"Stripe{type(exc).__name__}"
    if status is None or status in (409, 429) or status >= 500:
        return ApplicationError(message, *details, type=kind)
    return ApplicationError(message, *details, type=kind, non_retryable=True)
