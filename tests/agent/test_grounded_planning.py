"""The planner looks before it plans, and re-plans the rest after a business failure.

Scripted models behind the real plugin on the real Temporal dev server: look-ups are the
catalog's read-only actions offered as tools (`money.balance` here), run as activities
on the ledger; a step that fails for a business reason (`effects.apply` with
``fail="before"``: "Declined") gets the rest of its plan from the model, checked with the
steps that ran and approved again if the policy asks.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowHandle, WorkflowUpdateFailedError

from saga import SagaResult, SagaStatus, SagaWorkflow
from saga._models import ApprovalDecision, CompensationStatus, StepEdit, StepStatus
from saga._policy import ApprovalMode, Policy
from saga.planner._lookups import tool_name
from tests import effects
from tests.agent.conftest import ResponseBuilders, RunWorker, ScriptedModel, answer, plan_response
from tests.agent.test_approval import _awaiting
from tests.conftest import eventually


def lookup_call(args: dict[str, Any] | str, call_id: str) -> Any:
    text = args if isinstance(args, str) else json.dumps(args)
    return ResponseBuilders.tool_call(text, tool_name("money.balance"), call_id=call_id)


def tool_outputs(model: ScriptedModel, call: int) -> list[dict[str, Any]]:
    """The look-up answers the model was given on call ``call`` (0-based)."""
    items = model.calls[call]["input"]
    outputs = [i for i in items if isinstance(i, dict) and i.get("type") == "function_call_output"]
    return [json.loads(o["output"]) for o in outputs]


async def scheduled(handle: WorkflowHandle[Any, Any], activity: str) -> list[str]:
    """The activity ids of ``activity`` that the saga's history scheduled."""
    ids = []
    async for event in handle.fetch_history_events():
        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            attrs = event.activity_task_scheduled_event_attributes
            if attrs.activity_type.name == activity:
                ids.append(attrs.activity_id)
    return ids


def applied(stack: Any, handle: WorkflowHandle[Any, Any]) -> dict[str, int]:
    """Each effect's name and whether it was reverted (1) or stands (0)."""
    return {e["name"]: e["reverted"] for e in effects.effects_of(stack.effects, handle.id)}


async def test_the_planner_looks_up_before_it_plans(run_worker: RunWorker) -> None:
    model = ScriptedModel(
        [
            lookup_call({"name": "ana"}, "call-look-1"),
            plan_response(
                ("pay", "money.charge", {"name": "ana", "amount": 1234, "currency": "eur"})
            ),
        ]
    )
    async with run_worker(model) as stack:
        handle = await stack.start("charge ana whatever she may spend")
        result = await handle.result()
        ledger_step = stack.ledger.step(f"{handle.id}/lookup:1")
    assert result.status == SagaStatus.COMPLETED, result
    # The model read the look-up's answer before it wrote the plan.
    (seen,) = tool_outputs(model, 1)
    assert seen["lookup"] == "money.balance"
    assert seen["result"]["balance"] == 1234 and seen["result"]["name"] == "ana"
    assert result.turns[0] == 'calls money__balance {"name": "ana"}'
    assert len(result.turns) == 2 and result.turns[1].startswith('says \'{"steps"')
    (record,) = result.lookups
    assert (record.id, record.action, record.args) == ("lookup:1", "money.balance", {"name": "ana"})
    assert record.result is not None and record.result["balance"] == 1234
    # Run once, as an activity on the ledger, and never undone.
    assert await scheduled(handle, "balance_money") == ["lookup:1"]
    assert ledger_step is not None and ledger_step.status == "succeeded"
    assert ledger_step.compensation_status == "none"
    assert applied(stack, handle) == {"ana": 0}


async def test_lookups_are_checked_and_bounded_by_the_policy(run_worker: RunWorker) -> None:
    model = ScriptedModel(
        [
            lookup_call({"name": "ana", "limit": 999999}, "call-look-bad"),
            lookup_call({"name": "bo"}, "call-look-over"),
            plan_response(("a", "effects.apply", {"name": "a"})),
        ]
    )
    async with run_worker(model) as stack:
        handle = await stack.start("look twice then apply a", Policy(max_lookups=1))
        result = await handle.result()
    assert result.status == SagaStatus.COMPLETED, result
    (refused,) = tool_outputs(model, 1)
    assert refused["error"].startswith("refused: ") and "limit" in refused["error"]
    first, over = tool_outputs(model, 2)
    assert first == refused
    assert "the policy allows 1 look-up(s) and they are spent" in over["error"]
    # The refused call ran nothing; the one over the budget was not even checked.
    assert await scheduled(handle, "balance_money") == []
    (record,) = result.lookups
    assert record.result is None and record.error is not None and "limit" in record.error


