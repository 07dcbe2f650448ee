"""The approval gate: a person approves, rejects or edits a plan before any step runs.

A part of :class:`saga.SagaWorkflow` (a base class): the wait for the decision, and
the updates that bring it. Workflow code only: whether a plan needs approval, and an
edited plan's check, are the worker's answers (local activity ``saga_check_plan``).
"""

from __future__ import annotations

import builtins
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.exceptions import ApplicationError

from saga._indexing import Indexing

with workflow.unsafe.imports_passed_through():
    from saga._catalog import catalog
    from saga._errors import PlanRejected
    from saga._models import (
        ApprovalDecision,
        ApprovalState,
        CheckedPlan,
        CheckInput,
        Plan,
        SagaInput,
        SagaResult,
        SagaStatus,
        StepEdit,
        StepSpec,
        StepStatus,
    )
    from saga._plan import check_plan, step_specs, with_args
    from saga._plan_check import CHECK_PLAN
    from saga._policy import Policy, needs_approval, plan_hash


async def check_on_worker(raw: Any, policy: Policy, *, planned: bool = False) -> CheckedPlan:
    """A worker's check of ``raw`` (None: what it can do) within ``policy``, as the local
    activity ``saga_check_plan``, recorded in history; ``planned``: a planner's candidate
    (see :class:`CheckInput`)."""
    answer: CheckedPlan = await workflow.execute_local_activity(
        CHECK_PLAN,
        CheckInput(plan=raw, policy=policy, planned=planned),
        start_to_close_timeout=timedelta(seconds=10),
        result_type=CheckedPlan,
    )
    return answer


