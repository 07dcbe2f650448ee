"""`payments.charge`: charge a customer once with a Stripe PaymentIntent.

Exactly once, even when a response is lost: every request carries an Idempotency-Key
derived from the step, the intent carries the key in its metadata, and its id goes to
the ledger the moment it exists. A retry first looks for that intent and adopts it
(confirming it if the earlier attempt stopped short) instead of creating another;
that is what makes it exactly once on servers that ignore Idempotency-Key, such as
localstripe.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import stripe
from temporalio import activity
from temporalio.exceptions import ApplicationError

from compensations.payments import (
    HTTP_TIMEOUT_SECONDS,
    ChargeInput,
    ChargeResult,
    PaymentCompensations,
    card_payment_method,
    find_intent,
    is_test_key,
    metadata_for,
    stripe_client,
    stripe_failure,
)
from saga import Settings, StepContext, compensated_by, current_step

if TYPE_CHECKING:
    from stripe.params import PaymentIntentCreateParams

__all__ = ["ChargeInput", "ChargeResult", "PaymentActivities", "build"]


class PaymentActivities:
    def __init__(
        self,
        client: stripe.StripeClient,
        *,
        test_mode: bool,
        localstripe: bool,
        http: stripe.HTTPXClient | None = None,
    ) -> None:
        self._client = client
        self._test_mode = test_mode
        self._localstripe = localstripe
        self._http = http

    async def aclose(self) -> None:
        """Close the Stripe client's connections (the worker calls it when it stops)."""
        if self._http is not None:
            await self._http.close_async()  # type: ignore[no-untyped-call]

    @compensated_by(
        PaymentCompensations.refund_payment,
        start_to_close_timeout=timedelta(minutes=2),
        compensation_timeout=timedelta(minutes=2),
    )
    @activity.defn
    async def charge_payment(self, inp: ChargeInput) -> ChargeResult:
        """Charge the customer's card: create and confirm a Stripe PaymentIntent."""
        step = current_step()
        key = step.idempotency_key
        try:
            intent = None
            if step.attempt > 1 or step.recorded_external_id:
                intent = await find_intent(self._client, key, step.recorded_external_id)
                if intent is not None:
                    activity.logger.info("step %s adopts %s (%s)", key, intent.id, intent.status)
            if intent is None:
                intent = await self._create(inp, step)
            intent = await self._complete(intent, key)
        except stripe.StripeError as exc:
            raise stripe_failure(exc) from None
        return ChargeResult(
            external_id=intent.id,
            status=intent.status,
            amount=intent.amount,
            currency=intent.currency,
        )

    async def _create(self, inp: ChargeInput, step: StepContext) -> stripe.PaymentIntent:
        key = step.idempotency_key
        customer = await self._customer(inp.customer_email, key)
        payment_method = await self._payment_method(inp, key)
        # Attaching checks the card (Stripe and localstripe decline 4000000000000002 here).
        attached = await self._client.v1.payment_methods.attach_async(
            payment_method, {"customer": customer}, {"idempotency_key": f"{key}/attach"}
        )
        metadata = metadata_for(step.saga_id, key)
        if inp.description:
            # localstripe refuses a PaymentIntent `description`; metadata works on both.
            metadata["description"] = inp.description
        params: PaymentIntentCreateParams = {
            "amount": inp.amount,
            "currency": inp.currency,
            "customer": customer,
            "payment_method": attached.id,
            "metadata": metadata,
        }
        if not self._localstripe:  # localstripe refuses the parameter; Stripe needs it
            # No redirecting methods, so confirming needs no return_url.
            params["automatic_payment_methods"] = {"enabled": True, "allow_redirects": "never"}
        intent = await self._client.v1.payment_intents.create_async(
            params, {"idempotency_key": key}
        )
        await step.record_external_id(intent.id)
        return intent

    async def _customer(self, email: str, key: str) -> str:
        found = await self._client.v1.customers.list_async({"email": email, "limit": 1})
        if found.data:
            return found.data[0].id
        created = await self._client.v1.customers.create_async(
            {"email": email}, {"idempotency_key": f"{key}/customer"}
        )
        return created.id

    async def _payment_method(self, inp: ChargeInput, key: str) -> str:
        if inp.payment_method is not None:
            return inp.payment_method
        assert inp.card_number is not None  # the input model requires one of the two
        if not self._test_mode:
            raise ApplicationError(
                "card numbers are accepted in test mode only; pass a payment_method",
                type="InvalidPaymentMethod",
                non_retryable=True,
            )
        return await card_payment_method(
            self._client, inp.card_number, idempotency_key=f"{key}/payment_method"
        )

    async def _complete(self, intent: stripe.PaymentIntent, key: str) -> stripe.PaymentIntent:
        """Confirm an intent that is not confirmed yet; fail on one that cannot pay."""
        if intent.status == "requires_confirmation":
            intent = await self._client.v1.payment_intents.confirm_async(
                intent.id, options={"idempotency_key": f"{key}/confirm"}
            )
        if intent.status in ("succeeded", "processing", "requires_capture"):
            return intent
        error = intent.last_payment_error
        message = (error.message if error else None) or f"payment {intent.id} is {intent.status}"
        if error is not None and error.code == "card_declined":
            raise ApplicationError(
                message, "card_declined", type="CardDeclined", non_retryable=True
            )
        kind = {"requires_action": "AuthenticationRequired", "canceled": "PaymentCancelled"}
        raise ApplicationError(
            message, type=kind.get(intent.status, "PaymentFailed"), non_retryable=True
        )


def build(settings: Settings) -> list[Callable[..., Any]]:
    """`payments.charge` and its refund, bound to one Stripe client."""
    http = stripe.HTTPXClient(timeout=HTTP_TIMEOUT_SECONDS)
    client = stripe_client(settings, http)
    forward = PaymentActivities(
        client,
        test_mode=is_test_key(settings.stripe_api_key),
        localstripe=settings.stripe_api_base is not None,
        http=http,  # the forward side owns the client both sides share
    )
    undo = PaymentCompensations(client)
    return [forward.charge_payment, undo.refund_payment]
