"""The approval gate for planned sagas: approve, reject, stale hashes, timeout, cancel."""

from __future__ import annotations

import pytest
from temporalio.client import WorkflowHandle, WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment

import saga
from saga import SagaResult, SagaStatus, SagaWorkflow, wait_saga
from saga._models import ApprovalDecision, ApprovalState, StepEdit
from saga._policy import ApprovalMode, Policy
from tests import effects
from tests.agent.conftest import RunWorker, ScriptedModel, plan_response
from tests.conftest import SESSION_KEYS, eventually
from tests.history import local_activities

ALWAYS = Policy(approval=ApprovalMode.ALWAYS)


def _plan() -> ScriptedModel:
    return ScriptedModel(
        [
            plan_response(
                ("a", "effects.apply", {"name": "a"}),
                ("pay", "money.charge", {"name": "p", "amount": 700, "currency": "eur"}),
                ("tell", "effects.notify", {"name": "told"}),
            )
        ]
    )


async def _awaiting(handle: WorkflowHandle[SagaWorkflow, SagaResult]) -> SagaResult:
    async def check() -> SagaResult | None:
        state = await handle.query(SagaWorkflow.state)
        return state if state.status == SagaStatus.AWAITING_APPROVAL else None

    state: SagaResult = await eventually(check)
    assert state.plan_hash and state.approval == ApprovalState.PENDING
    return state


async def test_approve_runs_the_plan(run_worker: RunWorker) -> None:
    async with run_worker(_plan()) as stack:
        handle = await stack.start("apply a, charge 7 eur, tell", ALWAYS)
        state = await _awaiting(handle)
        assert effects.effects_of(stack.effects, handle.id) == []
        await handle.execute_update(
            SagaWorkflow.approve, ApprovalDecision(plan_hash=state.plan_hash, by="ana")
        )
        result = await handle.result()
    assert result.status == SagaStatus.COMPLETED, result
    assert result.approval == ApprovalState.APPROVED
    assert result.approval_note == "approved by ana"
    assert len(effects.effects_of(stack.effects, handle.id)) == 2


async def test_risky_policy_asks_only_for_risky_plans(run_worker: RunWorker) -> None:
    model = ScriptedModel([plan_response(("a", "effects.apply", {"name": "a"}))])
    policy = Policy(approval=ApprovalMode.RISKY, approval_threshold=1000)
    async with run_worker(model) as stack:
        result = await (await stack.start("apply a", policy)).result()
    assert result.status == SagaStatus.COMPLETED
    assert result.approval == ApprovalState.NOT_REQUIRED


async def test_reject_ends_rejected_with_no_effect(run_worker: RunWorker) -> None:
    async with run_worker(_plan()) as stack:
        handle = await stack.start("apply a, charge 7 eur, tell", ALWAYS)
        await _awaiting(handle)
        await handle.execute_update(
            SagaWorkflow.reject, ApprovalDecision(by="bo", reason="too expensive")
        )
        result = await handle.result()
    assert result.status == SagaStatus.REJECTED
    assert result.approval == ApprovalState.REJECTED
    assert result.error == "plan rejected: bo: too expensive"
    assert effects.log_of(stack.effects, handle.id) == []


async def test_stale_hash_is_refused(run_worker: RunWorker) -> None:
    async with run_worker(_plan()) as stack:
        handle = await stack.start("apply a, charge 7 eur, tell", ALWAYS)
        seen = await _awaiting(handle)
        with pytest.raises(WorkflowUpdateFailedError) as refused:
            await handle.execute_update(
                SagaWorkflow.approve, ApprovalDecision(plan_hash="0123456789abcdef")
            )
        assert "stale plan hash" in str(refused.value.cause)
        # An edit changes the plan, and with it the hash: the old one no longer approves.
        edited = await handle.execute_update(
            SagaWorkflow.edit_step,
            StepEdit(plan_hash=seen.plan_hash or "", step_id="a", args={"name": "edited"}),
        )
        assert edited.plan_hash != seen.plan_hash
        with pytest.raises(WorkflowUpdateFailedError):
            await handle.execute_update(
                SagaWorkflow.approve, ApprovalDecision(plan_hash=seen.plan_hash)
            )
        # An edit past the policy is refused too.
        with pytest.raises(WorkflowUpdateFailedError):
            await handle.execute_update(
                SagaWorkflow.edit_step,
                StepEdit(
                    plan_hash=edited.plan_hash or "",
                    step_id="pay",
                    args={"name": "p", "amount": 700, "currency": "eur", "extra": 1},
                ),
            )
        assert effects.log_of(stack.effects, handle.id) == []
        await handle.execute_update(
            SagaWorkflow.approve, ApprovalDecision(plan_hash=edited.plan_hash)
        )
        result = await handle.result()
    assert result.status == SagaStatus.COMPLETED, result
    names = [e["name"] for e in effects.effects_of(stack.effects, handle.id)]
    assert names == ["edited", "p"]


