"""The payments system, and its action `payments.charge`: charge a customer once with a
Stripe PaymentIntent.

This module is the system's home: the action's models, finding a step's PaymentIntent,
the forward action, the reconciliation reader, the card vault and dev seeding, and
`build()`, which lists every action of the system. Beside it, only for size: the Stripe
client and its error mapping (`activities/_stripe.py`) and the read-only look-up
`payments.customer` (`activities/payments_lookups.py`). Its undo (a refund) is in
`compensations/payments.py`.

Exactly once, even when a response is lost: every request carries an Idempotency-Key
derived from the step, the intent carries the key in its metadata, and its id goes to
the ledger the moment it exists. A retry first looks for that intent and adopts it
(confirming it if the earlier attempt stopped short) instead of creating another;
that is what makes it exactly once on servers that ignore Idempotency-Key, such as
localstripe.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Self

import stripe
from pydantic import BaseModel, ConfigDict, Field, model_validator
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities._stripe import (
    HTTP_TIMEOUT_SECONDS,
    card_payment_method,
    is_test_key,
    stripe_client,
    stripe_failure,
)
from activities.payments_lookups import PaymentLookups
from saga import (
    Amount,
    Currency,
    Effect,
    Seed,
    Settings,
    StepContext,
    StepOptions,
    StepResult,
    SystemUnavailable,
    catalog,
    compensable,
    current_step,
)

if TYPE_CHECKING:
    from stripe.params import PaymentIntentCreateParams

log = logging.getLogger(__name__)


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


class ChargeResult(StepResult):
    external_id: str = Field(description="The PaymentIntent id.")
    status: str
    amount: int
    currency: str


# -- finding a step's intent -------------------------------------------------------
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

    @compensable(
        options=StepOptions(start_to_close_timeout=timedelta(minutes=2), summary="charge {amount}")
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
    """Every action of the payments system: `payments.charge` and the look-up
    `payments.customer`, each bound to a Stripe client of its own. Without a Stripe key
    the look-up says it is not configured (plans naming it are refused)."""
    http = stripe.HTTPXClient(timeout=HTTP_TIMEOUT_SECONDS)
    forward = PaymentActivities(
        stripe_client(settings, http),
        test_mode=is_test_key(settings.stripe_api_key),
        localstripe=settings.stripe_api_base is not None,
        http=http,
    )
    reading = stripe.HTTPXClient(timeout=HTTP_TIMEOUT_SECONDS)
    lookups = PaymentLookups(
        stripe_client(settings, reading),
        configured=bool(settings.stripe_api_key.strip()),
        http=reading,
    )
    return [forward.charge_payment, lookups.find_customer]


# -- what reconciliation reads -----------------------------------------------------------
PAGE = 100


class PaymentsReader:
    """The PaymentIntents of Stripe, for `saga reconcile` (read-only)."""

    system = "payments"

    def __init__(self, settings: Settings) -> None:
        self.where = settings.stripe_api_base or "api.stripe.com"
        self._http = stripe.HTTPXClient(timeout=HTTP_TIMEOUT_SECONDS)
        self._client = stripe_client(settings, self._http)

    async def effects(self, saga_prefix: str) -> list[Effect]:
        refunded: dict[str, int] = {}
        page: Any = await self._client.v1.refunds.list_async({"limit": PAGE})
        async for refund in page.auto_paging_iter():
            if refund.status != "failed" and refund.payment_intent:
                pi_id = str(refund.payment_intent)
                refunded[pi_id] = refunded.get(pi_id, 0) + int(refund.amount)
        found = []
        page = await self._client.v1.payment_intents.list_async({"limit": PAGE})
        async for pi in page.auto_paging_iter():
            back = refunded.get(pi.id, 0)
            standing = pi.status != "canceled" and not (
                pi.status == "succeeded" and back >= pi.amount
            )
            state = f"{pi.id} {pi.status}, refunded {back}/{pi.amount}"
            found.append(Effect(self.system, key_of(pi) or "", pi.id, standing, state))
        return found

    async def lookup(self, external_id: str) -> Effect | None:
        try:
            pi = await self._client.v1.payment_intents.retrieve_async(external_id)
        except stripe.InvalidRequestError as exc:
            if exc.http_status == 404:
                return None
            raise
        state = f"{pi.id} {pi.status}"
        return Effect(self.system, key_of(pi) or "", pi.id, pi.status != "canceled", state)

    async def aclose(self) -> None:
        await self._http.close_async()  # type: ignore[no-untyped-call]


catalog.add_reader("payments.charge", PaymentsReader)


# -- card numbers at the edge ------------------------------------------------------------
class StripeCardVault:
    """Card numbers become PaymentMethods before a saga starts (``saga._cards``)."""

    def __init__(self, settings: Settings) -> None:
        self.test_mode = is_test_key(settings.stripe_api_key)
        self._where = settings.stripe_api_base or "api.stripe.com"
        self._http = stripe.HTTPXClient(timeout=HTTP_TIMEOUT_SECONDS)
        self._client = stripe_client(settings, self._http)

    async def payment_method(self, card_number: str) -> str:
        try:
            return await card_payment_method(self._client, card_number)
        except stripe.StripeError as exc:
            if isinstance(exc, stripe.APIConnectionError):
                why = f"cannot reach Stripe at {self._where}"
            else:
                why = " ".join((exc.user_message or type(exc).__name__).split())
            raise SystemUnavailable(why) from None

    async def aclose(self) -> None:
        await self._http.close_async()  # type: ignore[no-untyped-call]


catalog.add_card_vault("payments.charge", StripeCardVault)


# -- dev seeding ---------------------------------------------------------------------------
DEV_CUSTOMER = "ana@example.com"
"""The customer of the README's example request, seeded with a saved card for `saga dev`."""
DEV_CARD = "4242424242424242"


def prepare(settings: Settings) -> None:
    """On a local Stripe (``stripe_api_base`` set, a test key), as `saga dev` and the demo
    run it: the customer ana@example.com with a saved Visa card, so that
    `payments.customer` finds one. Idempotent; a Stripe that cannot be reached is logged
    and left alone (the dev stack runs without the sample customer)."""
    if settings.stripe_api_base is None or not is_test_key(settings.stripe_api_key):
        return
    http = stripe.HTTPXClient(timeout=HTTP_TIMEOUT_SECONDS, allow_sync_methods=True)
    client = stripe_client(settings, http).v1
    try:
        found = client.customers.list({"email": DEV_CUSTOMER, "limit": 1}).data
        customer = (
            found[0].id
            if found
            else client.customers.create({"email": DEV_CUSTOMER, "name": "Ana"}).id
        )
        saved = client.payment_methods.list({"customer": customer, "type": "card", "limit": 1})
        if not saved.data:
            method = client.payment_methods.create(
                {
                    "type": "card",
                    "card": {"number": DEV_CARD, "exp_month": 12, "exp_year": 2034, "cvc": "123"},
                }
            )
            client.payment_methods.attach(method.id, {"customer": customer})
    except stripe.StripeError as exc:
        log.warning("no sample customer in Stripe at %s: %s", settings.stripe_api_base, exc)
    finally:
        http.close()  # type: ignore[no-untyped-call]


catalog.add_seed("payments", Seed(prepare=prepare))
