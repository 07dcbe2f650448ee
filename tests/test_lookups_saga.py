"""Look-ups as steps between writes, on every real system at once (SQL inventory,
localstripe, Redmine) and the production worker (`load_activities`): a saga that
completes, and one whose last write fails, where the writes are undone, the look-ups are
not (there is nothing to undo), and `reconcile` finds nothing to judge in them."""

from __future__ import annotations

import io
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from rich.console import Console
from temporalio.client import Client

from activities.inventory import InventoryReader, ProductInfo, seed_products, stock_of
from saga import (
    CompensationStatus,
    Ledger,
    Policy,
    SagaInput,
    SagaMode,
    SagaResult,
    SagaStatus,
    StepStatus,
    catalog,
    create_worker,
    free_port,
    load_activities,
    start_saga,
    wait_saga,
)
from saga._reconcile import reconcile, render
from saga._worker import close_activities
from saga.cli._render import masked
from saga.cli._render import render as render_saga
from saga.dev._localstripe import LocalStripe
from tests.bench.chaos_soak import DECLINED_CARD, GOOD_CARD, World, world
from tests.servers.redmine import RedmineServer


@dataclass
class Shop:
    world: World
    client: Client
    ledger: Ledger

    async def run(self, sid: str, steps: list[dict[str, Any]]) -> SagaResult:
        s = self.world.settings
        await start_saga(
            self.client, {"steps": steps}, saga_id=sid, task_queue=s.task_queue, settings=s
        )
        return await wait_saga(self.client, sid)


@pytest.fixture(scope="module")
async def shop(
    client: Client, redmine: RedmineServer, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Shop]:
    data = tmp_path_factory.mktemp("lookup-saga")
    server = LocalStripe(free_port(), log_file=data / "localstripe.log")
    await server.start()
    try:
        async with world(
            temporal_address=client.service_client.config.target_host,
            stripe_base=server.url,
            redmine_url=redmine.url,
            redmine_key=redmine.api_key,
            data_dir=data,
            ledger_url=f"sqlite:///{data / 'ledger.db'}",
            inventory_url=f"sqlite:///{data / 'inventory.db'}",
        ) as w:
            ledger = Ledger(w.settings.ledger_url())
            acts = load_activities(w.settings)
            try:
                async with create_worker(client, w.settings, ledger, activities=acts):
                    yield Shop(w, client, ledger)
            finally:
                await close_activities(acts)
                ledger.close()
    finally:
        server.stop()


def order(sku: str, tag: str, email: str, card: str) -> list[dict[str, Any]]:
    """Writes with look-ups between them: each look-up sees what the write before did."""
    return [
        {"id": "reserve", "action": "inventory.reserve", "args": {"sku": sku, "quantity": 2}},
        {"id": "stock", "action": "inventory.product", "args": {"sku": sku}},
        {"id": "ticket", "action": "tickets.create", "args": {"subject": f"Ship {tag}"}},
        {"id": "find", "action": "tickets.find_open", "args": {"subject": f"ship {tag}"}},
        {"id": "who", "action": "payments.customer", "args": {"email": email}},
        {"id": "charge", "action": "payments.charge",
         "args": {"amount": 2500, "currency": "eur", "customer_email": email,
                  "card_number": card}},
    ]  # fmt: skip


LOOKUPS = ("stock", "find", "who")