async def test_an_edit_is_checked_by_the_worker_and_a_refused_one_changes_nothing(
    run_worker: RunWorker,
) -> None:
    async with run_worker(_plan()) as stack:
        handle = await stack.start("apply a, charge 7 eur, tell", ALWAYS)
        seen = await _awaiting(handle)
        with pytest.raises(WorkflowUpdateFailedError) as refused:
            await handle.execute_update(
                SagaWorkflow.edit_step,
                StepEdit(
                    plan_hash=seen.plan_hash or "",
                    step_id="pay",
                    args={"name": "p", "amount": "700", "extra": 1},
                ),
            )
        # One line, every problem, as the validator said it before the worker checked.
        cause = refused.value.cause
        assert isinstance(cause, ApplicationError) and cause.type == "PlanRejected"
        assert cause.message == (
            "step 'pay' (money.charge): args.amount: Input should be a valid integer, "
            "got a string; step 'pay' (money.charge): args.currency: Field required; "
            "step 'pay' (money.charge): args.extra: Extra inputs are not permitted"
        )
        after = await handle.query(SagaWorkflow.state)
        assert after.plan == seen.plan and after.plan_hash == seen.plan_hash
        assert after.approval == ApprovalState.PENDING
        # Cheap checks stay in the validator: no step, a stale hash.
        for edit, why in [
            (StepEdit(plan_hash=seen.plan_hash or "", step_id="zz", args={}), "no step 'zz'"),
            (StepEdit(plan_hash="0123456789abcdef", step_id="a", args={}), "stale plan hash"),
        ]:
            with pytest.raises(WorkflowUpdateFailedError) as refused:
                await handle.execute_update(SagaWorkflow.edit_step, edit)
            assert why in str(refused.value.cause)
        await handle.execute_update(
            SagaWorkflow.edit_step,
            StepEdit(plan_hash=seen.plan_hash or "", step_id="a", args={"name": "b"}),
        )
        await handle.execute_update(SagaWorkflow.reject, ApprovalDecision(by="test"))
        result = await handle.result()
    assert result.status == SagaStatus.REJECTED
    # Start, the refused edit and the accepted one: each a check by the worker.
    history = await handle.fetch_history()
    assert local_activities(history) == ["saga_check_plan"] * 4 + ["record_saga_outcome"]


async def test_cancel_while_waiting_for_approval(run_worker: RunWorker) -> None:
    async with run_worker(_plan()) as stack:
        handle = await stack.start("apply a, charge 7 eur, tell", ALWAYS)
        await _awaiting(handle)
        await handle.cancel()
        result = await wait_saga(stack.client, handle.id)
    assert result.status == SagaStatus.CANCELLED
    assert result.error == "cancelled before any step ran"
    assert effects.log_of(stack.effects, handle.id) == []


async def test_no_answer_within_the_timeout_means_rejected(run_worker: RunWorker) -> None:
    """A day-long approval window passes in a moment on the time-skipping server."""
    async with await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=saga.test_server_binary(),
        data_converter=saga.data_converter(SESSION_KEYS),
    ) as env:
        model = _plan()
        async with run_worker(model, base=env.client) as stack:
            policy = Policy(approval=ApprovalMode.ALWAYS, approval_timeout_seconds=24 * 3600)
            handle = await stack.start("apply a, charge 7 eur, tell", policy)
            result = await handle.result()
    assert result.status == SagaStatus.REJECTED, result
    assert result.approval == ApprovalState.TIMED_OUT
    assert result.error == "no approval within the timeout"
    assert len(model.calls) == 1
    assert effects.log_of(stack.effects, handle.id) == []
