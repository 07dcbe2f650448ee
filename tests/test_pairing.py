"""Declaring an action and its undo from the undo's side (``@compensable`` +
``@compensates``), step options in one dataclass, and the refusal of a compensable action
whose undo was never declared."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from pydantic import BaseModel
from temporalio import activity
from temporalio.client import Client
from temporalio.common import RetryPolicy

from saga import (
    ActionKind,
    CatalogError,
    Delivery,
    Ledger,
    Settings,
    StepOptions,
    StepResult,
    catalog,
    compensable,
    compensates,
    create_worker,
    pivot,
)


class ShipInput(BaseModel):
    parcel: str


class ShipResult(StepResult):
    carrier: str = "post"


@compensable(action="pairing.ship", options=StepOptions(start_to_close_timeout=timedelta(9)))
@activity.defn(name="pairing_ship")
async def ship(inp: ShipInput) -> ShipResult:
    """Ship a parcel (test)."""
    return ShipResult(external_id=inp.parcel)


@compensable(action="pairing.orphan")
@activity.defn(name="pairing_orphan")
async def orphan(inp: ShipInput) -> ShipResult:
    """An action whose undo module is never imported (test)."""
    return ShipResult(external_id=inp.parcel)


def test_the_undo_declares_the_pairing_from_its_side() -> None:
    spec = catalog.get("pairing.ship")
    assert spec is not None and spec.kind is ActionKind.COMPENSABLE
    assert spec.start_to_close_timeout == timedelta(9)
    assert spec.compensation is None
    with pytest.raises(CatalogError, match=r"'pairing.ship'.*compensations module"):
        catalog.check_compensations(["pairing_ship"])

    @compensates(ship, timeout=timedelta(seconds=7), retry_policy=RetryPolicy(maximum_attempts=2))
    @activity.defn(name="pairing_unship")
    async def unship(inp: ShipInput, result: ShipResult | None) -> None:
        return None

    spec = catalog.get("pairing.ship")
    assert spec is not None
    assert spec.compensation == "pairing_unship"
    assert spec.compensation_timeout == timedelta(seconds=7)
    assert spec.compensation_retry_policy.maximum_attempts == 2
    assert spec.start_to_close_timeout == timedelta(9)  # the forward options are kept
    catalog.check_compensations(["pairing_ship"])


def test_compensates_refuses_what_is_not_compensable() -> None:
    @pivot(options=StepOptions(delivery=Delivery.AT_MOST_ONCE))
    @activity.defn(name="pairing_announce")
    async def announce_parcel(inp: ShipInput) -> None:
        """Announce a parcel (test)."""

    spec = catalog.by_activity("pairing_announce")
    assert spec is not None and spec.delivery is Delivery.AT_MOST_ONCE

    with pytest.raises(CatalogError, match="not declared @compensable"):

        @compensates(announce_parcel)
        @activity.defn(name="pairing_unannounce")
        async def unannounce(inp: ShipInput, result: None) -> None: ...

    with pytest.raises(CatalogError, match=r"takes \(input, result \| None\)"):

        @compensates(orphan)
        @activity.defn(name="pairing_bad_undo")
        async def bad_undo(inp: ShipInput) -> None: ...


def test_step_result_carries_the_external_id() -> None:
    assert StepResult().external_id is None
    assert ShipResult(external_id="p1").model_dump() == {"external_id": "p1", "carrier": "post"}


async def test_a_worker_running_an_action_without_its_undo_is_refused(
    client: Client, tmp_path: Path
) -> None:
    settings = Settings(data_dir=tmp_path, task_queue="pairing")
    ledger = Ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
    try:
        with pytest.raises(CatalogError, match=r"'pairing.orphan'.*was not imported"):
            create_worker(client, settings, ledger, activities=[orphan])
    finally:
        ledger.close()
