"""The shipping system: a carrier's bookings in a SQL table (in ``data_dir``), and its
action `shipping.book`."""

from __future__ import annotations

import asyncio
import enum
import hashlib
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import Column, Engine, MetaData, String, Table, create_engine, insert, select
from temporalio import activity

from saga import Effect, Settings, StepResult, catalog, compensable, current_step

metadata = MetaData()
shipments = Table(
    "shipments",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("idempotency_key", String(300), unique=True, nullable=False),
    Column("parcel", String(100), nullable=False),
    Column("status", String(10), nullable=False),
)


class Status(enum.StrEnum):
    BOOKED = "booked"
    CANCELLED = "cancelled"


def make_engine(settings: Settings) -> Engine:
    engine = create_engine(f"sqlite:///{settings.data_dir / 'shipping.db'}")
    metadata.create_all(engine)
    return engine


class ShipInput(BaseModel):
    """Book a carrier to ship a parcel."""

    model_config = ConfigDict(extra="forbid")
    parcel: str = Field(min_length=1, max_length=100, description="What to ship.")


class ShipResult(StepResult):
    external_id: str = Field(description="The booking id.")


class ShippingActivities:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    async def aclose(self) -> None:
        await asyncio.to_thread(self.engine.dispose)

    @compensable
    @activity.defn
    async def book_shipment(self, inp: ShipInput) -> ShipResult:
        """Book a carrier for a parcel (undone by cancelling the booking)."""
        step = current_step()
        booking = await asyncio.to_thread(self._book, step.idempotency_key, inp.parcel)
        await step.record_external_id(booking)
        return ShipResult(external_id=booking)

    def _book(self, key: str, parcel: str) -> str:
        with self.engine.begin() as conn:
            found = conn.execute(
                select(shipments.c.id).where(shipments.c.idempotency_key == key)
            ).scalar()
            if found is not None:  # a retry adopts the booking
                return str(found)
            booking = "shp_" + hashlib.sha256(key.encode()).hexdigest()[:16]
            conn.execute(
                insert(shipments).values(
                    id=booking, idempotency_key=key, parcel=parcel, status=Status.BOOKED
                )
            )
            return booking


class ShippingReader:
    """The bookings, for `saga reconcile`."""

    system = "shipping"

    def __init__(self, settings: Settings) -> None:
        self.engine = make_engine(settings)
        self.where = str(self.engine.url)

    async def effects(self, saga_prefix: str) -> list[Effect]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(shipments)).all()
        return [
            Effect(self.system, r.idempotency_key, r.id, r.status == Status.BOOKED, r.status)
            for r in rows
        ]

    async def lookup(self, external_id: str) -> Effect | None:
        return None  # the listing holds every booking

    async def aclose(self) -> None:
        self.engine.dispose()


catalog.add_reader("shipping.book", ShippingReader)


def build(settings: Settings) -> list[Callable[..., Any]]:
    return [ShippingActivities(make_engine(settings)).book_shipment]
