"""A deploy while a saga waits: workflow code changes behind ``workflow.patched``.

Release 1 (today's ``SagaWorkflow``) runs a saga up to its cooling-off timer and its
worker stops. Release 2 (``AnnouncingSagaWorkflow``: a saga first announces that it
started) starts in its place. The waiting saga, replayed by release 2 through the patch
point it had passed long ago, keeps the old path and completes; a new saga takes the new
one. The same change without the guard cannot replay the waiting saga.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import Engine
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowHistory
from temporalio.workflow import NondeterminismError

import saga._worker
from saga import Ledger, SagaStatus, SagaWorkflow, Settings, create_worker, start_saga, wait_saga
from tests import effects
from tests.agent.conftest import has_event
from tests.conftest import SESSION_KEYS, eventually, unique
from tests.histories import replayer
from tests.history import local_activities
from tests.test_saga import step
from tests.workflow_variants import (
    ANNOUNCE,
    ANNOUNCEMENT,
    AnnouncingSagaWorkflow,
    UnguardedAnnouncingSagaWorkflow,
)

WAITING_PLAN = {
    "steps": [
        step("a"),
        {"id": "cooling-off", "action": "saga.wait", "args": {"seconds": 3}},
        step("b"),
    ]
}


def patches(history: WorkflowHistory) -> list[str]:
    """The ids of the patch markers in ``history``."""
    found = []
    for event in history.events:
        if event.event_type == EventType.EVENT_TYPE_MARKER_RECORDED:
            marker = event.marker_recorded_event_attributes
            if marker.marker_name == "core_patch":
                found.append(json.loads(marker.details["patch-data"].payloads[0].data)["id"])
    return found


def workers(history: WorkflowHistory) -> set[str]:
    """The identities of the workers that completed the saga's workflow tasks."""
    return {
        e.workflow_task_completed_event_attributes.identity
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED
    }


async def test_a_waiting_saga_survives_a_patched_deploy(
    client: Client, effects_engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = Settings(
        task_queue=unique("deploy"),
        database_url=f"sqlite:///{tmp_path / 'ledger.db'}",
        data_dir=tmp_path,
        activities="tests.effects:build_activities",
    )
    queue = settings.task_queue
    ledger = Ledger(settings.ledger_url())
    old_id, new_id = unique("before-deploy"), unique("after-deploy")
    try:
        async with create_worker(client, settings, ledger, identity="release-1"):
            await start_saga(client, WAITING_PLAN, saga_id=old_id, task_queue=queue)
            old = client.get_workflow_handle_for(SagaWorkflow.run, old_id)
            await eventually(lambda: has_event(old, EventType.EVENT_TYPE_TIMER_STARTED))
        # Release 1 is gone; the saga waits on its durable timer, as the deploy finds it.
        in_flight = await old.fetch_history()
        assert effects.log_of(effects_engine, old_id) == [("apply", "a")]

        monkeypatch.setattr(saga._worker, "SagaWorkflow", AnnouncingSagaWorkflow)
        async with create_worker(client, settings, ledger, identity="release-2"):
            old_result = await wait_saga(client, old_id)
            await start_saga(client, {"steps": [step("a")]}, saga_id=new_id, task_queue=queue)
            new_result = await wait_saga(client, new_id)
    finally:
        ledger.close()

    # The old saga finished on the old path: no announcement, every step once.
    assert old_result.status == SagaStatus.COMPLETED, old_result
    assert effects.log_of(effects_engine, old_id) == [("apply", "a"), ("apply", "b")]
    old_history = await old.fetch_history()
    assert workers(old_history) == {"release-1", "release-2"}
    assert patches(old_history) == ["worker-checks-plan"]  # the engine's own, at its start
    # The new saga took the new path, and its history carries the patch marker.
    assert new_result.status == SagaStatus.COMPLETED, new_result
    assert effects.log_of(effects_engine, new_id) == [("notify", ANNOUNCEMENT), ("apply", "a")]
    new_history = await client.get_workflow_handle(new_id).fetch_history()
    assert patches(new_history) == [ANNOUNCE, "worker-checks-plan"]
    # The worker checked each plan in one local activity; the saga recorded its outcome.
    for history in (old_history, new_history):
        assert local_activities(history) == ["saga_check_plan", "record_saga_outcome"]

    # Release 2 replays every one of these histories...
    for history in (in_flight, old_history, new_history):
        await replayer(AnnouncingSagaWorkflow, keys=SESSION_KEYS).replay_workflow(history)
    # ...the same change without workflow.patched cannot replay the waiting saga...
    for history in (in_flight, old_history):
        with pytest.raises(NondeterminismError):
            await replayer(UnguardedAnnouncingSagaWorkflow, keys=SESSION_KEYS).replay_workflow(
                history
            )
    # ...and release 1 cannot take back a saga that release 2 started (no rollback once
    # new sagas run: the patch must stay until they have all closed).
    with pytest.raises(NondeterminismError):
        await replayer(SagaWorkflow, keys=SESSION_KEYS).replay_workflow(new_history)
