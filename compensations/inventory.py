"""Undo `inventory.reserve`: put the reserved stock back, once.

This module also holds what both directions of the inventory system share: its SQL
schema and the action's input and output models. The forward module
(`activities/inventory.py`) imports them from here, because its ``@compensated_by``
needs :class:`InventoryCompensations` at import time.
"""

from __future__ import annotations

import asyncio
import enum
from datetime import UTC, datetime

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import CheckConstraint, DateTime, Engine, Integer, String, update
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from temporalio import activity

from saga import current_step

SKU_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,63}$"


def _now() -> datetime:
    return datetime.now(UTC)


# -- schema --------------------------------------------------------------------------
class InventoryBase(DeclarativeBase):
    """The inventory database's own metadata (separate from the ledger's)."""


class Product(InventoryBase):
    __tablename__ = "products"
    __table_args__ = (CheckConstraint("stock >= 0", name="products_stock_not_negative"),)

    sku: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    price_cents: Mapped[int] = mapped_column(Integer)
    currency: Mapped[str] = mapped_column(String(3))
    stock: Mapped[int] = mapped_column(Integer)


class ReservationStatus(enum.StrEnum):
    RESERVED = "reserved"
    RELEASED = "released"


class Reservation(InventoryBase):
    __tablename__ = "reservations"
    __table_args__ = (CheckConstraint("quantity > 0", name="reservations_quantity_positive"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    """The external id the saga records for the step."""
    idempotency_key: Mapped[str] = mapped_column(String(300), unique=True)
    saga_id: Mapped[str] = mapped_column(String(200), index=True)
    sku: Mapped[str] = mapped_column(String(64), index=True)
    quantity: Mapped[int] = mapped_column(Integer)
    unit_price_cents: Mapped[int] = mapped_column(Integer)
    currency: Mapped[str] = mapped_column(String(3))
    status: Mapped[str] = mapped_column(String(10), default=ReservationStatus.RESERVED.value)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)
    released_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=None)


# -- the action's models ---------------------------------------------------------------
class ReserveInput(BaseModel):
    """Reserve stock of one product for the saga."""

    model_config = ConfigDict(extra="forbid")
    sku: str = Field(pattern=SKU_PATTERN, description="Product SKU, e.g. `mug-blue`.")
    quantity: int = Field(gt=0, le=1000, description="How many units to reserve.")


class ReserveResult(BaseModel):
    external_id: str = Field(description="Reservation id in the inventory database.")
    sku: str
    name: str
    quantity: int
    unit_price_cents: int
    currency: str


class ReleaseResult(BaseModel):
    released: bool = Field(description="False when there was nothing (left) to release.")
    external_id: str | None = None


# -- the compensation ------------------------------------------------------------------
class InventoryCompensations:
    """Compensations of the inventory system, bound to its database engine."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    @activity.defn
    async def release_inventory(
        self, inp: ReserveInput, result: ReserveResult | None
    ) -> ReleaseResult:
        """Put the step's reserved stock back; a no-op when nothing is reserved.

        The reservation is found by the step's idempotency key, so this works when the
        forward step's result was lost (``result`` is None) as well.
        """
        key = current_step().idempotency_key
        released = await asyncio.to_thread(release_reservation, self.engine, key)
        if released is None:
            activity.logger.info("release %s: nothing reserved, nothing to undo", key)
        else:
            activity.logger.info("release %s: put back %s x %s", key, inp.quantity, inp.sku)
        return ReleaseResult(released=released is not None, external_id=released)


def release_reservation(engine: Engine, idempotency_key: str) -> str | None:
    """Mark the key's reservation released and restock it, in one transaction.

    Returns the reservation id, or None when there is no reservation still held. The
    status change is conditional (``WHERE status = 'reserved'``), so a second release,
    even a concurrent one, finds nothing and restocks nothing.
    """
    with engine.begin() as conn:
        row = conn.execute(
            update(Reservation)
            .where(
                Reservation.idempotency_key == idempotency_key,
                Reservation.status == ReservationStatus.RESERVED.value,
            )
            .values(status=ReservationStatus.RELEASED.value, released_at=_now())
            .returning(Reservation.id, Reservation.sku, Reservation.quantity)
        ).first()
        if row is None:
            return None
        conn.execute(
            update(Product).where(Product.sku == row.sku).values(stock=Product.stock + row.quantity)
        )
        return str(row.id)
