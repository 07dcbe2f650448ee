"""Each step's spec is resolved when the plan is checked, and the workflow runs from it."""

from __future__ import annotations

from datetime import timedelta

import pytest
from pydantic import BaseModel
from temporalio import activity
from temporalio.common import RetryPolicy

from saga import ActionKind, Delivery, Policy
from saga._catalog import WAIT, ActionSpec, Catalog, activity_name
from saga._compensations import Compensations
from saga._errors import PlanRejected
from saga._models import Retry, StepSpec
from saga._plan import check_plan, step_specs
from tests import effects  # noqa: F401  (test actions: effects.*)


class BookInput(BaseModel):
    ref: str


class BookResult(BaseModel):
    external_id: str


@activity.defn(name="spec_test_cancel")
async def cancel_booking(inp: BookInput, result: BookResult | None) -> None: ...


@activity.defn(name="spec_test_book")
async def book(inp: BookInput) -> BookResult:
    return BookResult(external_id=inp.ref)


@activity.defn(name="spec_test_announce")
async def announce(inp: BookInput) -> None: ...


SLOW = RetryPolicy(
    initial_interval=timedelta(seconds=2),
    backoff_coefficient=3.0,
    maximum_interval=timedelta(seconds=40),
    maximum_attempts=7,
    non_retryable_error_types=["Declined"],
)


def test_each_step_spec_is_what_its_catalog_entry_declares() -> None:
    local = Catalog()
    local.register(WAIT)
    local.register(
        ActionSpec(
            name="specs.book",
            activity_name=activity_name(book),
            kind=ActionKind.COMPENSABLE,
            description="Book.",
            input_model=BookInput,
            output_model=BookResult,
            compensation=activity_name(cancel_booking),
            start_to_close_timeout=timedelta(seconds=9),
            heartbeat_timeout=None,
            retry_policy=SLOW,
            compensation_timeout=timedelta(seconds=11),
        )
    )
    local.register(
        ActionSpec(
            name="specs.announce",
            activity_name=activity_name(announce),
            kind=ActionKind.PIVOT,
            description="Announce.",
            input_model=BookInput,
            output_model=None,
            delivery=Delivery.AT_MOST_ONCE,
        )
    )
    plan = check_plan(
        {
            "steps": [
                {"id": "b", "action": "specs.book", "args": {"ref": "r1"}},
                {"id": "w", "action": "saga.wait", "args": {"seconds": 1}},
                {"id": "n", "action": "specs.announce", "args": {"ref": "r1"}},
            ]
        },
        local,
        Policy(),
    )
    specs = step_specs(plan, local)
    assert list(specs) == ["b", "w", "n"]
    booked = specs["b"]
    assert booked == StepSpec(
        step_id="b",
        action="specs.book",
        activity="spec_test_book",
        kind=ActionKind.COMPENSABLE,
        start_to_close_timeout=timedelta(seconds=9),
        heartbeat_timeout=None,
        retry=Retry.of(SLOW),
        compensation="spec_test_cancel",
        compensation_timeout=timedelta(seconds=11),
        compensation_retry=booked.compensation_retry,
    )
    assert booked.retry.unbounded() == RetryPolicy(
        initial_interval=timedelta(seconds=2),
        backoff_coefficient=3.0,
        maximum_interval=timedelta(seconds=40),
        maximum_attempts=0,  # the ledger interceptor keeps the budget of 7
        non_retryable_error_types=["Declined"],
    )
    assert booked.compensation_retry.maximum_attempts == 10
    assert specs["w"].timer and specs["w"].activity == ""
    assert specs["n"].kind is ActionKind.PIVOT and specs["n"].compensation is None
    assert specs["n"].delivery is Delivery.AT_MOST_ONCE
    # The specs travel as plain JSON (in workflow state and the step header).
    assert StepSpec.model_validate_json(booked.model_dump_json()) == booked
    # A plan naming an action the catalog lacks has no specs.
    with pytest.raises(PlanRejected):
        step_specs(plan, Catalog())


async def test_compensations_undo_in_reverse_or_all_at_once() -> None:
    done: list[str] = []

    async def undo(step_id: str) -> None:
        done.append(step_id)

    one_by_one = Compensations()
    for step_id in ("a", "b", "c"):
        one_by_one.add(step_id)
    await one_by_one.compensate(undo)
    assert done == ["c", "b", "a"]
    done.clear()
    together = Compensations(parallel=True)
    together.add("a")
    together.add("b")
    await together.compensate(undo)
    assert sorted(done) == ["a", "b"]
