"""payments.charge / refund against real localstripe, through the real saga workflow.

Exactly-once is proved by counting PaymentIntents and Refunds in localstripe itself.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import stripe
from sqlalchemy import Engine
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowUpdateFailedError

import compensations.payments
from activities import payments
from activities.payments import find_intent, metadata_for
from saga import (
    Ledger,
    Policy,
    SagaInput,
    SagaResult,
    SagaStatus,
    Settings,
    create_worker,
    idempotency_key,
    saga_state,
    start_saga,
    wait_saga,
)
from saga._client import update_saga
from saga._models import ApprovalDecision, StepEdit
from saga._policy import ApprovalMode
from saga.dev._localstripe import LocalStripe
from tests import effects
from tests.conftest import eventually
from tests.history import history_text

API_KEY = f"sk_test_{uuid.uuid4().hex}"
"""Distinctive, so finding it anywhere in workflow history is unambiguous."""


@dataclass
class Payments:
    """A worker running payments (and the test effects) against localstripe."""

    client: Client
    settings: Settings
    ledger: Ledger
    stripe: stripe.StripeClient
    """The test's own view of localstripe, for counting."""

    async def run(self, steps: list[dict[str, Any]], *, at_the_edge: bool = True) -> SagaResult:
        """Start and wait. ``at_the_edge``: through ``start_saga``, which turns card numbers
        into payment methods; else straight to the workflow (as a model's plan arrives)."""
        sid = f"pay-{uuid.uuid4().hex[:10]}"
        if at_the_edge:
            await start_saga(
                self.client,
                {"steps": steps},
                saga_id=sid,
                task_queue=self.settings.task_queue,
                settings=self.settings,
            )
        else:
            await self.client.start_workflow(
                "SagaWorkflow",
                SagaInput(plan={"steps": steps}),
                id=sid,
                task_queue=self.settings.task_queue,
            )
        return await wait_saga(self.client, sid)

    async def intents_with_key(self, key: str) -> list[stripe.PaymentIntent]:
        page = await self.stripe.v1.payment_intents.list_async({"limit": 100})
        return [
            pi
            async for pi in page.auto_paging_iter()
            if "idempotency_key" in pi.metadata and pi.metadata["idempotency_key"] == key
        ]

    async def refunds_of(self, intent_id: str) -> list[stripe.Refund]:
        page = await self.stripe.v1.refunds.list_async({"payment_intent": intent_id})
        return [r async for r in page.auto_paging_iter()]

    async def compensation_results(self, saga_id: str) -> list[dict[str, Any]]:
        """What refund_payment returned, read from the workflow's event history."""
        history = await self.client.get_workflow_handle(saga_id).fetch_history()
        refunds: set[int] = set()
        out: list[dict[str, Any]] = []
        for event in history.events:
            if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
                attrs = event.activity_task_scheduled_event_attributes
                if attrs.activity_type.name == "refund_payment":
                    refunds.add(event.event_id)
            elif event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED:
                done = event.activity_task_completed_event_attributes
                if done.scheduled_event_id in refunds:
                    (value,) = await self.client.data_converter.decode(done.result.payloads)
                    out.append(value)
        return out


@asynccontextmanager
async def payments_worker(
    client: Client,
    data_dir: Path,
    server: LocalStripe,
    *,
    faults: str = "",
    policy_file: Path | None = None,
) -> AsyncIterator[Payments]:
    settings = Settings(
        task_queue=f"payments-{uuid.uuid4().hex[:8]}",
        data_dir=data_dir,
        database_url=f"sqlite:///{data_dir / f'ledger-{uuid.uuid4().hex[:6]}.db'}",
        stripe_api_key=API_KEY,
        stripe_api_base=server.url,
        faults=faults,
        policy_file=policy_file,
    )
    ledger = Ledger(settings.ledger_url())
    acts = [
        *payments.build(settings),
        *compensations.payments.build(settings),
        *effects.build_activities(settings),
    ]
    counter = stripe.StripeClient(
        API_KEY, base_addresses={"api": server.url}, max_network_retries=0
    )
    try:
        async with create_worker(client, settings, ledger, activities=acts):
            yield Payments(client, settings, ledger, counter)
    finally:
        ledger.close()


