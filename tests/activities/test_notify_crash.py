"""notify.email when its worker process dies after the SMTP server took the email.

The SMTP server stores the message and holds back its reply; the worker is SIGKILLed
while it waits, so nothing records that the email went out. The retry on another worker
must not send it a second time: the step is parked for an operator with the evidence,
and the operator's answer (it arrived / send it again / cancel) is what happens.
"""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path

import pytest
import stripe
from sqlalchemy import Engine

from activities.inventory import (
    ProductInfo,
    ReservationStatus,
    create_schema,
    make_engine,
    reservations_of,
    seed_products,
    stock_of,
)
from activities.notify import message_id
from saga import (
    SagaResult,
    SagaStatus,
    StepStatus,
    free_port,
    idempotency_key,
    saga_state,
    start_saga,
    wait_saga,
)
from saga.dev._localstripe import LocalStripe
from tests.conftest import Stack, eventually, unique
from tests.servers.smtp import ControlledMailServer
from tests.test_cli import saga
from tests.test_worker_crash import spawn_worker, stop

MAIL_FROM = "shop@example.com"
STRIPE_KEY = "sk_test_local"


@dataclass
class World:
    """Workers running the real systems (inventory, localstripe, SMTP) on their own queue."""

    stack: Stack
    mail: ControlledMailServer
    inventory: Engine
    stripe: stripe.StripeClient
    env: dict[str, str]
    logs: Path
    queue: str = field(default_factory=lambda: unique("pivot-crash"))
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def worker(self) -> subprocess.Popen[bytes]:
        proc = spawn_worker(
            self.stack, self.queue, self.logs / f"worker{len(self.procs)}.log", **self.env
        )
        self.procs.append(proc)
        return proc

    def mail_of(self, sid: str) -> list[EmailMessage]:
        return [m for m in self.mail.messages if m["X-Saga-Id"] == sid]

    def product(self, stock: int) -> str:
        sku = f"sku-{uuid.uuid4().hex[:10]}"
        info = ProductInfo(sku=sku, name=sku, price_cents=1250, stock=stock)
        assert seed_products(self.inventory, [info]) == 1
        return sku

    async def intents(self, sid: str) -> list[stripe.PaymentIntent]:
        page = await self.stripe.v1.payment_intents.list_async({"limit": 100})
        key = idempotency_key(sid, "charge")
        return [
            pi
            async for pi in page.auto_paging_iter()
            if "idempotency_key" in pi.metadata and pi.metadata["idempotency_key"] == key
        ]

    async def refunds(self, intent: str) -> list[stripe.Refund]:
        page = await self.stripe.v1.refunds.list_async({"payment_intent": intent})
        return [r async for r in page.auto_paging_iter()]


@pytest.fixture
async def world(stack: Stack, localstripe: LocalStripe, tmp_path: Path) -> AsyncIterator[World]:
    url = f"sqlite:///{tmp_path / 'inventory.db'}"
    inventory = make_engine(url)
    create_schema(inventory)
    counter = stripe.StripeClient(
        STRIPE_KEY, base_addresses={"api": localstripe.url}, max_network_retries=0
    )
    async with ControlledMailServer(free_port(), tmp_path / "mail") as mail:
        env = {
            "SAGA_ACTIVITIES": "activities:build_activities,compensations:build_compensations",
            "SAGA_STRIPE_API_KEY": STRIPE_KEY,
            "SAGA_STRIPE_API_BASE": localstripe.url,
            "SAGA_INVENTORY_URL": url,
            "SAGA_SMTP_PORT": str(mail.port),
            "SAGA_MAIL_FROM": MAIL_FROM,
        }
        w = World(stack, mail, inventory, counter, env, tmp_path)
        try:
            yield w
        finally:
            mail.release()
            stop(w.procs)
    inventory.dispose()


def order(sku: str) -> dict[str, object]:
    return {
        "steps": [
            {"id": "reserve", "action": "inventory.reserve", "args": {"sku": sku, "quantity": 2}},
            {
                "id": "charge",
                "action": "payments.charge",
                "args": {
                    "amount": 2500,
                    "currency": "eur",
                    "customer_email": "ana@example.com",
                    "payment_method": "pm_card_visa",
                    "description": "2 mugs",
                },
            },
            {
                "id": "confirm",
                "action": "notify.email",
                "args": {"to": "ana@example.com", "subject": "Your order"},
            },
        ]
    }


