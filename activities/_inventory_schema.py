"""The inventory database's schema: products and reservations (SQLite or PostgreSQL).

Part of the inventory system (`activities/inventory.py` is its home); kept apart only
for size, so that its look-ups (`activities/inventory_lookups.py`) and its action share it.
"""

from __future__ import annotations

import enum
from datetime import UTC, datetime

from sqlalchemy import CheckConstraint, DateTime, Integer, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

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
