"""The inventory system, and its action `inventory.reserve`: hold stock of a product in
the inventory database.

This module is the system's home: the action's models, the database helpers the demo
and the tests use, the forward action, the reconciliation reader, dev seeding, and
`build()`, which lists every action of the system. Beside it, only for size: the SQL
schema (`activities/_inventory_schema.py`) and the read-only look-ups
`inventory.product` and `inventory.search` (`activities/inventory_lookups.py`). Its undo
(putting the stock back) is in `compensations/inventory.py`.

Stock lives in SQL (SQLite by default, PostgreSQL by URL). A reservation is one row,
unique per step idempotency key, written in the same transaction as the stock
decrement; the decrement is conditional (``stock >= quantity``), so two sagas racing
for the last unit cannot both get it.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, cast

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import Engine, Table, create_engine, inspect, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities._inventory_schema import (
    SKU_PATTERN,
    InventoryBase,
    Product,
    Reservation,
    ReservationStatus,
)
from activities.inventory_lookups import InventoryLookups
from saga import (
    Effect,
    Seed,
    Settings,
    StepOptions,
    StepResult,
    SystemUnavailable,
    catalog,
    compensable,
    current_step,
)
from saga import make_engine as sql_engine

__all__ = [
    "SAMPLE_PRODUCTS",
    "SKU_PATTERN",
    "InventoryActivities",
    "InventoryLookups",
    "Product",
    "ProductInfo",
    "Reservation",
    "ReservationInfo",
    "ReservationStatus",
    "ReserveInput",
    "ReserveResult",
    "build",
    "create_schema",
    "make_engine",
    "reservations_of",
    "seed_products",
    "stock_of",
]


# -- the action's models ---------------------------------------------------------------
class ReserveInput(BaseModel):
    """Reserve stock of one product for the saga."""

    model_config = ConfigDict(extra="forbid")
    sku: str = Field(pattern=SKU_PATTERN, description="Product SKU, e.g. `mug-blue`.")
    quantity: int = Field(gt=0, le=1000, description="How many units to reserve.")


class ReserveResult(StepResult):
    external_id: str = Field(description="Reservation id in the inventory database.")
    sku: str
    name: str
    quantity: int
    unit_price_cents: int
    currency: str


class ProductInfo(BaseModel):
    """A product as the demo and the tests see it."""

    model_config = ConfigDict(extra="forbid")
    sku: str = Field(pattern=SKU_PATTERN)
    name: str
    price_cents: int = Field(ge=0)
    currency: str = Field("EUR", pattern=r"^[A-Z]{3}$")
    stock: int = Field(ge=0)


class ReservationInfo(BaseModel):
    """One reservation row, read back for tests and the demo."""

    id: str
    idempotency_key: str
    saga_id: str
    sku: str
    quantity: int
    status: ReservationStatus


SAMPLE_PRODUCTS = (
    ProductInfo(sku="mug-blue", name="Blue mug", price_cents=1250, stock=10),
    ProductInfo(sku="mug-red", name="Red mug", price_cents=1250, stock=5),
    ProductInfo(sku="tshirt-m", name="T-shirt, size M", price_cents=2200, stock=3),
    ProductInfo(sku="poster-a2", name="Poster A2", price_cents=900, stock=1),
)


# -- the database ----------------------------------------------------------------------
def make_engine(url: str) -> Engine:
    """An engine for the inventory URL (SQLite in WAL mode, or PostgreSQL)."""
    return sql_engine(url)


def create_schema(engine: Engine) -> None:
    """Create the products and reservations tables if they do not exist."""
    InventoryBase.metadata.create_all(engine)


def _insert(engine: Engine) -> Any:
    return postgresql.insert if engine.dialect.name == "postgresql" else sqlite.insert


def seed_products(engine: Engine, products: Iterable[ProductInfo] = SAMPLE_PRODUCTS) -> int:
    """Add the products that do not exist yet (existing stock is left alone).

    Returns how many were added; running it twice adds nothing the second time.
    """
    rows = [p.model_dump() for p in products]
    if not rows:
        return 0
    with engine.begin() as conn:
        inserted = conn.execute(
            _insert(engine)(Product)
            .values(rows)
            .on_conflict_do_nothing(index_elements=[Product.sku])
            .returning(Product.sku)
        ).all()
    return len(inserted)


def stock_of(engine: Engine, sku: str) -> int | None:
    """Units of ``sku`` in stock, or None for an unknown product."""
    with engine.connect() as conn:
        stock = conn.execute(select(Product.stock).where(Product.sku == sku)).scalar()
    return None if stock is None else int(stock)


def reservations_of(engine: Engine, saga_id: str) -> list[ReservationInfo]:
    """Every reservation a saga made, oldest first, whatever its status."""
    with engine.connect() as conn:
        rows = conn.execute(
            select(Reservation)
            .where(Reservation.saga_id == saga_id)
            .order_by(Reservation.created_at, Reservation.id)
        ).all()
    return [ReservationInfo.model_validate(dict(r._mapping)) for r in rows]


def reservation_id(idempotency_key: str) -> str:
    """The reservation id, derived from the step's key: the same on every attempt."""
    return "res_" + hashlib.sha256(idempotency_key.encode()).hexdigest()[:24]


