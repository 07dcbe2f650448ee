"""Undo `shipping.book`: cancel the step's booking (a no-op when there is none)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel
from sqlalchemy import Engine, update
from temporalio import activity

from saga import Settings, compensates, current_step
from tests.recipe.activities.shipping import (
    ShipInput,
    ShippingActivities,
    ShipResult,
    Status,
    make_engine,
    shipments,
)


class CancelResult(BaseModel):
    cancelled: bool


class ShippingCompensations:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    async def aclose(self) -> None:
        await asyncio.to_thread(self.engine.dispose)

    @compensates(ShippingActivities.book_shipment)
    @activity.defn
    async def cancel_shipment(self, inp: ShipInput, result: ShipResult | None) -> CancelResult:
        """Cancel the booking found by the step's idempotency key."""
        key = current_step().idempotency_key
        return CancelResult(cancelled=await asyncio.to_thread(self._cancel, key))

    def _cancel(self, key: str) -> bool:
        with self.engine.begin() as conn:
            changed = conn.execute(
                update(shipments)
                .where(shipments.c.idempotency_key == key, shipments.c.status == Status.BOOKED)
                .values(status=Status.CANCELLED)
            ).rowcount
        return changed == 1


def build(settings: Settings) -> list[Callable[..., Any]]:
    return [ShippingCompensations(make_engine(settings)).cancel_shipment]
