"""Card numbers become Stripe PaymentMethods at the edge, before a saga starts.

```python
inp = await tokenize_cards(SagaInput(plan=plan, request=request), settings)
```

Every way in (the command line, the Python API's ``start_saga``, and so the web app or
any other caller of it) passes its input through :func:`tokenize_cards`: a step's
``card_number`` argument becomes ``payment_method: pm_...``, and any other card-shaped
number (13-19 digits, spaces or dashes allowed, Luhn-valid) in the plan's texts or in the
request in words is replaced by its ``pm_...`` id. The workflow, its history and the
ledger then never see the number. Card numbers are accepted in Stripe test mode only.

A plan that still carries a number (written by a model, say) is accepted by
``payments.charge`` in test mode; the payload codec keeps it out of history in the clear.
"""

from __future__ import annotations

import re
from typing import Any

from saga._errors import SagaError
from saga._models import SagaInput
from saga._redact import card_numbers, mask_card
from saga._settings import Settings
from saga._systems import SystemUnavailable

CARD_ARG = "card_number"
PAYMENT_METHOD_ARG = "payment_method"


class CardRefused(SagaError):
    """A card number could not be turned into a payment method; nothing was started."""


def _digits(number: str) -> str:
    return re.sub(r"[ -]", "", number)


def _plan_numbers(value: Any, found: set[str]) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            if key == CARD_ARG and isinstance(item, str | int) and not isinstance(item, bool):
                found.add(_digits(str(item)))
            else:
                _plan_numbers(item, found)
    elif isinstance(value, list):
        for item in value:
            _plan_numbers(item, found)
    elif isinstance(value, str):
        found.update(_digits(n) for n in card_numbers(value))


def _replace_in_text(text: str, tokens: dict[str, str]) -> str:
    for number in card_numbers(text):
        text = text.replace(number, tokens[_digits(number)])
    return text


def _replace(value: Any, tokens: dict[str, str]) -> Any:
    if isinstance(value, dict):
        out = {k: _replace(v, tokens) for k, v in value.items()}
        number = value.get(CARD_ARG)
        if (
            isinstance(number, str | int)
            and not isinstance(number, bool)
            and PAYMENT_METHOD_ARG not in value  # both given: the plan is refused anyway
        ):
            del out[CARD_ARG]
            out[PAYMENT_METHOD_ARG] = tokens[_digits(str(number))]
        return out
    if isinstance(value, list):
        return [_replace(v, tokens) for v in value]
    if isinstance(value, str):
        return _replace_in_text(value, tokens)
    return value


def card_numbers_in(inp: SagaInput) -> set[str]:
    """The card numbers (digits only) in a saga's plan and request."""
    found: set[str] = set()
    _plan_numbers(inp.plan, found)
    if inp.request:
        found.update(_digits(n) for n in card_numbers(inp.request))
    return found


async def tokenize_cards(inp: SagaInput, settings: Settings | None = None) -> SagaInput:
    """``inp`` with every card number replaced by a Stripe PaymentMethod id.

    Contacts Stripe (``settings``' key and API base, default: the environment's; `saga
    dev`'s localstripe when the key is the local placeholder) only when there is a number
    to replace.
    """
    numbers = card_numbers_in(inp)
    if not numbers:
        return inp
    settings = settings or Settings()
    from saga._catalog import catalog

    catalog.load_systems(settings)
    shown = ", ".join(sorted(mask_card(n) for n in numbers))
    vaults = list(catalog.card_vaults().values())
    if not vaults:
        raise CardRefused(
            f"card number {shown}: no configured system turns card numbers into payment "
            "methods; give the charge a payment_method id"
        )
    vault = vaults[0](_with_stripe_base(settings))
    tokens: dict[str, str] = {}
    try:
        if not vault.test_mode:
            raise CardRefused(
                f"card number {shown}: card numbers are accepted in Stripe test mode only "
                "(SAGA_STRIPE_API_KEY is not a test key); give the charge a payment_method id"
            )
        for number in sorted(numbers):
            try:
                tokens[number] = await vault.payment_method(number)
            except SystemUnavailable as exc:
                raise CardRefused(
                    f"card number {mask_card(number)}: Stripe could not make it a payment "
                    f"method ({exc}); nothing was started"
                ) from None
    finally:
        await vault.aclose()
    return inp.model_copy(
        update={
            "plan": _replace(inp.plan, tokens),
            "request": _replace_in_text(inp.request, tokens) if inp.request else inp.request,
        }
    )


def _with_stripe_base(settings: Settings) -> Settings:
    """``settings``, pointed at `saga dev`'s localstripe when the key is the local one."""
    if settings.stripe_api_base is not None or not settings.stripe_api_key.startswith(
        "sk_test_local"
    ):
        return settings
    from saga.dev._localstripe import published_url

    url = published_url(settings.data_dir)
    if url is None:
        raise CardRefused(
            "a card number becomes a Stripe payment method before the saga starts, and no "
            "Stripe is configured: set SAGA_STRIPE_API_BASE (and SAGA_STRIPE_API_KEY), or "
            f"run `saga dev` with this data directory ({settings.data_dir.resolve()})"
        )
    return settings.model_copy(update={"stripe_api_base": url})