class ApprovalGate(Indexing):
    """Holds a checked plan until a person decides, if the policy asks for that."""

    _state: SagaResult
    _input: SagaInput
    _policy: Policy
    _specs: dict[str, StepSpec]
    _checked_by_worker: bool
    """The plan was checked by the worker (``saga_check_plan``); False: a pre-patch saga."""
    _needs_approval: bool
    """The worker's answer: must a person approve the plan?"""

    async def _check(self, raw: Any, *, planned: bool = False) -> CheckedPlan:
        """The worker's check of ``raw`` against the starter's policy."""
        answer = await check_on_worker(raw, self._input.policy, planned=planned)
        self._take_check(answer)
        return answer

    async def _approved(self, plan: Plan) -> Plan | None:
        """``plan`` as a person approved it (maybe edited), if the policy asks for that."""
        policy = self._policy
        if self._checked_by_worker:
            needed = self._needs_approval
        else:  # pre-patch path: this process's catalog
            needed = needs_approval(plan, policy, catalog)
        if not needed:
            return plan
        self._state.approval = ApprovalState.PENDING
        self._state.status = SagaStatus.AWAITING_APPROVAL
        timeout = timedelta(seconds=policy.approval_timeout_seconds)
        try:
            self._state.approval_deadline = workflow.now() + timeout
        except OverflowError:  # a timeout past the year 9999: no deadline to show
            self._state.approval_deadline = None
        try:
            await workflow.wait_condition(
                lambda: self._state.approval is not ApprovalState.PENDING, timeout=timeout
            )
        except builtins.TimeoutError:
            self._state.approval = ApprovalState.TIMED_OUT
            return self._reject([], "no approval within the timeout")
        if self._state.approval is not ApprovalState.APPROVED:
            return self._reject([], f"plan rejected: {self._state.approval_note or ''}")
        return self._state.plan

    def _reject(self, problems: list[str], error: str) -> Plan | None:
        """Record why there is no plan to run; returns None for `return self._reject(...)`."""
        self._state.problems = list(problems)
        self._state.error = error.rstrip(": ")
        return None

    @workflow.update
    def approve(self, decision: ApprovalDecision) -> SagaResult:
        """Approve exactly the plan whose hash the person saw."""
        self._state.approval = ApprovalState.APPROVED
        self._state.approval_note = f"approved by {decision.by or 'operator'}"
        return self._state

    @approve.validator
    def _validate_approve(self, decision: ApprovalDecision) -> None:
        self._must_await_approval()
        if decision.plan_hash != self._state.plan_hash:
            raise ValueError(
                f"stale plan hash {decision.plan_hash!r}: the plan is now "
                f"{self._state.plan_hash!r}; review it again"
            )
        starter = self._input.started_by
        if self._policy.four_eyes:  # the person who started it cannot approve it
            if decision.by is None:
                raise ValueError("four eyes: the approval must say who approves")
            if decision.by == starter:
                raise ValueError(
                    f"four eyes: {starter} started this saga and cannot approve it; "
                    "another person must"
                )

    @workflow.update
    def reject(self, decision: ApprovalDecision) -> SagaResult:
        self._state.approval = ApprovalState.REJECTED
        who = decision.by or "operator"
        self._state.approval_note = f"{who}: {decision.reason or 'no reason given'}"
        return self._state

    @reject.validator
    def _validate_reject(self, decision: ApprovalDecision) -> None:
        self._must_await_approval()

    @workflow.update
    async def edit_step(self, edit: StepEdit) -> SagaResult:
        """Change one step's arguments (within catalog and policy); approval starts over.

        The worker checks the edited plan (a local activity); a rejected edit fails the
        update with the problems and changes nothing."""
        assert self._state.plan is not None
        if not self._checked_by_worker:  # pre-patch path: checked here, no command
            self._state.plan = self._edited_before_check(edit)
            self._specs = step_specs(self._state.plan, catalog)
            self._state.plan_hash = plan_hash(self._state.plan)
            return self._state
        checked = await self._check(with_args(self._state.plan, edit.step_id, edit.args))
        if checked.plan is None:
            raise ApplicationError(
                "; ".join(checked.problems),
                type="PolicyBreached" if checked.policy_breached else "PlanRejected",
                non_retryable=True,
            )
        try:  # the plan may have been approved, or edited, while the worker checked
            self._validate_edit(edit)
        except ValueError as exc:
            raise ApplicationError(str(exc), type="StaleEdit", non_retryable=True) from None
        self._state.plan = checked.plan
        self._specs = {**self._specs, **checked.specs}  # a re-plan keeps its failed step's
        self._needs_approval = checked.needs_approval
        self._state.plan_hash = plan_hash(checked.plan)
        return self._state

    @edit_step.validator
    def _validate_edit(self, edit: StepEdit) -> None:
        """The cheap checks; the plan itself is checked by the worker, in the handler."""
        self._must_await_approval()
        if edit.plan_hash != self._state.plan_hash:
            raise ValueError(f"stale plan hash {edit.plan_hash!r}")
        assert self._state.plan is not None
        if not isinstance(edit.args, dict):
            raise ValueError("args must be an object")
        ran = next((s for s in self._state.steps if s.id == edit.step_id), None)
        if ran is not None and ran.status is not StepStatus.PENDING:
            # Approving a re-plan: only its new steps are open to edits.
            raise ValueError(f"step {edit.step_id!r} already ran ({ran.status.value})")
        try:
            with_args(self._state.plan, edit.step_id, edit.args)
        except KeyError as exc:
            raise ValueError(exc.args[0]) from None
        if not self._checked_by_worker:
            self._edited_before_check(edit)

    def _edited_before_check(self, edit: StepEdit) -> Plan:
        """Pre-patch path: the edited plan checked against this process's catalog."""
        assert self._state.plan is not None
        try:
            raw = with_args(self._state.plan, edit.step_id, edit.args)
            return check_plan(raw, catalog, self._policy)
        except KeyError as exc:
            raise ValueError(exc.args[0]) from None
        except PlanRejected as exc:
            raise ValueError("; ".join(exc.problems)) from None

    def _must_await_approval(self) -> None:
        if self._state.approval is not ApprovalState.PENDING:
            raise ValueError(f"the plan is not waiting for approval ({self._state.approval.value})")
