from saga import SagaStatus, start_saga, wait_saga
from tests import effects
from tests.conftest import Stack, unique


async def test_plan_completes(stack: Stack) -> None:
    sid = unique()
    plan = {"steps": [{"id": "a", "action": "effects.apply", "args": {"name": "a"}}]}
    await start_saga(stack.client, plan, saga_id=sid, task_queue=stack.settings.task_queue)
    result = await wait_saga(stack.client, sid)
    assert result.status == SagaStatus.COMPLETED, result
    assert len(effects.effects_of(stack.effects, sid)) == 1