# -- the action ------------------------------------------------------------------------
class InventoryActivities:
    """Forward activities of the inventory system, bound to its database engine."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    async def aclose(self) -> None:
        """Close the database connections (the worker calls it when it stops)."""
        await asyncio.to_thread(self.engine.dispose)

    @compensable(options=StepOptions(summary="{quantity} x {sku}"))
    @activity.defn
    async def reserve_inventory(self, inp: ReserveInput) -> ReserveResult:
        """Reserve `quantity` units of product `sku` (undone by releasing them)."""
        step = current_step()
        result = await asyncio.to_thread(
            reserve, self.engine, step.idempotency_key, step.saga_id, inp
        )
        await step.record_external_id(result.external_id)
        return result


def reserve(engine: Engine, idempotency_key: str, saga_id: str, inp: ReserveInput) -> ReserveResult:
    """Reserve stock for one step, in one transaction; adopt the step's earlier reservation.

    The reservation row is written first (``ON CONFLICT DO NOTHING`` on the idempotency
    key), so a retry whose first attempt took effect finds it and returns it, and the
    transaction holds the write lock from its first statement (SQLite) or waits on the
    concurrent attempt's row (PostgreSQL). Then the conditional decrement: no row
    updated means unknown product or not enough stock, and the raise rolls back both.
    """
    with engine.begin() as conn:
        product = conn.execute(
            select(Product.name, Product.price_cents, Product.currency).where(
                Product.sku == inp.sku
            )
        ).first()
        if product is None:
            raise ApplicationError(
                f"unknown product {inp.sku!r}", type="UnknownProduct", non_retryable=True
            )
        new_id = conn.execute(
            _insert(engine)(Reservation)
            .values(
                id=reservation_id(idempotency_key),
                idempotency_key=idempotency_key,
                saga_id=saga_id,
                sku=inp.sku,
                quantity=inp.quantity,
                unit_price_cents=product.price_cents,
                currency=product.currency,
                status=ReservationStatus.RESERVED.value,
            )
            .on_conflict_do_nothing(index_elements=[Reservation.idempotency_key])
            .returning(Reservation.id)
        ).scalar()
        if new_id is None:
            return _adopt(conn, idempotency_key, product.name)
        taken = conn.execute(
            update(Product)
            .where(Product.sku == inp.sku, Product.stock >= inp.quantity)
            .values(stock=Product.stock - inp.quantity)
        ).rowcount
        if taken != 1:
            left = conn.execute(select(Product.stock).where(Product.sku == inp.sku)).scalar()
            raise ApplicationError(
                f"out of stock: {inp.sku!r} has {left} left, {inp.quantity} requested",
                type="OutOfStock",
                non_retryable=True,
            )
        return ReserveResult(
            external_id=str(new_id),
            sku=inp.sku,
            name=product.name,
            quantity=inp.quantity,
            unit_price_cents=product.price_cents,
            currency=product.currency,
        )


def _adopt(conn: Any, idempotency_key: str, name: str) -> ReserveResult:
    row = conn.execute(
        select(Reservation).where(Reservation.idempotency_key == idempotency_key)
    ).one()
    if row.status != ReservationStatus.RESERVED.value:
        raise ApplicationError(
            f"reservation {row.id} of this step was already released",
            type="AlreadyReleased",
            non_retryable=True,
        )
    activity.logger.info("adopting reservation %s of %s", row.id, idempotency_key)
    return ReserveResult(
        external_id=row.id,
        sku=row.sku,
        name=name,
        quantity=row.quantity,
        unit_price_cents=row.unit_price_cents,
        currency=row.currency,
    )


def build(settings: Settings) -> list[Callable[..., Any]]:
    """Every action of the inventory system: `inventory.reserve` and the look-ups
    `inventory.product` and `inventory.search`, on the database `settings` names (an
    engine of its own, shared by the three)."""
    engine = make_engine(settings.inventory_db_url())
    create_schema(engine)
    lookups = InventoryLookups(engine)
    return [
        InventoryActivities(engine).reserve_inventory,
        lookups.look_up_product,
        lookups.search_products,
    ]


# -- what reconciliation reads, and dev seeding -----------------------------------------
class InventoryReader:
    """The reservations of the inventory database, for `saga reconcile` (read-only)."""

    system = "inventory"

    def __init__(self, settings: Settings) -> None:
        self._url = settings.inventory_db_url()
        try:
            self.where = make_url(self._url).render_as_string(hide_password=True)
        except Exception:
            self.where = "(unparsable URL)"

    async def effects(self, saga_prefix: str) -> list[Effect]:
        return await asyncio.to_thread(self._read)

    def _read(self) -> list[Effect]:
        if self._url.startswith("sqlite") and not Path(self._url.split("///", 1)[-1]).exists():
            raise SystemUnavailable("no inventory database")
        engine = create_engine(self._url)
        try:
            rows: list[Any] = []
            if inspect(engine).has_table(Reservation.__tablename__):
                with engine.connect() as conn:
                    rows = list(conn.execute(select(cast(Table, Reservation.__table__))).all())
        finally:
            engine.dispose()
        return [
            Effect(
                self.system,
                row.idempotency_key,
                row.id,
                row.status == ReservationStatus.RESERVED.value,
                f"{row.id} {row.status} ({row.quantity} x {row.sku})",
            )
            for row in rows
        ]

    async def lookup(self, external_id: str) -> Effect | None:
        return None  # the listing holds every reservation

    async def aclose(self) -> None:
        return None


def prepare(settings: Settings) -> None:
    """Create the inventory schema and add the sample products (idempotent)."""
    engine = make_engine(settings.inventory_db_url())
    try:
        create_schema(engine)
        seed_products(engine)
    finally:
        engine.dispose()


def show_stock(settings: Settings, sku: str) -> int | None:
    """Units of ``sku`` in stock (what the demo shows after each saga)."""
    engine = make_engine(settings.inventory_db_url())
    try:
        return stock_of(engine, sku)
    finally:
        engine.dispose()


catalog.add_reader("inventory.reserve", InventoryReader)
catalog.add_seed("inventory", Seed(prepare=prepare, show=show_stock))
