"""Undo `payments.charge`: refund a succeeded PaymentIntent, cancel an unfinished one.

The payments system itself (models, finding a step's intent) lives in
`activities/payments.py`, its Stripe client and error mapping in `activities/_stripe.py`;
this module holds only the undo and declares it with ``@compensates``.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any, Literal

import stripe
from pydantic import BaseModel
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities._stripe import HTTP_TIMEOUT_SECONDS, stripe_client, stripe_failure
from activities.payments import (
    ChargeInput,
    ChargeResult,
    PaymentActivities,
    find_intent,
    key_of,
    metadata_for,
)
from saga import Settings, compensates, current_step

CANCELLABLE = frozenset(
    {"requires_payment_method", "requires_confirmation", "requires_action", "requires_capture"}
)


RefundAction = Literal[
    "refunded", "cancelled", "already_refunded", "already_cancelled", "nothing_to_undo"
]


class RefundResult(BaseModel):
    action: RefundAction
    payment_intent: str | None = None
    refund_id: str | None = None
    amount_refunded: int = 0


class PaymentCompensations:
    def __init__(self, client: stripe.StripeClient, http: stripe.HTTPXClient | None = None) -> None:
        self._client = client
        self._http = http

    async def aclose(self) -> None:
        """Close the Stripe client's connections (the worker calls it when it stops)."""
        if self._http is not None:
            await self._http.close_async()  # type: ignore[no-untyped-call]

    @compensates(PaymentActivities.charge_payment, timeout=timedelta(minutes=2))
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


def build(settings: Settings) -> list[Callable[..., Any]]:
    """The refund of `payments.charge`, bound to a Stripe client of its own."""
    http = stripe.HTTPXClient(timeout=HTTP_TIMEOUT_SECONDS)
    return [PaymentCompensations(stripe_client(settings, http), http).refund_payment]
