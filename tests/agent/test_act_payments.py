"""Act mode on real localstripe with a scripted model: a saved card is declined, the model
is told so and charges the customer's second saved card. The declined charge moved no
money, so the policy's amount per saga still allows the second one.

The first card (4000000000000341) attaches and is declined when charged, as in Stripe.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import stripe
from temporalio.client import Client

from saga import (
    Ledger,
    SagaInput,
    SagaStatus,
    SagaWorkflow,
    Settings,
    create_worker,
    free_port,
)
from saga._models import SagaMode, StepStatus
from saga._policy import Policy
from saga.dev._localstripe import LocalStripe
from tests.agent.conftest import ScriptedModel, client_with, plugin_for
from tests.agent.test_act_mode import call, finish, told

DECLINED_WHEN_CHARGED = "4000000000000341"
GOOD = "4242424242424242"


def saved_cards(api_base: str, email: str) -> list[str]:
    """A customer with two saved cards, the declining one first; their pm ids."""
    client = stripe.StripeClient("sk_test_local", base_addresses={"api": api_base})
    customer = client.v1.customers.create({"email": email, "name": "Ana"}).id
    ids = []
    for number in (DECLINED_WHEN_CHARGED, GOOD):
        method = client.v1.payment_methods.create(
            {
                "type": "card",
                "card": {"number": number, "exp_month": 12, "exp_year": 2034, "cvc": "123"},
            }
        )
        client.v1.payment_methods.attach(method.id, {"customer": customer})
        ids.append(method.id)
    return ids


async def test_a_declined_saved_card_then_the_second_one(client: Client, tmp_path: Path) -> None:
    server = LocalStripe(free_port(), log_file=tmp_path / "localstripe.log")
    await server.start()
    try:
        email = f"ana-{uuid.uuid4().hex[:6]}@example.com"
        declining, good = saved_cards(server.url, email)
        charge: dict[str, Any] = {"amount": 2500, "currency": "eur", "customer_email": email}
        model = ScriptedModel(
            [
                call("payments.customer", {"email": email}, "pay-1"),
                call("payments.charge", {**charge, "payment_method": declining}, "pay-2"),
                call("payments.charge", {**charge, "payment_method": good}, "pay-3"),
                finish(True, "the first card was declined; charged the second saved card"),
            ]
        )
        settings = Settings(
            task_queue=f"act-pay-{uuid.uuid4().hex[:8]}",
            database_url=f"sqlite:///{tmp_path / 'ledger.db'}",
            data_dir=tmp_path,
            stripe_api_base=server.url,
        )
        ledger = Ledger(settings.ledger_url())
        agent_client = client_with(client, plugin_for(model))
        # Both charges together (5000) are over the saga's limit: only money that moved counts.
        policy = Policy(
            allowed_actions=["payments.customer", "payments.charge"], max_amount_per_saga=3000
        )
        try:
            async with create_worker(agent_client, settings, ledger):
                handle = await agent_client.start_workflow(
                    SagaWorkflow.run,
                    SagaInput(request=f"charge {email} 25 EUR", mode=SagaMode.ACT, policy=policy),
                    id=f"act-pay-{uuid.uuid4().hex[:8]}",
                    task_queue=settings.task_queue,
                )
                result = await handle.result()
        finally:
            ledger.close()

        assert result.status == SagaStatus.COMPLETED, result
        cards = result.lookups[0].result["customers"][0]["cards"]  # type: ignore[index]
        assert [c["payment_method"] for c in cards] == [declining, good]
        first, second = result.steps
        assert first.status == StepStatus.FAILED and first.error is not None
        assert first.error.startswith("CardDeclined"), first.error
        assert second.status == StepStatus.SUCCEEDED
        assert second.args["payment_method"] == good
        assert told(model, 2)[-1]["error"].startswith("CardDeclined"), told(model, 2)
        # In localstripe: one charge of 25.00 EUR took the money, from the second card.
        stripe_client = stripe.StripeClient("sk_test_local", base_addresses={"api": server.url})
        intents = [
            pi
            for pi in stripe_client.v1.payment_intents.list({"limit": 100}).data
            if pi.metadata.to_dict().get("saga_id") == handle.id
        ]
        taken = [pi for pi in intents if pi.status == "succeeded"]
        assert [(pi.amount, pi.payment_method) for pi in taken] == [(2500, good)]
        assert not [r for r in stripe_client.v1.refunds.list({"limit": 100}).data
                    if r.payment_intent == taken[0].id]  # fmt: skip
    finally:
        server.stop()
