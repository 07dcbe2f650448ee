"""Card numbers become Stripe PaymentMethods at the edge, against real localstripe."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
import stripe

import compensations  # noqa: F401  (declares payments.charge and its refund)
from saga import PlanRejected, SagaInput, Settings, catalog, validate_plan
from saga._cards import CardRefused, card_numbers_in, tokenize_cards
from saga.dev._localstripe import LocalStripe, publish_url
from tests.conftest import Stack, unique
from tests.test_cli import ROOT, cli_env

CARD = "4242424242424242"
DECLINING = "4000000000000002"  # declined when attached (in the activity), not here
NOT_A_CARD = "1234567812345678"  # 16 digits that fail the Luhn check


def charge(**pay: Any) -> dict[str, Any]:
    args = {"amount": 900, "currency": "eur", "customer_email": "ana@example.com", **pay}
    return {"id": "charge", "action": "payments.charge", "args": args}


def stripe_settings(server: LocalStripe, **kw: Any) -> Settings:
    return Settings(stripe_api_key=f"sk_test_{uuid.uuid4().hex}", stripe_api_base=server.url, **kw)


async def card_of(server: LocalStripe, settings: Settings, pm: str) -> str:
    client = stripe.StripeClient(
        settings.stripe_api_key, base_addresses={"api": server.url}, max_network_retries=0
    )
    method = await client.v1.payment_methods.retrieve_async(pm)
    assert method.card is not None
    return str(method.card.last4)


async def test_plan_and_request_numbers_become_one_payment_method_each(
    localstripe: LocalStripe,
) -> None:
    settings = stripe_settings(localstripe)
    inp = SagaInput(
        plan={
            "steps": [
                charge(card_number=CARD, description=f"with 4242-4242-4242-4242 ({NOT_A_CARD})"),
                charge(card_number=DECLINING),
            ]
        },
        request=f"charge {CARD[:4]} {CARD[4:8]} {CARD[8:12]} {CARD[12:]}, order {NOT_A_CARD}",
    )  # fmt: skip
    assert card_numbers_in(inp) == {CARD, DECLINING}
    out = await tokenize_cards(inp, settings)

    first, second = (s["args"] for s in out.plan["steps"])
    assert "card_number" not in first and "card_number" not in second
    pm, other = first["payment_method"], second["payment_method"]
    assert pm.startswith("pm_") and other.startswith("pm_") and pm != other
    # The same number, wherever and however it is written, is one payment method.
    assert first["description"] == f"with {pm} ({NOT_A_CARD})"
    assert out.request == f"charge {pm}, order {NOT_A_CARD}"
    assert await card_of(localstripe, settings, pm) == "4242"
    assert await card_of(localstripe, settings, other) == "0002"
    assert first["customer_email"] == "ana@example.com"  # nothing else changes
    assert inp.plan["steps"][0]["args"]["card_number"] == CARD  # the input is not mutated
    assert card_numbers_in(out) == set()


async def test_nothing_to_replace_contacts_no_stripe() -> None:
    nowhere = Settings(stripe_api_key="sk_test_x", stripe_api_base="http://127.0.0.1:9")
    inp = SagaInput(
        plan={"steps": [charge(payment_method="pm_card_visa", description=f"ref {NOT_A_CARD}")]},
        request="order 2 mugs",
    )
    assert await tokenize_cards(inp, nowhere) is inp


async def test_both_ways_to_pay_lose_the_number_and_are_still_refused(
    localstripe: LocalStripe,
) -> None:
    inp = SagaInput(plan={"steps": [charge(card_number=CARD, payment_method="pm_card_visa")]})
    out = await tokenize_cards(inp, stripe_settings(localstripe))
    args = out.plan["steps"][0]["args"]
    assert args["payment_method"] == "pm_card_visa" and args["card_number"].startswith("pm_")
    with pytest.raises(PlanRejected, match=r"step 'charge' \(payments.charge\): args"):
        validate_plan(out.plan, catalog)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (
            Settings(stripe_api_key="sk_live_abc", stripe_api_base="http://127.0.0.1:9"),
            "card number •••• 4242: card numbers are accepted in Stripe test mode only",
        ),
        (
            Settings(stripe_api_key="sk_test_x", stripe_api_base="http://127.0.0.1:9"),
            "card number •••• 4242: Stripe could not make it a payment method",
        ),
    ],
)
async def test_refusals_name_the_card_masked(settings: Settings, message: str) -> None:
    with pytest.raises(CardRefused) as caught:
        await tokenize_cards(SagaInput(request=f"pay with {CARD}"), settings)
    assert message in str(caught.value)
    assert CARD not in str(caught.value)


async def test_the_local_key_finds_saga_devs_localstripe(
    localstripe: LocalStripe, tmp_path: Path
) -> None:
    local = Settings(stripe_api_key="sk_test_local", stripe_api_base=None, data_dir=tmp_path)
    with pytest.raises(CardRefused, match=r"set SAGA_STRIPE_API_BASE .*or run `saga dev`"):
        await tokenize_cards(SagaInput(request=f"pay with {CARD}"), local)
    publish_url(tmp_path, localstripe.url)  # what `saga dev` does
    out = await tokenize_cards(SagaInput(request=f"pay with {CARD}"), local)
    assert out.request is not None and out.request.startswith("pay with pm_")


async def test_cli_start_with_an_unusable_card_starts_nothing(stack: Stack, tmp_path: Path) -> None:
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"steps": [charge(card_number=CARD)]}))
    sid = unique("card")
    env = cli_env(
        stack,
        SAGA_ACTIVITIES="activities:build_activities,compensations:build_compensations",
        SAGA_STRIPE_API_KEY="sk_test_x",
        SAGA_STRIPE_API_BASE="http://127.0.0.1:9",
    )

    def saga(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "saga", *args],
            env=env, cwd=ROOT, capture_output=True, text=True, timeout=120,
        )  # fmt: skip

    started = await asyncio.to_thread(saga, "start", "--plan", str(plan), "--id", sid)
    assert started.returncode == 2, started.stdout + started.stderr
    assert started.stderr == (
        "saga: card number •••• 4242: Stripe could not make it a payment method "
        "(cannot reach Stripe at http://127.0.0.1:9); nothing was started\n"
    )
    assert CARD not in started.stdout + started.stderr
    assert len(started.stderr.strip().splitlines()) == 1
    status = await asyncio.to_thread(saga, "status", sid)
    assert status.returncode == 2 and f"no saga {sid!r}" in status.stderr
