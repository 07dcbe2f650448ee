"""Undo `payments.charge`: refund a succeeded PaymentIntent, cancel an unfinished one.

This module also holds what both directions of the payments system share: the
action's models, the Stripe client, the mapping of Stripe errors onto retryable and
non-retryable failures, and finding a step's PaymentIntent. The forward module
(`activities/payments.py`) imports them from here, because its ``@compensated_by``
needs :class:`PaymentCompensations` at import time.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal, Self

import stripe
from pydantic import BaseModel, ConfigDict, Field, model_validator
from temporalio import activity
from temporalio.exceptions import ApplicationError

from saga import Amount, Currency, Settings, current_step

if TYPE_CHECKING:
    from stripe._base_address import BaseAddresses

HTTP_TIMEOUT_SECONDS = 15.0
"""Per Stripe request; an activity makes a handful, inside its start-to-close timeout."""

CANCELLABLE = frozenset(
    {"requires_payment_method", "requires_confirmation", "requires_action", "requires_capture"}
)


# -- the action's models --------------------------------------------------------------
class ChargeInput(BaseModel):
    """Charge a customer's card once."""

    model_config = ConfigDict(extra="forbid")

    amount: Amount = Field(gt=0, le=99_999_999, description="Amount in the currency's minor unit.")
    currency: Currency = Field(description="ISO 4217 code, e.g. `usd` or `eur`.")
    customer_email: str = Field(
        pattern=r"^[^@\s]+@[^@\s]+$", max_length=254, description="Who pays (the Customer)."
    )
    payment_method: str | None = Field(
        None,
        pattern=r"^pm_[A-Za-z0-9_]+$",
        description="A PaymentMethod id, e.g. `pm_card_visa` in test mode.",
    )
    card_number: str | None = Field(
        None,
        pattern=r"^[0-9]{16}$",
        description="Test mode only: a Stripe test card number, e.g. 4242424242424242.",
    )
    description: str | None = Field(None, max_length=500, description="What the charge is for.")

    @model_validator(mode="after")
    def _one_way_to_pay(self) -> Self:
        if (self.payment_method is None) == (self.card_number is None):
            raise ValueError("give exactly one of payment_method or card_number")
        return self


class ChargeResult(BaseModel):
    external_id: str = Field(description="The PaymentIntent id.")
    status: str
    amount: int
    currency: str


RefundAction = Literal[
    "refunded", "cancelled", "already_refunded", "already_cancelled", "nothing_to_undo"
]


class RefundResult(BaseModel):
    action: RefundAction
    payment_intent: str | None = None
    refund_id: str | None = None
    amount_refunded: int = 0


# -- Stripe plumbing shared by both directions ----------------------------------------
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

    The one place a card number becomes a ``pm_...`` id: at the edge before a saga starts
    (``saga._cards``), and in ``payments.charge`` for a plan that still carries a number.
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


def metadata_for(saga_id: str, key: str) -> dict[str, str]:
    return {"saga_id": saga_id, "idempotency_key": key}


async def find_intent(
    client: stripe.StripeClient, key: str, known_id: str | None
) -> stripe.PaymentIntent | None:
    """The step's PaymentIntent: by the id the ledger holds, else by its metadata.

    Stripe's search API finds it by ``metadata['idempotency_key']``; localstripe has no
    search endpoint (404), so there the intents are listed and filtered. Real Stripe's
    search index lags by up to a minute, but there the create call's Idempotency-Key
    returns the first attempt's intent anyway.
    """
    intents = client.v1.payment_intents
    if known_id:
        try:
            return await intents.retrieve_async(known_id)
        except stripe.InvalidRequestError as exc:
            if exc.http_status != 404:
                raise
    escaped = key.replace("\\", "\\\\").replace("'", "\\'")
    try:
        page: Any = await intents.search_async(
            {"query": f"metadata['idempotency_key']:'{escaped}'", "limit": 100}
        )
    except stripe.InvalidRequestError as exc:
        if exc.http_status != 404:
            raise
        page = await intents.list_async({"limit": 100})  # localstripe: no search
    found = [pi async for pi in page.auto_paging_iter() if key_of(pi) == key]
    if not found:
        return None
    # One per key is the invariant; should it break, the money that moved wins.
    found.sort(key=lambda pi: (pi.status == "succeeded", pi.created))
    return found[-1]  # type: ignore[no-any-return]


def key_of(obj: stripe.PaymentIntent | stripe.Refund) -> str | None:
    """The idempotency key an object carries in its metadata."""
    metadata = obj.metadata
    if metadata is None or "idempotency_key" not in metadata:
        return None
    return str(metadata["idempotency_key"])


# -- the compensation -----------------------------------------------------------------
class PaymentCompensations:
    def __init__(self, client: stripe.StripeClient) -> None:
        self._client = client

    @activity.defn
    async def refund_payment(self, inp: ChargeInput, result: ChargeResult | None) -> RefundResult:
        """Refund the charge in full, or cancel an intent that never completed."""
        step = current_step()
        known = result.external_id if result is not None else step.recorded_external_id
        try:
            intent = await find_intent(self._client, step.idempotency_key, known)
            if intent is None:
                activity.logger.info("step %s charged nothing: no refund", step.idempotency_key)
                return RefundResult(action="nothing_to_undo")
            return await self._undo(intent, step.saga_id, step.idempotency_key)
        except stripe.StripeError as exc:
            raise stripe_failure(exc) from None

    async def _undo(self, intent: stripe.PaymentIntent, saga_id: str, key: str) -> RefundResult:
        status = intent.status
        if status == "canceled":
            return RefundResult(action="already_cancelled", payment_intent=intent.id)
        if status in CANCELLABLE:
            await self._client.v1.payment_intents.cancel_async(
                intent.id, options={"idempotency_key": f"{key}/cancel"}
            )
            return RefundResult(action="cancelled", payment_intent=intent.id)
        if status != "succeeded":  # processing: wait until it settles, then refund
            raise ApplicationError(
                f"payment {intent.id} is {status}; retrying until it settles",
                type="PaymentNotSettled",
            )
        refunds = await self._client.v1.refunds.list_async(
            {"payment_intent": intent.id, "limit": 100}
        )
        standing = [r async for r in refunds.auto_paging_iter() if r.status != "failed"]
        refunded = sum(r.amount for r in standing)
        ours = next((r for r in standing if key_of(r) == key), None)
        if ours is not None or refunded >= intent.amount:
            return RefundResult(
                action="already_refunded",
                payment_intent=intent.id,
                refund_id=ours.id if ours is not None else None,
                amount_refunded=refunded,
            )
        refund = await self._client.v1.refunds.create_async(
            {
                "payment_intent": intent.id,
                "amount": intent.amount - refunded,
                "metadata": metadata_for(saga_id, key),
            },
            {"idempotency_key": f"{key}/refund"},
        )
        activity.logger.info("refunded %s for step %s (%s)", intent.id, key, refund.id)
        return RefundResult(
            action="refunded",
            payment_intent=intent.id,
            refund_id=refund.id,
            amount_refunded=refunded + refund.amount,
        )