async def test_lookups_between_writes_complete_and_are_never_compensated(shop: Shop) -> None:
    prefix = f"lookup-{uuid.uuid4().hex[:8]}-"
    sku = shop.world.product(stock=10)
    tag = uuid.uuid4().hex[:8]
    email = f"{tag}@example.com"

    done = await shop.run(f"{prefix}done", order(sku, tag, email, GOOD_CARD))
    assert done.status == SagaStatus.COMPLETED, done
    steps = {s.id: s for s in done.steps}
    assert steps["stock"].result is not None and steps["stock"].result["stock"] == 8
    ticket_id = int(str(steps["ticket"].external_id))
    assert steps["find"].result is not None
    assert [t["id"] for t in steps["find"].result["tickets"]] == [ticket_id]
    assert steps["who"].result == {
        "found": False,  # the charge below makes the customer, after the look-up
        "customers": [],
        "more": False,
    }
    for sid in LOOKUPS:
        assert steps[sid].external_id is None and steps[sid].compensation == "none"

    # The last write fails: the writes are undone in reverse, the look-ups are not.
    undone = await shop.run(f"{prefix}undone", order(sku, f"{tag}b", email, DECLINED_CARD))
    assert undone.status == SagaStatus.COMPENSATED, undone
    steps = {s.id: s for s in undone.steps}
    assert steps["charge"].status == StepStatus.FAILED
    assert steps["who"].result is not None and steps["who"].result["found"] is True
    for sid in ("reserve", "ticket"):
        assert steps[sid].compensation == CompensationStatus.COMPENSATED, steps[sid]
    for sid in LOOKUPS:
        assert steps[sid].status == StepStatus.SUCCEEDED
        assert steps[sid].compensation == CompensationStatus.NONE, steps[sid]
    rows = {r.step_id: r for r in shop.ledger.steps(undone.saga_id)}
    assert {sid: rows[sid].compensation_status for sid in rows} == {
        "reserve": "compensated",
        "stock": "none",
        "ticket": "compensated",
        "find": "none",
        "who": "none",
        "charge": "compensated",  # declined before any intent: a no-op undo
    }
    # Counted in the systems: the stock is whole, the second ticket closed, one charge.
    assert stock_of(shop.world.inventory, sku) == 8
    issues = await shop.world.tickets(prefix)
    assert {key: [i["closed"] for i in found] for key, found in issues.items()} == {
        f"{prefix}done/ticket": [False],
        f"{prefix}undone/ticket": [True],
    }
    assert list(await shop.world.intents(prefix)) == [f"{prefix}done/charge"]

    # Reconciliation has nothing to find for a look-up, and finds no drift.
    report = await reconcile(shop.world.settings, saga_prefix=prefix)
    assert report.clean, render(report)
    assert report.steps == 12  # six per saga, look-ups included ...
    checks = {c.system: c.steps for c in report.systems}
    judged = {name: checks[name] for name in ("inventory", "payments", "tickets")}
    assert judged == {"inventory": 2, "payments": 2, "tickets": 2}  # ... judged: writes only
    assert sum(checks.values()) == 6, checks

    # Even a system whose reader also claims its look-ups is judged on its writes only.
    catalog.add_reader("inventory.product", InventoryReader)
    try:
        claimed = await reconcile(shop.world.settings, saga_prefix=prefix)
    finally:
        catalog._readers.pop("inventory.product")
    assert claimed.clean, render(claimed)
    assert {c.system: c.steps for c in claimed.systems}["inventory"] == 2

    # `saga status` shows each look-up as a step with nothing to compensate.
    out = io.StringIO()
    Console(file=out, width=200, markup=False, color_system=None).print(render_saga(masked(undone)))
    lines = {line.split("│")[1].strip(): line for line in out.getvalue().splitlines()
             if line.count("│") > 4}  # fmt: skip
    for sid, action in (("stock", "inventory.product"), ("find", "tickets.find_open")):
        cells = [c.strip() for c in lines[sid].split("│")[1:-1]]
        assert cells == [sid, action, "succeeded", "-", "none"], cells


