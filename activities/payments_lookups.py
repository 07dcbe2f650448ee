"""The payments system's read-only look-up `payments.customer`: the Stripe customers with
an email address, and the cards saved on each (payment method id, brand, last 4 digits,
expiry; never a card number).

Part of the payments system (`activities/payments.py` is its home and lists this in its
`build()`); kept apart only for size. A look-up changes nothing and has no undo: in a
plan it is a step like any other (recorded in the ledger, its answer kept in history,
so never repeated on replay) and is never compensated. It has no effect, so no external
id. Without a Stripe key the system is not configured: the worker does not offer the
look-up, and plans that name it are refused before any step runs.

Stripe and localstripe both answer it: customers are listed by ``email`` (Stripe
compares it case-sensitively) and their payment methods by ``customer`` and
``type=card``. What they answer is clipped (``activities/_bounded.py``): a customer's
name is one short line, the last 4 digits are at most 4 digits.
"""

from __future__ import annotations

import re
from typing import Any

import stripe
from pydantic import BaseModel, ConfigDict, Field
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities._bounded import MAX_LIMIT, Limit, clip, clip_or_none, small_int
from activities._stripe import stripe_failure
from saga import StepResult, read_only

MAX_CARDS = 10
"""Saved cards listed per customer."""
ID_CHARS = 100
NAME_CHARS = 100


class CustomerInput(BaseModel):
    """Look up a customer by email: who they are in Stripe and the cards they saved."""

    model_config = ConfigDict(extra="forbid")
    email: str = Field(
        pattern=r"^[^@\s]+@[^@\s]+$",
        max_length=254,
        description="The customer's email, as given when they paid (Stripe matches it "
        "exactly, case included).",
    )
    limit: Limit = 10


class SavedCard(BaseModel):
    """A card saved on the customer, as a payment method: never its number."""

    payment_method: str = Field(
        max_length=ID_CHARS, description="Its id: pay with it as `payment_method`."
    )
    brand: str = Field(max_length=20, description="e.g. `visa`.")
    last4: str = Field(pattern=r"^[0-9]{0,4}$", description="The number's last 4 digits.")
    exp_month: int | None = Field(None, ge=1, le=12)
    exp_year: int | None = Field(None, ge=1900, le=2200)


class StripeCustomer(BaseModel):
    """One Stripe customer with that email, and their saved cards."""

    customer: str = Field(max_length=ID_CHARS, description="The Stripe customer id.")
    name: str | None = Field(None, max_length=NAME_CHARS)
    cards: list[SavedCard] = Field(max_length=MAX_CARDS)
    more_cards: bool = Field(description=f"The customer has more than {MAX_CARDS} cards.")


class CustomerResult(StepResult):
    """The customers with the email (``found`` false when there is none), at most
    ``limit``; ``more`` says that others have it too."""

    found: bool
    customers: list[StripeCustomer] = Field(max_length=MAX_LIMIT)
    more: bool


class PaymentLookups:
    """Read-only activities of the payments system, bound to a Stripe client."""

    def __init__(
        self,
        client: stripe.StripeClient,
        *,
        configured: bool,
        http: stripe.HTTPXClient | None = None,
    ) -> None:
        self._client = client
        self._configured = configured
        self._http = http

    @property
    def configured(self) -> bool:
        """False without a Stripe key: plans using payments.customer are then refused at
        validation (see ``saga_check_plan``)."""
        return self._configured

    async def aclose(self) -> None:
        """Close the Stripe client's connections (the worker calls it when it stops)."""
        if self._http is not None:
            await self._http.close_async()  # type: ignore[no-untyped-call]

    @read_only(action="payments.customer")
    @activity.defn
    async def find_customer(self, inp: CustomerInput) -> CustomerResult:
        """The Stripe customers with this email and their saved cards (id, brand, last 4
        digits, expiry); found: false if none."""
        if not self._configured:  # a saga started before the worker lost its key
            raise ApplicationError(
                "Stripe is not configured: set SAGA_STRIPE_API_KEY",
                type="PaymentsNotConfigured",
                non_retryable=True,
            )
        try:
            page: Any = await self._client.v1.customers.list_async(
                {"email": inp.email, "limit": inp.limit + 1}
            )
            listed = list(page.data)
            customers = [await self._customer(c) for c in listed[: inp.limit]]
        except stripe.StripeError as exc:
            raise stripe_failure(exc) from None
        return CustomerResult(
            found=bool(customers),
            customers=customers,
            more=len(listed) > inp.limit,
        )

    async def _customer(self, customer: Any) -> StripeCustomer:
        page: Any = await self._client.v1.payment_methods.list_async(
            {"customer": customer.id, "type": "card", "limit": MAX_CARDS + 1}
        )
        methods = list(page.data)
        return StripeCustomer(
            customer=clip(customer.id, ID_CHARS),
            name=clip_or_none(getattr(customer, "name", None), NAME_CHARS),
            cards=[saved_card(pm) for pm in methods[:MAX_CARDS]],
            more_cards=len(methods) > MAX_CARDS,
        )


def saved_card(method: Any) -> SavedCard:
    """A card payment method as a look-up shows it: at most the last 4 digits, whatever
    the server sent."""
    card = getattr(method, "card", None)
    digits = re.sub(r"\D", "", str(getattr(card, "last4", None) or ""))
    return SavedCard(
        payment_method=clip(method.id, ID_CHARS),
        brand=clip(getattr(card, "brand", None), 20),
        last4=digits[-4:],
        exp_month=small_int(getattr(card, "exp_month", None), 1, 12),
        exp_year=small_int(getattr(card, "exp_year", None), 1900, 2200),
    )
