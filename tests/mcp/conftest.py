"""The embedded stack (`saga dev`: Temporal, localstripe, inventory, SMTP and a worker of
the production systems) as a user starts it, once for the MCP tests; and MCP clients of
the official SDK talking to `saga mcp` over stdio or HTTP."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import stripe
from sqlalchemy import Engine
from temporalio.client import Client

from activities.inventory import ProductInfo, make_engine, seed_products, stock_of
from saga import free_port
from saga._audit import AuditEntry, trail
from saga._ledger import Ledger
from saga.dev._localstripe import published_url
from tests.conftest import eventually

ROOT = Path(__file__).parent.parent.parent
STRIPE_KEY = "sk_test_local"


def _clean_env() -> dict[str, str]:
    """This environment without its saga and model settings, but with the session's
    payload keys (every process of the session encrypts with them)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SAGA_", "OPENAI_"))}
    env["SAGA_PAYLOAD_KEYS"] = os.environ["SAGA_PAYLOAD_KEYS"]
    return env


@dataclass
class Dev:
    """A running `saga dev`, and how the tests count what its systems did."""

    data_dir: Path
    address: str
    task_queue: str
    client: Client
    inventory: Engine
    stripe: stripe.StripeClient

    def env(self, **extra: str) -> dict[str, str]:
        """The environment of a `saga` command next to this stack (as `saga dev` prints)."""
        env = _clean_env()
        env.update(
            SAGA_TEMPORAL_ADDRESS=self.address,
            SAGA_DATA_DIR=str(self.data_dir),
            SAGA_TASK_QUEUE=self.task_queue,
            SAGA_WEB_URL="http://127.0.0.1:8080",
        )
        env.update(extra)
        return env

    def product(self, stock: int) -> str:
        """A fresh product in the stack's inventory; returns its SKU."""
        sku = f"mcp-{uuid.uuid4().hex[:8]}"
        info = ProductInfo(sku=sku, name=f"Test {sku}", price_cents=1250, stock=stock)
        assert seed_products(self.inventory, [info]) == 1
        return sku

    def stock(self, sku: str) -> int | None:
        return stock_of(self.inventory, sku)

    async def charges(self, saga_id: str) -> list[stripe.PaymentIntent]:
        """The PaymentIntents localstripe holds for a saga."""
        page = await self.stripe.v1.payment_intents.list_async({"limit": 100})
        return [
            pi
            async for pi in page.auto_paging_iter()
            if "saga_id" in pi.metadata and pi.metadata["saga_id"] == saga_id
        ]

    async def refunds(self, intent_id: str) -> list[stripe.Refund]:
        page = await self.stripe.v1.refunds.list_async({"payment_intent": intent_id})
        return list(page.data)

    def trail(self, saga_id: str | None = None) -> list[AuditEntry]:
        """The audit trail in the stack's ledger: of one saga, or all of it."""
        ledger = Ledger(f"sqlite:///{self.data_dir / 'ledger.db'}")
        try:
            return trail(ledger, saga_id=saga_id, limit=10_000)
        finally:
            ledger.close()

    async def payment_intents(self) -> int:
        page = await self.stripe.v1.payment_intents.list_async({"limit": 100})
        return len([pi async for pi in page.auto_paging_iter()])


def order_plan(sku: str, *, amount: int = 2500, wait: float | None = None) -> dict[str, Any]:
    """Reserve 2 units, charge Ana's card, (wait,) email her."""
    steps: list[dict[str, Any]] = [
        {"id": "reserve", "action": "inventory.reserve", "args": {"sku": sku, "quantity": 2}},
        {
            "id": "charge",
            "action": "payments.charge",
            "args": {
                "amount": amount,
                "currency": "eur",
                "customer_email": "ana@example.com",
                "card_number": "4242424242424242",
                "description": "2 mugs",
            },
        },
    ]
    if wait is not None:
        steps.append({"id": "pause", "action": "saga.wait", "args": {"seconds": wait}})
    steps.append(
        {
            "id": "confirm",
            "action": "notify.email",
            "args": {"to": "ana@example.com", "subject": "Your order: 2 mugs"},
        }
    )
    return {"steps": steps}


@pytest.fixture(scope="package")
def dev_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, int, str]]:
    data = tmp_path_factory.mktemp("mcp-dev")
    port = free_port()
    queue = f"mcp-{uuid.uuid4().hex[:6]}"
    env = _clean_env()
    env.update(
        SAGA_DATA_DIR=str(data),
        SAGA_TASK_QUEUE=queue,
        SAGA_SMTP_PORT=str(free_port()),
        OPENAI_API_KEY="",  # the offline planner
    )
    log = data / "dev.out"
    proc = subprocess.Popen(
        [sys.executable, "-m", "saga", "dev", "--port", str(port), "--web-port", "0"],
        env=env,
        cwd=ROOT,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
    )
    try:
        yield data, port, queue
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="package")
async def dev(dev_process: tuple[Path, int, str]) -> AsyncIterator[Dev]:
    data, port, queue = dev_process
    address = f"127.0.0.1:{port}"

    async def up() -> Client | None:
        if "worker polling" not in (data / "dev.out").read_text(errors="replace"):
            return None
        return await Client.connect(address)

    client = await eventually(up, timeout=120, interval=0.5)
    url = published_url(data)
    assert url is not None, (data / "dev.out").read_text()
    inventory = make_engine(f"sqlite:///{data / 'inventory.db'}")
    client_stripe = stripe.StripeClient(
        STRIPE_KEY, base_addresses={"api": url}, max_network_retries=0
    )
    try:
        yield Dev(data, address, queue, client, inventory, client_stripe)
    finally:
        inventory.dispose()