async def test_the_offline_agent_looks_before_it_acts(shop: Shop) -> None:
    """Act mode with the worker's offline model on the real systems: it looks up the stock
    and the customer's saved cards first, takes the alternative the request allows when
    blue mugs run short, charges the saved card; a declined card makes it give up and
    the reservation is released."""
    world, s = shop.world, shop.world.settings
    seed_products(
        world.inventory,
        [
            ProductInfo(sku="mug-blue", name="Blue mug", price_cents=1250, stock=1),
            ProductInfo(sku="mug-red", name="Red mug", price_cents=1300, stock=5),
        ],
    )
    prefix = f"act-{uuid.uuid4().hex[:8]}-"
    email = f"{prefix}ana@example.com"
    # A first order saves a card with the customer (as Stripe does when one is attached).
    saved = await shop.run(
        f"{prefix}first",
        [{"id": "charge", "action": "payments.charge",
          "args": {"amount": 100, "currency": "eur", "customer_email": email,
                   "card_number": GOOD_CARD}}],
    )  # fmt: skip
    assert saved.status == SagaStatus.COMPLETED, saved

    # No SMTP server in this world: the policy leaves email out of what the agent may do.
    policy = Policy(
        allowed_actions=[
            "inventory.product",
            "inventory.reserve",
            "payments.customer",
            "payments.charge",
        ]
    )

    async def act(sid: str, request: str) -> SagaResult:
        inp = SagaInput(request=request, mode=SagaMode.ACT, policy=policy)
        await start_saga(
            shop.client, None, saga_id=sid, task_queue=s.task_queue, input=inp, settings=s
        )
        return await wait_saga(shop.client, sid)

    done = await act(
        f"{prefix}red", f"order 2 blue mugs or red ones for {email} and charge her card"
    )
    assert done.status == SagaStatus.COMPLETED, done
    assert [(look.action, look.args) for look in done.lookups] == [
        ("inventory.product", {"sku": "mug-blue"}),
        ("inventory.product", {"sku": "mug-red"}),
        ("payments.customer", {"email": email}),
    ]
    card = done.lookups[2].result["customers"][0]["cards"][0]["payment_method"]  # type: ignore[index]
    reserve, charge = done.steps[0], done.steps[1]
    assert (reserve.action, reserve.args) == (
        "inventory.reserve",
        {"sku": "mug-red", "quantity": 2},
    )
    assert charge.args["amount"] == 2600 and charge.args["payment_method"] == card
    assert "card_number" not in charge.args
    assert stock_of(world.inventory, "mug-red") == 3 and stock_of(world.inventory, "mug-blue") == 1
    (intent,) = (await world.intents(f"{prefix}red"))[f"{prefix}red/call-2"]
    assert intent.amount == 2600 and intent.payment_method == card

    declined = await act(
        f"{prefix}declined", f"order 1 red mug for {email} and charge card {DECLINED_CARD}"
    )
    assert declined.status == SagaStatus.COMPENSATED, declined
    assert declined.error is not None and "payments.charge failed" in declined.error
    assert stock_of(world.inventory, "mug-red") == 3  # reserved, then released
    assert declined.steps[0].compensation == CompensationStatus.COMPENSATED


async def test_an_act_run_that_cannot_finish_is_undone_in_the_systems(shop: Shop) -> None:
    """The offline agent reserves and charges, then its email cannot be sent (this world
    runs no SMTP server): the run ends, and the charge is refunded in localstripe and the
    stock given back in the inventory, last write first."""
    world, s = shop.world, shop.world.settings
    sku = "tshirt-m"  # a sample product: the offline planner knows its name and price
    seed_products(
        world.inventory, [ProductInfo(sku=sku, name="T-shirt", price_cents=2200, stock=4)]
    )
    prefix = f"act-undo-{uuid.uuid4().hex[:8]}-"
    sid = f"{prefix}saga"
    request = f"order 2 m tshirts for {prefix}bo@example.com and charge his card"
    inp = SagaInput(request=request, mode=SagaMode.ACT)
    await start_saga(shop.client, None, saga_id=sid, task_queue=s.task_queue, input=inp, settings=s)
    result = await wait_saga(shop.client, sid)
    assert result.status == SagaStatus.COMPENSATED, result
    assert [s.action for s in result.steps] == [
        "inventory.reserve",
        "payments.charge",
        "notify.email",
    ]
    assert result.error is not None and "call-3 (notify.email)" in result.error
    assert stock_of(world.inventory, sku) == 4
    (intent,) = (await world.intents(prefix))[f"{sid}/call-2"]
    assert intent.amount == 4400
    assert (await world.refunded())[intent.id] == 4400
    for step in result.steps[:2]:
        assert step.compensation == CompensationStatus.COMPENSATED, step
