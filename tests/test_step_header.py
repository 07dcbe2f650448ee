"""Step identity reaches the activity in the ``saga-step`` header; an activity started
without one (in flight across a deploy) is identified from its activity id instead."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine
from temporalio.api.common.v1 import Payload
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client
from temporalio.worker import Interceptor

from saga import (
    CompensationStatus,
    Delivery,
    Ledger,
    LedgerInterceptor,
    SagaStatus,
    Settings,
    create_worker,
    start_saga,
    wait_saga,
)
from saga._catalog import catalog
from saga._step_header import STEP_HEADER, StepHeader, StepRole, read_header, step_from_ids
from tests import effects
from tests.conftest import unique
from tests.test_saga import step

FAILING_PLAN = {"steps": [step("a"), step("b"), step("c", fail="before")]}


def scheduled_headers(history: Any) -> list[tuple[str, StepHeader | None]]:
    """(activity id, step header) of every activity task the saga scheduled."""
    out = []
    for event in history.events:
        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            attrs = event.activity_task_scheduled_event_attributes
            out.append((attrs.activity_id, read_header(attrs.header.fields)))
    return out


def test_the_header_round_trips_and_a_foreign_one_is_ignored() -> None:
    found = step_from_ids("apply_effect", "a:resend:2", catalog)
    assert found is not None
    assert read_header({STEP_HEADER: found.payload()}) == found
    assert read_header({}) is None
    assert read_header({STEP_HEADER: Payload(data=b'{"step_id": 1}')}) is None


def test_without_a_header_the_step_is_parsed_from_the_old_activity_ids() -> None:
    spec = catalog.get("effects.apply")
    assert spec is not None
    forward = step_from_ids("apply_effect", "a", catalog)
    resend = step_from_ids("apply_effect", "a:resend:2", catalog)
    undo = step_from_ids("revert_effect", "a:compensate:3", catalog)
    assert forward is not None and resend is not None and undo is not None
    assert (forward.step_id, forward.role, forward.round) == ("a", StepRole.FORWARD, 0)
    assert (resend.step_id, resend.role, resend.round) == ("a", StepRole.RESEND, 2)
    assert (undo.step_id, undo.role, undo.round) == ("a", StepRole.COMPENSATE, 3)
    assert forward.action == undo.action == "effects.apply"
    assert forward.delivery is Delivery.EXACTLY_ONCE
    assert forward.timeout == spec.start_to_close_timeout
    assert undo.timeout == spec.compensation_timeout
    assert forward.retry.maximum_attempts == spec.retry_policy.maximum_attempts
    assert undo.retry.maximum_attempts == spec.compensation_retry_policy.maximum_attempts
    assert forward.heartbeat_timeout == spec.heartbeat_timeout
    assert step_from_ids("notify_saga", "x", catalog) is None  # not a saga step


async def _run(client: Client, settings: Settings, ledger: Ledger) -> tuple[str, Any]:
    sid = unique("header")
    async with create_worker(client, settings, ledger):
        await start_saga(client, FAILING_PLAN, saga_id=sid, task_queue=settings.task_queue)
        result = await wait_saga(client, sid)
        history = await client.get_workflow_handle(sid).fetch_history()
    assert result.status == SagaStatus.COMPENSATED
    assert [s.compensation for s in result.steps] == [
        CompensationStatus.COMPENSATED,
        CompensationStatus.COMPENSATED,
        CompensationStatus.COMPENSATED,
    ]
    # The ledger attributed every activity to its step and role.
    for sid_step in ("a", "b", "c"):
        row = ledger.step(f"{sid}/{sid_step}")
        assert row is not None and row.action == "effects.apply"
    assert ledger.step(f"{sid}/a").compensation_status == "compensated"  # type: ignore[union-attr]
    assert ledger.step(f"{sid}/c").status == "failed"  # type: ignore[union-attr]
    return sid, history


def _settings(tmp_path: Path) -> Settings:
    return Settings(
        task_queue=unique("header"),
        database_url=f"sqlite:///{tmp_path / 'ledger.db'}",
        data_dir=tmp_path,
        activities="tests.effects:build_activities",
    )


async def test_each_activity_carries_its_step_in_the_header(
    client: Client, effects_engine: Engine, tmp_path: Path
) -> None:
    settings = _settings(tmp_path)
    ledger = Ledger(settings.ledger_url())
    try:
        sid, history = await _run(client, settings, ledger)
    finally:
        ledger.close()
    sent = {activity_id: header for activity_id, header in scheduled_headers(history)}
    assert set(sent) == {"a", "b", "c", "b:compensate:1", "a:compensate:1", "c:compensate:1"}
    assert all(header is not None for header in sent.values())
    assert sent["b"] == step_from_ids("apply_effect", "b", catalog)
    assert sent["a:compensate:1"] == step_from_ids("revert_effect", "a:compensate:1", catalog)
    assert all(r["reverted"] == 1 for r in effects.effects_of(effects_engine, sid))


async def test_activities_started_without_the_header_are_still_on_the_ledger(
    client: Client, effects_engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A saga whose workflow code sends no header (an earlier release): the activity side
    identifies each step from its activity id, and the saga runs exactly as before."""
    monkeypatch.setattr(
        LedgerInterceptor, "workflow_interceptor_class", Interceptor.workflow_interceptor_class
    )
    settings = _settings(tmp_path)
    ledger = Ledger(settings.ledger_url())
    try:
        sid, history = await _run(client, settings, ledger)
    finally:
        ledger.close()
    assert [header for _, header in scheduled_headers(history)] == [None] * 6
    assert all(r["reverted"] == 1 for r in effects.effects_of(effects_engine, sid))
