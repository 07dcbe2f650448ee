"""Update handlers finish before the saga does (``workflow.all_handlers_finished``)."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import Engine
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client

import saga._worker
from saga import (
    CompensationStatus,
    Ledger,
    OperatorAction,
    SagaStatus,
    SagaWorkflow,
    Settings,
    create_worker,
    start_saga,
    wait_saga,
)
from tests.conftest import eventually, unique
from tests.test_saga import state_is, step
from tests.workflow_variants import AuditedResolveSagaWorkflow


async def test_an_update_still_running_as_the_saga_ends_gets_its_answer(
    client: Client, effects_engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The operator's resolve returns the final state, not "workflow completed before
    the update finished", though the saga had nothing left to do before it returned."""
    monkeypatch.setattr(saga._worker, "SagaWorkflow", AuditedResolveSagaWorkflow)
    settings = Settings(
        task_queue=unique("handlers"),
        database_url=f"sqlite:///{tmp_path / 'ledger.db'}",
        data_dir=tmp_path,
        activities="tests.effects:build_activities",
    )
    ledger = Ledger(settings.ledger_url())
    sid = unique()
    plan = {"steps": [step("a"), step("b", revert_failures=1000), step("c", fail="before")]}
    try:
        async with create_worker(client, settings, ledger):
            await start_saga(client, plan, saga_id=sid, task_queue=settings.task_queue)
            await eventually(lambda: state_is(client, sid, SagaStatus.NEEDS_ATTENTION), timeout=30)
            handle = client.get_workflow_handle_for(SagaWorkflow.run, sid)
            answer = await handle.execute_update(
                SagaWorkflow.resolve_compensation, OperatorAction(step_id="b", note="by hand")
            )
            final = await wait_saga(client, sid)
    finally:
        ledger.close()
    # While the update ran, the saga finished unwinding (a's compensation too) and waited.
    assert answer.status == final.status == SagaStatus.COMPENSATED
    assert [s.compensation for s in answer.steps] == [
        CompensationStatus.COMPENSATED,
        CompensationStatus.RESOLVED,
        CompensationStatus.COMPENSATED,
    ]
    kinds = [e.event_type for e in (await handle.fetch_history()).events]
    done = kinds.index(EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_COMPLETED)
    assert done < kinds.index(EventType.EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED)
