"""Undo `inventory.reserve`: put the reserved stock back, once.

The inventory system itself (schema, models, database helpers) lives in
`activities/inventory.py`; this module holds only the undo and declares it with
``@compensates``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, Field
from sqlalchemy import Engine, update
from temporalio import activity

from activities.inventory import (
    InventoryActivities,
    Product,
    Reservation,
    ReservationStatus,
    ReserveInput,
    ReserveResult,
    create_schema,
    make_engine,
)
from saga import Settings, compensates, current_step


class ReleaseResult(BaseModel):
    released: bool = Field(description="False when there was nothing (left) to release.")
    external_id: str | None = None


class InventoryCompensations:
    """Compensations of the inventory system, bound to its database engine."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    async def aclose(self) -> None:
        """Close the database connections (the worker calls it when it stops)."""
        await asyncio.to_thread(self.engine.dispose)

    @compensates(InventoryActivities.reserve_inventory)
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
            .values(status=ReservationStatus.RELEASED.value, released_at=datetime.now(UTC))
            .returning(Reservation.id, Reservation.sku, Reservation.quantity)
        ).first()
        if row is None:
            return None
        conn.execute(
            update(Product).where(Product.sku == row.sku).values(stock=Product.stock + row.quantity)
        )
        return str(row.id)


def build(settings: Settings) -> list[Callable[..., Any]]:
    """The release of `inventory.reserve`, on the database `settings` names."""
    engine = make_engine(settings.inventory_db_url())
    create_schema(engine)
    return [InventoryCompensations(engine).release_inventory]