@pytest.fixture(scope="module")
async def pay(
    client: Client,
    localstripe: LocalStripe,
    effects_engine: Engine,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[Payments]:
    async with payments_worker(client, tmp_path_factory.mktemp("pay"), localstripe) as p:
        yield p


@pytest.fixture(scope="module")
async def lossy(
    client: Client,
    localstripe: LocalStripe,
    effects_engine: Engine,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[Payments]:
    """The first attempt of every charge takes effect, then its response is lost."""
    async with payments_worker(
        client, tmp_path_factory.mktemp("lossy"), localstripe, faults="payments.charge=1"
    ) as p:
        yield p


def charge(step_id: str = "charge", amount: Any = 1999, **pay_with: str) -> dict[str, Any]:
    args: dict[str, Any] = {
        "amount": amount,
        "currency": "USD",
        "customer_email": "ada@example.com",
        "description": "two mugs",
    }
    args.update(pay_with or {"card_number": "4242424242424242"})
    return {"id": step_id, "action": "payments.charge", "args": args}


def failing(step_id: str = "ship") -> dict[str, Any]:
    return {"id": step_id, "action": "effects.apply", "args": {"name": "x", "fail": "before"}}


@pytest.mark.parametrize(
    ("pay_with", "at_the_edge"),
    [
        ({"card_number": "4242424242424242"}, True),  # becomes a pm_ id before the start
        ({"card_number": "4242424242424242"}, False),  # a plan that still carries a number
        ({"payment_method": "pm_card_visa"}, True),
    ],
)
async def test_charge_succeeds_in_localstripe(
    pay: Payments, pay_with: dict[str, str], at_the_edge: bool
) -> None:
    done = await pay.run([charge(amount=2500, **pay_with)], at_the_edge=at_the_edge)
    assert done.plan is not None
    args = done.plan.steps[0].args
    if "card_number" in pay_with and at_the_edge:
        assert "card_number" not in args and args["payment_method"].startswith("pm_")
    else:
        assert {k: args[k] for k in pay_with} == pay_with
    assert done.status == SagaStatus.COMPLETED, done
    key = idempotency_key(done.saga_id, "charge")
    [intent] = await pay.intents_with_key(key)
    assert (intent.status, intent.amount, intent.currency) == ("succeeded", 2500, "usd")
    assert intent.metadata["saga_id"] == done.saga_id
    assert intent.metadata["description"] == "two mugs"
    step = pay.ledger.step(key)
    assert step is not None and step.status == "succeeded"
    assert step.external_id == intent.id
    assert step.result == {
        "external_id": intent.id,
        "status": "succeeded",
        "amount": 2500,
        "currency": "usd",
    }
    assert await pay.refunds_of(intent.id) == []


async def test_later_failure_refunds_the_charge(pay: Payments) -> None:
    done = await pay.run([charge(amount=4200), failing()])
    assert done.status == SagaStatus.COMPENSATED, done
    key = idempotency_key(done.saga_id, "charge")
    step = pay.ledger.step(key)
    assert step is not None and step.compensation_status == "compensated"
    [intent] = await pay.intents_with_key(key)
    [refund] = await pay.refunds_of(intent.id)
    assert (refund.amount, refund.status) == (4200, "succeeded")
    assert refund.metadata["idempotency_key"] == idempotency_key(done.saga_id, "charge")
    [undo] = await pay.compensation_results(done.saga_id)
    assert undo == {
        "action": "refunded",
        "payment_intent": intent.id,
        "refund_id": refund.id,
        "amount_refunded": 4200,
    }


@pytest.mark.parametrize(
    ("card", "undo_action"),
    [
        # localstripe (like Stripe) declines this one when it is attached to the customer:
        ("4000000000000002", "nothing_to_undo"),
        # ...and this one when the intent is confirmed, which leaves a failed intent.
        ("4000000000000341", "cancelled"),
    ],
)
async def test_declined_card_compensates_and_charges_nothing(
    pay: Payments, card: str, undo_action: str
) -> None:
    done = await pay.run([charge(card_number=card), failing()])
    assert done.status == SagaStatus.COMPENSATED, done
    assert done.error == "CardDeclined: Your card was declined."
    key = idempotency_key(done.saga_id, "charge")
    step = pay.ledger.step(key)
    assert step is not None and step.status == "failed"
    assert step.error is not None and "Your card was declined." in step.error
    assert step.attempts == 1  # a decline is final: no retries
    assert step.compensation_status == "compensated"
    assert pay.ledger.step(idempotency_key(done.saga_id, "ship")) is None  # never ran
    intents = await pay.intents_with_key(key)
    assert [pi.status for pi in intents if pi.status != "canceled"] == []
    assert len(intents) == (1 if undo_action == "cancelled" else 0)
    [undo] = await pay.compensation_results(done.saga_id)
    assert undo["action"] == undo_action


async def test_lost_response_charges_exactly_once(lossy: Payments) -> None:
    done = await lossy.run([charge(amount=777)])
    assert done.status == SagaStatus.COMPLETED, done
    key = idempotency_key(done.saga_id, "charge")
    intents = await lossy.intents_with_key(key)
    assert len(intents) == 1, [pi.id for pi in intents]
    assert intents[0].status == "succeeded"
    step = lossy.ledger.step(key)
    assert step is not None and step.attempts == 2  # the first response was lost
    assert step.external_id == intents[0].id


async def test_lost_response_then_failure_refunds_exactly_once(lossy: Payments) -> None:
    done = await lossy.run([charge(amount=555), failing()])
    assert done.status == SagaStatus.COMPENSATED, done
    [intent] = await lossy.intents_with_key(idempotency_key(done.saga_id, "charge"))
    [refund] = await lossy.refunds_of(intent.id)
    assert refund.amount == 555


async def test_api_key_never_enters_workflow_history(pay: Payments) -> None:
    done = await pay.run([charge(), failing()])
    assert done.status == SagaStatus.COMPENSATED, done
    assert [u["action"] for u in await pay.compensation_results(done.saga_id)] == ["refunded"]
    history = await pay.client.get_workflow_handle(done.saga_id).fetch_history()
    text = history_text(history)
    # Payloads are decoded: the PaymentIntent id in the result proves the search sees them.
    assert done.steps[0].external_id and done.steps[0].external_id in text
    assert "sk_test_" not in text
    assert API_KEY not in text and API_KEY[8:] not in text


async def test_find_intent_by_metadata_when_no_id_was_recorded(pay: Payments) -> None:
    """What a retry or a refund does when the ledger never got the intent's id."""
    key = f"pay-{uuid.uuid4().hex[:10]}/charge"
    assert await find_intent(pay.stripe, key, None) is None
    created = await pay.stripe.v1.payment_intents.create_async(
        {"amount": 300, "currency": "eur", "metadata": metadata_for("s", key)}
    )
    by_key = await find_intent(pay.stripe, key, None)
    by_stale_id = await find_intent(pay.stripe, key, "pi_doesnotexist")
    assert by_key is not None and by_stale_id is not None
    assert by_key.id == by_stale_id.id == created.id


async def test_invalid_request_is_final(pay: Payments) -> None:
    done = await pay.run([charge(payment_method="pm_doesnotexist"), failing()])
    assert done.status == SagaStatus.COMPENSATED, done
    assert done.error is not None and done.error.startswith("StripeInvalidRequestError: ")
    step = pay.ledger.step(idempotency_key(done.saga_id, "charge"))
    assert step is not None and step.attempts == 1  # a 4xx is not retried
    [undo] = await pay.compensation_results(done.saga_id)
    assert undo["action"] == "nothing_to_undo"


# -- strict money: what the policy checks is what is charged (issue #11) -----------------
async def _start(pay: Payments, steps: list[dict[str, Any]], policy: Policy) -> str:
    sid = f"pay-{uuid.uuid4().hex[:10]}"
    await start_saga(
        pay.client,
        None,
        saga_id=sid,
        task_queue=pay.settings.task_queue,
        input=SagaInput(plan={"steps": steps}, policy=policy),
        settings=pay.settings,  # its localstripe turns the card number into a pm_ id
    )
    return sid


@pytest.mark.parametrize("amount", ["5000", 5000.0, True, "99999999"])
async def test_an_amount_the_policy_cannot_read_charges_nothing(pay: Payments, amount: Any) -> None:
    """Seen before: with a 1000 limit, "5000" and 5000.0 charged 5000, true charged 1."""
    sid = await _start(pay, [charge(amount=amount)], Policy(max_amount_per_step=1000))
    done = await wait_saga(pay.client, sid)
    assert done.status == SagaStatus.REJECTED, done
    assert done.problems[0].startswith("step 'charge' (payments.charge): args.amount:")
    assert await pay.intents_with_key(idempotency_key(sid, "charge")) == []


async def test_a_string_amount_does_not_skip_the_approval_gate(pay: Payments) -> None:
    """Seen before: with approval=risky, "5000" ran at once while 5000 waited."""
    risky = Policy(approval=ApprovalMode.RISKY, approval_threshold=1000)
    sid = await _start(pay, [charge(amount="5000")], risky)
    assert (await wait_saga(pay.client, sid)).status == SagaStatus.REJECTED
    assert await pay.intents_with_key(idempotency_key(sid, "charge")) == []

    waiting = await _start(pay, [charge(amount=5000)], risky)
    state = await eventually(lambda: _if_awaiting(pay.client, waiting), timeout=20)
    assert state.plan is not None and state.plan.steps[0].args["amount"] == 5000
    # An edit during approval is held to the same rules: no string amount, no new limit.
    for args, why in [
        (
            {**state.plan.steps[0].args, "amount": "50"},
            "args.amount: Input should be a valid integer",
        ),
        ({**state.plan.steps[0].args, "currency": "xyz"}, "not an ISO 4217 currency code"),
    ]:
        with pytest.raises(WorkflowUpdateFailedError) as refused:
            await update_saga(
                pay.client,
                waiting,
                "edit_step",
                StepEdit(plan_hash=state.plan_hash or "", step_id="charge", args=args),
            )
        assert why in str(refused.value.cause)
    await update_saga(pay.client, waiting, "reject", ApprovalDecision(by="test"))
    assert (await wait_saga(pay.client, waiting)).status == SagaStatus.REJECTED
    assert await pay.intents_with_key(idempotency_key(waiting, "charge")) == []


async def _if_awaiting(client: Client, sid: str) -> SagaResult | None:
    state = await saga_state(client, sid)
    return state if state.status == SagaStatus.AWAITING_APPROVAL else None


async def test_the_workers_policy_is_a_floor_no_starter_can_loosen(
    client: Client, localstripe: LocalStripe, tmp_path: Path
) -> None:
    """Whoever starts a saga passes a policy; a lenient one does not lift the workers'."""
    floor = tmp_path / "policy.json"
    floor.write_text(json.dumps({"max_amount_per_step": 1000, "currencies": ["usd"]}))
    async with payments_worker(client, tmp_path, localstripe, policy_file=floor) as strict:
        sid = await _start(strict, [charge(amount=5000)], Policy())
        done = await wait_saga(client, sid)
        assert done.status == SagaStatus.REJECTED, done
        assert done.problems == ["step 'charge': amount 5000 is over the per-step limit 1000"]
        assert await strict.intents_with_key(idempotency_key(sid, "charge")) == []
        ok = await _start(strict, [charge(amount=900)], Policy(currencies=["usd", "eur"]))
        assert (await wait_saga(client, ok)).status == SagaStatus.COMPLETED
