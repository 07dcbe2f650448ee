"""Tests of the real systems (inventory, notify) run through the real saga workflow."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Engine
from temporalio.client import Client

import compensations.inventory
import compensations.tickets
from activities import inventory, notify, tickets
from activities.inventory import ProductInfo, create_schema, make_engine, seed_products
from saga import Ledger, SagaResult, Settings, create_worker, start_saga, wait_saga


@dataclass
class Systems:
    """A worker running the inventory and notify activities, and what tests count with."""

    client: Client
    settings: Settings
    ledger: Ledger
    engine: Engine
    """The inventory database, opened separately from the worker's own engine."""

    async def start(self, steps: list[dict[str, Any]], saga_id: str | None = None) -> str:
        sid = saga_id or f"saga-{uuid.uuid4().hex[:10]}"
        await start_saga(
            self.client, {"steps": steps}, saga_id=sid, task_queue=self.settings.task_queue
        )
        return sid

    async def wait(self, saga_id: str) -> SagaResult:
        return await wait_saga(self.client, saga_id)

    async def run(self, steps: list[dict[str, Any]]) -> SagaResult:
        return await self.wait(await self.start(steps))

    def product(self, stock: int, *, price_cents: int = 1250) -> str:
        """A fresh product with ``stock`` units; returns its SKU."""
        sku = f"sku-{uuid.uuid4().hex[:10]}"
        info = ProductInfo(sku=sku, name=f"Test {sku}", price_cents=price_cents, stock=stock)
        assert seed_products(self.engine, [info]) == 1
        return sku


@asynccontextmanager
async def systems_worker(
    client: Client,
    data_dir: Path,
    *,
    inventory_url: str,
    smtp_port: int = 9,
    faults: str = "",
    with_tickets: bool = False,
) -> AsyncIterator[Systems]:
    """Build the systems' activities from settings, as `saga worker` does, on a fresh queue."""
    settings = Settings(
        task_queue=f"systems-{uuid.uuid4().hex[:8]}",
        data_dir=data_dir,
        database_url=f"sqlite:///{data_dir / f'ledger-{uuid.uuid4().hex[:6]}.db'}",
        inventory_url=inventory_url,
        smtp_port=smtp_port,
        faults=faults,
    )
    ledger = Ledger(settings.ledger_url())
    engine = make_engine(inventory_url)
    create_schema(engine)
    acts = [
        *inventory.build(settings),
        *compensations.inventory.build(settings),
        *notify.build(settings),
    ]
    if with_tickets:  # Redmine is not configured in these settings
        acts += tickets.build(settings) + compensations.tickets.build(settings)
    try:
        async with create_worker(client, settings, ledger, activities=acts):
            yield Systems(client, settings, ledger, engine)
    finally:
        for act in acts:
            owner = getattr(act, "__self__", None)
            if isinstance(getattr(owner, "engine", None), Engine):
                owner.engine.dispose()  # type: ignore[union-attr]
        engine.dispose()
        ledger.close()