@pytest.mark.parametrize("fail", ["before", "after"])
async def test_a_business_failure_gets_the_rest_of_the_plan_replanned(
    run_worker: RunWorker, fail: str
) -> None:
    # "after": b took effect, then failed. It is undone before the saga goes on, so the
    # completed saga leaves nothing of it.
    model = ScriptedModel(
        [
            plan_response(
                ("a", "effects.apply", {"name": "a"}),
                ("b", "effects.apply", {"name": "b", "fail": fail}),
                ("d", "effects.apply", {"name": "d"}),
            ),
            plan_response(("c", "effects.apply", {"name": "c"})),
        ]
    )
    async with run_worker(model) as stack:
        handle = await stack.start("apply a and b, or c if b is declined")
        result = await handle.result()
    assert result.status == SagaStatus.COMPLETED, result
    assert applied(stack, handle) == (
        {"a": 0, "c": 0} if fail == "before" else {"a": 0, "b": 1, "c": 0}
    )
    undone = {s.id: s.compensation for s in result.steps}
    assert undone["b"] == CompensationStatus.COMPENSATED
    assert undone["a"] == undone["c"] == CompensationStatus.REGISTERED
    states = {s.id: s.status for s in result.steps}
    assert states == {
        "a": StepStatus.SUCCEEDED,
        "b": StepStatus.FAILED,
        "d": StepStatus.SKIPPED,
        "c": StepStatus.SUCCEEDED,
    }
    assert result.plan is not None and [s.id for s in result.plan.steps] == ["a", "c"]
    assert len(result.replans) == 1 and "re-planned as c" in result.replans[0]
    assert result.model_calls == 2  # the plan, and the re-plan
    told = model.feedback(1)
    assert ("Declined: injected business failure" if fail == "before" else "Broken: ") in told
    assert '"ran"' in told and '"dropped": ["d"]' in told


async def test_a_replan_is_held_to_the_policy_with_what_was_spent(
    run_worker: RunWorker,
) -> None:
    model = ScriptedModel(
        [
            plan_response(
                ("pay", "money.charge", {"name": "p", "amount": 600, "currency": "eur"}),
                ("b", "effects.apply", {"name": "b", "fail": "before"}),
            ),
            # 600 spent + 600 more is over the saga's 1000.
            plan_response(
                ("pay2", "money.charge", {"name": "p2", "amount": 600, "currency": "eur"})
            ),
        ]
    )
    policy = Policy(max_amount_per_saga=1000, max_repairs=0)
    async with run_worker(model) as stack:
        handle = await stack.start("charge 6 eur, then b", policy)
        result = await handle.result()
    assert result.status == SagaStatus.COMPENSATED, result
    assert applied(stack, handle) == {"p": 1}  # charged, then refunded; p2 never ran
    assert result.error == "Declined: injected business failure"
    (note,) = result.replans
    assert "still invalid" in note and "1200" in note


@pytest.mark.parametrize("how", ["declined", "no re-plans allowed"])
async def test_without_a_replan_everything_is_undone(run_worker: RunWorker, how: str) -> None:
    first = plan_response(
        ("a", "effects.apply", {"name": "a"}),
        ("b", "effects.apply", {"name": "b", "fail": "before"}),
    )
    responses = [first]
    policy = Policy()
    if how == "declined":
        responses.append(answer({"steps": [], "cannot_plan": "nothing else would do"}))
    else:
        policy = Policy(max_replans=0)
    model = ScriptedModel(responses)
    async with run_worker(model) as stack:
        handle = await stack.start("apply a and b", policy)
        result = await handle.result()
    assert result.status == SagaStatus.COMPENSATED, result
    assert applied(stack, handle) == {"a": 1}
    assert len(model.calls) == len(responses)
    if how == "declined":
        (note,) = result.replans
        assert "nothing else would do" in note
    else:
        assert result.replans == []


async def test_a_replan_waits_for_approval_of_its_own_hash(run_worker: RunWorker) -> None:
    model = ScriptedModel(
        [
            plan_response(
                ("a", "effects.apply", {"name": "a"}),
                ("b", "effects.apply", {"name": "b", "fail": "before"}),
            ),
            plan_response(("c", "effects.apply", {"name": "c"})),
        ]
    )
    async with run_worker(model) as stack:
        handle = await stack.start("apply a and b", Policy(approval=ApprovalMode.ALWAYS))
        first = await _awaiting(handle)
        await handle.execute_update(
            SagaWorkflow.approve, ApprovalDecision(plan_hash=first.plan_hash, by="ana")
        )

        async def replanned() -> SagaResult | None:
            state = await _awaiting(handle)
            return state if state.plan_hash != first.plan_hash else None

        second: SagaResult = await eventually(replanned)
        assert applied(stack, handle) == {"a": 0}  # nothing of the re-plan ran yet
        with pytest.raises(WorkflowUpdateFailedError) as stale:
            await handle.execute_update(
                SagaWorkflow.approve, ApprovalDecision(plan_hash=first.plan_hash, by="ana")
            )
        assert "stale plan hash" in str(stale.value.cause)
        with pytest.raises(WorkflowUpdateFailedError) as ran:
            await handle.execute_update(
                SagaWorkflow.edit_step,
                StepEdit(plan_hash=second.plan_hash or "", step_id="a", args={"name": "z"}),
            )
        assert "step 'a' already ran (succeeded)" in str(ran.value.cause)
        await handle.execute_update(
            SagaWorkflow.approve, ApprovalDecision(plan_hash=second.plan_hash, by="bo")
        )
        result = await handle.result()
    assert result.status == SagaStatus.COMPLETED, result
    assert applied(stack, handle) == {"a": 0, "c": 0}
    assert result.approval_note == "approved by bo"
