"""inventory.reserve / release on real SQLite and PostgreSQL, through the real saga workflow."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from temporalio.client import Client
from temporalio.exceptions import ApplicationError

from activities.inventory import (
    SAMPLE_PRODUCTS,
    ReservationStatus,
    ReserveInput,
    create_schema,
    make_engine,
    reservations_of,
    reserve,
    seed_products,
    stock_of,
)
from compensations.inventory import release_reservation
from saga import CompensationStatus, SagaStatus, StepStatus, idempotency_key
from saga._settings import Settings
from saga.dev._devstack import prepare_inventory
from tests.activities import Systems, systems_worker

RESERVED, RELEASED = ReservationStatus.RESERVED, ReservationStatus.RELEASED


def _url(backend: str, pg_url: str, tmp: pytest.TempPathFactory) -> str:
    if backend == "postgresql":
        return pg_url
    return f"sqlite:///{tmp.mktemp('inventory') / 'inventory.db'}"


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
async def systems(
    request: pytest.FixtureRequest,
    client: Client,
    pg_url: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[Systems]:
    """A worker whose inventory lives in each backend (each test runs once per backend)."""
    url = _url(request.param, pg_url, tmp_path_factory)
    async with systems_worker(client, tmp_path_factory.mktemp("saga"), inventory_url=url) as s:
        yield s


def reserve_step(step_id: str, sku: str, quantity: int = 1) -> dict[str, object]:
    args = {"sku": sku, "quantity": quantity}
    return {"id": step_id, "action": "inventory.reserve", "args": args}


async def test_reserve_then_release_puts_the_stock_back(systems: Systems) -> None:
    sku = systems.product(stock=10)
    done = await systems.run([reserve_step("reserve", sku, 3)])
    assert done.status == SagaStatus.COMPLETED, done
    assert stock_of(systems.engine, sku) == 7
    [held] = reservations_of(systems.engine, done.saga_id)
    assert (held.sku, held.quantity, held.status) == (sku, 3, RESERVED)
    assert done.steps[0].external_id == held.id
    assert done.steps[0].result is not None
    assert done.steps[0].result["unit_price_cents"] == 1250

    # A later step fails: the reservation is released and the stock is whole again.
    undone = await systems.run(
        [
            reserve_step("reserve", sku, 4),
            reserve_step("too-many", sku, 1000),
        ]
    )
    assert undone.status == SagaStatus.COMPENSATED, undone
    assert stock_of(systems.engine, sku) == 7
    [released] = reservations_of(systems.engine, undone.saga_id)
    assert (released.quantity, released.status) == (4, RELEASED)


async def test_out_of_stock_compensates_earlier_reservations(systems: Systems) -> None:
    mugs, shirts, posters = systems.product(10), systems.product(3), systems.product(1)
    result = await systems.run(
        [
            reserve_step("mugs", mugs, 2),
            reserve_step("shirts", shirts, 3),
            reserve_step("posters", posters, 2),
        ]
    )
    assert result.status == SagaStatus.COMPENSATED, result
    assert result.error is not None and "OutOfStock" in result.error
    assert f"{posters!r} has 1 left, 2 requested" in result.error
    by_id = {s.id: s for s in result.steps}
    assert by_id["posters"].status == StepStatus.FAILED
    assert all(s.compensation == CompensationStatus.COMPENSATED for s in result.steps)
    assert [stock_of(systems.engine, sku) for sku in (mugs, shirts, posters)] == [10, 3, 1]
    rows = reservations_of(systems.engine, result.saga_id)
    assert sorted((r.sku, r.status) for r in rows) == sorted([(mugs, RELEASED), (shirts, RELEASED)])
    # The failed step's attempt ran once: a business failure is not retried.
    posters_step = systems.ledger.step(idempotency_key(result.saga_id, "posters"))
    assert posters_step is not None and posters_step.attempts == 1


async def test_unknown_product_is_a_business_failure(systems: Systems) -> None:
    sku = systems.product(5)
    result = await systems.run([reserve_step("ok", sku), reserve_step("bad", "no-such-sku")])
    assert result.status == SagaStatus.COMPENSATED, result
    assert result.error is not None and "UnknownProduct" in result.error
    assert "'no-such-sku'" in result.error
    assert stock_of(systems.engine, sku) == 5
    assert [r.status for r in reservations_of(systems.engine, result.saga_id)] == [RELEASED]


async def test_release_is_a_noop_when_nothing_was_reserved(systems: Systems) -> None:
    sku = systems.product(0)
    result = await systems.run([reserve_step("first", sku, 1)])
    # The step failed before reserving; its compensation (registered first) ran anyway.
    assert result.status == SagaStatus.COMPENSATED, result
    assert result.steps[0].compensation == CompensationStatus.COMPENSATED
    assert stock_of(systems.engine, sku) == 0
    assert reservations_of(systems.engine, result.saga_id) == []
    # And directly: unknown key, then a second release of a released reservation.
    assert release_reservation(systems.engine, "no-saga/no-step") is None
    other = systems.product(2)
    reserve(systems.engine, "direct/one", "direct", ReserveInput(sku=other, quantity=2))
    assert stock_of(systems.engine, other) == 0
    assert release_reservation(systems.engine, "direct/one") is not None
    assert release_reservation(systems.engine, "direct/one") is None
    assert stock_of(systems.engine, other) == 2


async def test_race_for_the_last_unit_has_one_winner(systems: Systems) -> None:
    plenty, last = systems.product(10), systems.product(1)
    steps = [reserve_step("plenty", plenty), reserve_step("last", last)]
    sids = await asyncio.gather(systems.start(steps), systems.start(steps))
    results = await asyncio.gather(*(systems.wait(sid) for sid in sids))
    statuses = sorted(r.status.value for r in results)
    assert statuses == ["compensated", "completed"], results
    [loser] = [r for r in results if r.status == SagaStatus.COMPENSATED]
    assert loser.error is not None and "OutOfStock" in loser.error
    assert stock_of(systems.engine, last) == 0
    assert stock_of(systems.engine, plenty) == 9
    rows = [r for sid in sids for r in reservations_of(systems.engine, sid)]
    held = [r for r in rows if r.status == RESERVED]
    assert sorted(r.sku for r in held) == sorted([plenty, last])
    assert len({r.saga_id for r in held}) == 1
    assert [r.sku for r in rows if r.status == RELEASED] == [plenty]


async def test_many_concurrent_reservations_never_oversell(systems: Systems) -> None:
    """Twenty threads, five units: five reservations, stock 0, never negative."""
    sku = systems.product(5)
    start = threading.Barrier(20)

    def attempt(n: int) -> str:
        start.wait()
        try:
            reserve(systems.engine, f"crowd/{sku}-{n}", "crowd", ReserveInput(sku=sku, quantity=1))
        except ApplicationError as exc:
            return exc.type or "?"
        return "won"

    with ThreadPoolExecutor(20) as pool:
        outcomes = await asyncio.to_thread(lambda: list(pool.map(attempt, range(20))))
    assert sorted(outcomes) == ["OutOfStock"] * 15 + ["won"] * 5
    assert stock_of(systems.engine, sku) == 0
    rows = [r for r in reservations_of(systems.engine, "crowd") if r.sku == sku]
    assert len(rows) == 5


async def test_lost_response_is_adopted_on_retry(
    systems: Systems, client: Client, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """The first attempt reserves, then its response is lost; the retry adopts it."""
    url = str(systems.engine.url.render_as_string(hide_password=False))
    async with systems_worker(
        client, tmp_path_factory.mktemp("faults"), inventory_url=url, faults="inventory.reserve=1"
    ) as faulty:
        sku = faulty.product(4)
        result = await faulty.run([reserve_step("reserve", sku, 3)])
    assert result.status == SagaStatus.COMPLETED, result
    step = faulty.ledger.step(idempotency_key(result.saga_id, "reserve"))
    assert step is not None and step.attempts == 2  # the first attempt really ran
    [held] = reservations_of(systems.engine, result.saga_id)
    assert (held.quantity, held.status, held.id) == (3, RESERVED, result.steps[0].external_id)
    assert stock_of(systems.engine, sku) == 1  # decremented once


async def test_compensation_without_a_result_finds_the_reservation(
    systems: Systems, client: Client, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Every response lost: the step fails with no result, yet the release undoes it."""
    url = str(systems.engine.url.render_as_string(hide_password=False))
    async with systems_worker(
        client, tmp_path_factory.mktemp("faults"), inventory_url=url, faults="inventory.reserve=9"
    ) as faulty:
        sku = faulty.product(4)
        result = await faulty.run([reserve_step("reserve", sku, 3)])
    assert result.status == SagaStatus.COMPENSATED, result
    assert result.steps[0].result is None
    assert result.steps[0].compensation == CompensationStatus.COMPENSATED
    [row] = reservations_of(systems.engine, result.saga_id)
    assert row.status == RELEASED
    assert stock_of(systems.engine, sku) == 4