async def kill_after_the_server_took_the_email(world: World, sid: str, sku: str) -> int:
    """Run the order until the SMTP server has stored the email and the worker waits for
    its reply; SIGKILL that worker and start another. Returns the killed worker's pid."""
    world.mail.hold()
    first = world.worker()
    await start_saga(world.stack.client, order(sku), saga_id=sid, task_queue=world.queue)
    await eventually(lambda: world.mail_of(sid), timeout=120)
    first.kill()
    assert first.wait(timeout=10) == -9
    world.mail.release()
    world.worker()
    return first.pid


async def settled(world: World, sid: str) -> SagaResult:
    """The saga's state once it waits for an operator or has ended."""

    async def check() -> SagaResult | None:
        state = await saga_state(world.stack.client, sid)
        return state if state.status is SagaStatus.NEEDS_ATTENTION or state.status.final else None

    result: SagaResult = await eventually(check, timeout=120, interval=0.2)
    return result


@pytest.mark.parametrize("decision", ["resolve", "retry", "cancel"])
async def test_a_killed_send_is_parked_not_repeated_and_the_operator_decides(
    world: World, decision: str
) -> None:
    sid = unique("parked")
    sku = world.product(5)
    killed = await kill_after_the_server_took_the_email(world, sid, sku)
    parked = await settled(world, sid)

    # The retry found an attempt that may have sent and did not send again.
    assert len(world.mail_of(sid)) == 1, [m["Message-ID"] for m in world.mail_of(sid)]
    assert parked.status is SagaStatus.NEEDS_ATTENTION, parked
    reserve, charge, confirm = parked.steps
    assert (reserve.status, charge.status) == (StepStatus.SUCCEEDED, StepStatus.SUCCEEDED)
    assert confirm.status is StepStatus.UNCERTAIN, confirm
    key = idempotency_key(sid, "confirm")
    mid = message_id(key, MAIL_FROM)
    assert world.mail_of(sid)[0]["Message-ID"] == mid
    evidence = confirm.evidence or {}
    assert evidence["attempt"] == 1
    assert evidence["worker"].startswith(f"{killed}@"), evidence
    assert evidence["message_id"] == mid
    assert evidence["smtp_server"] == f"127.0.0.1:{world.mail.port}"
    assert "no outcome recorded" in evidence["ended"], evidence
    assert evidence["started_at"]
    row = world.stack.ledger.step(key)
    assert row is not None and row.delivering_attempt == 1 and row.status == "failed"

    status = await saga(world.stack, "status", sid)
    assert status.returncode == 1, status.stderr
    text = " ".join(status.stdout.split())
    assert "needs attention: step confirm (notify.email) may already have taken effect" in text, (
        text
    )
    for fact in (mid, f"127.0.0.1:{world.mail.port}", f"{killed}@", "attempt 1"):
        assert fact in text, (fact, text)
    for command in (
        f"saga resolve {sid} confirm",
        f"saga retry {sid} confirm",
        f"saga cancel {sid}",
    ):
        assert command in text, (command, text)

    [intent] = await world.intents(sid)
    if decision == "resolve":
        done = await saga(world.stack, "resolve", sid, "confirm", "--note", "Ana has the email")
        assert done.returncode == 0, done.stderr
        final = await wait_saga(world.stack.client, sid)
        assert final.status is SagaStatus.COMPLETED, final
        assert final.steps[2].status is StepStatus.SUCCEEDED
        assert final.steps[2].operator_note == "Ana has the email"
        assert final.steps[2].external_id == mid
        assert len(world.mail_of(sid)) == 1
    elif decision == "retry":
        done = await saga(world.stack, "retry", sid, "confirm")
        assert done.returncode == 0, done.stderr
        final = await wait_saga(world.stack.client, sid)
        assert final.status is SagaStatus.COMPLETED, final
        assert final.steps[2].status is StepStatus.SUCCEEDED
        sent = world.mail_of(sid)
        assert len(sent) == 2 and {m["Message-ID"] for m in sent} == {mid}
    else:
        done = await saga(world.stack, "cancel", sid, "--wait")
        final = await wait_saga(world.stack.client, sid)
        assert final.status is SagaStatus.CANCELLED, (final, done.stdout, done.stderr)
        assert final.steps[2].status is StepStatus.UNCERTAIN  # it may still have arrived
        assert len(world.mail_of(sid)) == 1
    refunds = await world.refunds(intent.id)
    [reservation] = reservations_of(world.inventory, sid)
    if decision == "cancel":
        assert [r.amount for r in refunds] == [2500]
        assert reservation.status == ReservationStatus.RELEASED
        assert stock_of(world.inventory, sku) == 5
    else:
        assert refunds == []
        assert reservation.status == ReservationStatus.RESERVED
        assert stock_of(world.inventory, sku) == 3
    assert [pi.id for pi in await world.intents(sid)] == [intent.id]
