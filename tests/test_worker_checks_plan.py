"""The workflow reads no catalog: the worker checks the plan, and history records it.

A saga's plan, its step specs and the approval question are answered by the worker in
one local activity (``saga_check_plan``). Replaying the saga reads that answer back, so
a process whose catalog lacks the saga's action (another release, another system set)
still replays it; workflow code that consulted its own catalog would decide otherwise.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import Engine
from temporalio.client import Client

from saga import Ledger, SagaStatus, SagaWorkflow, Settings, create_worker, start_saga, wait_saga
from saga._catalog import catalog
from saga._models import SagaInput
from saga._policy import Policy
from tests.conftest import SESSION_KEYS, unique
from tests.histories import replayer
from tests.history import local_activities
from tests.test_saga import step


def _settings(tmp_path: Path) -> Settings:
    return Settings(
        task_queue=unique("checks"),
        database_url=f"sqlite:///{tmp_path / 'ledger.db'}",
        data_dir=tmp_path,
        activities="tests.effects:build_activities",
    )


async def test_the_plan_check_comes_from_history_not_the_replaying_catalog(
    client: Client, effects_engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = _settings(tmp_path)
    ledger = Ledger(settings.ledger_url())
    sid = unique("checked")
    plan = {"steps": [step("a"), step("b")]}
    try:
        async with create_worker(client, settings, ledger):
            await start_saga(client, plan, saga_id=sid, task_queue=settings.task_queue)
            result = await wait_saga(client, sid)
    finally:
        ledger.close()
    assert result.status == SagaStatus.COMPLETED, result
    history = await client.get_workflow_handle(sid).fetch_history()
    # One local activity checked the plan (capabilities, check, specs, approval).
    assert local_activities(history) == ["saga_check_plan", "record_saga_outcome"]

    # A process whose catalog has no effects.apply
    # replays the saga all the same: the workflow took the worker's answer.
    monkeypatch.delitem(catalog._by_name, "effects.apply")
    assert catalog.get("effects.apply") is None
    await replayer(SagaWorkflow, keys=SESSION_KEYS).replay_workflow(history)


async def test_a_rejected_plan_is_the_workers_answer(
    client: Client, effects_engine: Engine, tmp_path: Path
) -> None:
    """The same error texts as before the worker checked: rejected, or breaks the policy."""
    settings = _settings(tmp_path)
    ledger = Ledger(settings.ledger_url())
    bad, breach = unique("bad"), unique("breach")
    try:
        async with create_worker(client, settings, ledger):
            await start_saga(
                client,
                {"steps": [step("a"), {"id": "b", "action": "effects.nope", "args": {}}]},
                saga_id=bad,
                task_queue=settings.task_queue,
            )
            only_notify = Policy(allowed_actions=["effects.notify"])
            await start_saga(
                client,
                None,
                input=SagaInput(plan={"steps": [step("a")]}, policy=only_notify),
                saga_id=breach,
                task_queue=settings.task_queue,
            )
            rejected = await wait_saga(client, bad)
            breached = await wait_saga(client, breach)
    finally:
        ledger.close()
    assert rejected.status == SagaStatus.REJECTED
    assert rejected.error == "plan rejected"
    assert rejected.problems[0].startswith("step 'b': unknown action 'effects.nope'")
    assert breached.status == SagaStatus.REJECTED
    assert breached.error == "plan breaks the policy"
    assert breached.problems == ["step 'a': action effects.apply is not allowed by policy"]
    for sid in (bad, breach):
        history = await client.get_workflow_handle(sid).fetch_history()
        assert local_activities(history) == ["saga_check_plan", "record_saga_outcome"]