def test_schema_and_seed_are_idempotent(tmp_path_factory: pytest.TempPathFactory) -> None:
    data = tmp_path_factory.mktemp("seed")
    settings = Settings(data_dir=data)
    prepare_inventory(settings)
    prepare_inventory(settings)
    engine = make_engine(settings.inventory_db_url())
    try:
        create_schema(engine)
        assert seed_products(engine) == 0
        for product in SAMPLE_PRODUCTS:
            assert stock_of(engine, product.sku) == product.stock
        assert stock_of(engine, "mug-blue") == 10
    finally:
        engine.dispose()


async def test_an_action_whose_system_is_not_configured_is_refused_before_any_step(
    client: Client, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Seen before: tickets.create with no Redmine failed, its compensation failed the same
    way, and the saga sat in needs_attention holding the stock it had reserved."""
    url = f"sqlite:///{tmp_path_factory.mktemp('inventory') / 'inventory.db'}"
    data = tmp_path_factory.mktemp("saga")
    async with systems_worker(client, data, inventory_url=url, with_tickets=True) as systems:
        sku = systems.product(stock=5)
        ticket = {"id": "ticket", "action": "tickets.create", "args": {"subject": "outage"}}
        done = await systems.run([reserve_step("reserve", sku, 2), ticket])
        assert done.status == SagaStatus.REJECTED, done
        assert done.problems == [
            "step 'ticket': action tickets.create is not available: no worker of this saga "
            "runs it (its system is not configured on the workers)"
        ]
        assert stock_of(systems.engine, sku) == 5
        assert systems.ledger.steps(done.saga_id) == []
        # The same worker still runs the systems it has.
        ok = await systems.run([reserve_step("reserve", sku, 2)])
        assert ok.status == SagaStatus.COMPLETED, ok
        assert stock_of(systems.engine, sku) == 3
