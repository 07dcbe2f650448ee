"""SagaWorkflow: run a validated plan; on failure or cancellation, undo in reverse order.

Each compensable step registers its compensation *before* its activity is scheduled,
so a step that took effect and then failed, timed out or was cancelled is undone too.
Compensation runs in a task shielded from workflow cancellation: a cancel that arrives
mid-compensation cannot stop the unwinding, and the saga still closes as CANCELED.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from datetime import timedelta
from typing import Any, TypeVar

from temporalio import workflow
from temporalio.exceptions import ActivityError, CancelledError

with workflow.unsafe.imports_passed_through():
    from saga._acting import Acting
    from saga._catalog import ActionKind
    from saga._compensations import Compensations, Operator, finish
    from saga._limits import saga_input_problems
    from saga._models import (
        CompensationStatus,
        OperatorAction,
        Plan,
        SagaInput,
        SagaMode,
        SagaOutcome,
        SagaResult,
        SagaStatus,
        StepSpec,
        StepState,
        StepStatus,
    )
    from saga._step_header import RESEND, parked, start_compensation, start_forward
    from saga._step_header import cause_text as _cause

RECORD_SAGA = "record_saga_outcome"
T = TypeVar("T")


@workflow.defn
class SagaWorkflow(Acting):
    @workflow.init
    def __init__(self, inp: SagaInput) -> None:
        self._state = SagaResult(
            saga_id=workflow.info().workflow_id,
            status=SagaStatus.PENDING,
            request=inp.request,
        )
        self._steps: dict[str, StepState] = {}
        self._compensations = Compensations()
        self._operator = Operator()
        self._cancel_requested = False
        self._policy = inp.policy
        self._input = inp
        self._specs: dict[str, StepSpec] = {}
        """Each step's spec, as the worker that checked the plan resolved it."""
        self._checked_by_worker = False
        self._needs_approval = False

    # -- live state and operator updates ---------------------------------------------
    @workflow.query
    def state(self) -> SagaResult:
        return self._state

    def _waits_for_operator(self, action: OperatorAction) -> None:
        self._operator.check(self._steps.get(action.step_id), action.step_id)

    @workflow.update
    async def retry_compensation(self, action: OperatorAction) -> SagaResult:
        """Give a stuck compensation a fresh retry budget; or run a step parked as
        uncertain again (it may then have taken effect twice)."""
        await self._operator.decide(action, resolved=False)
        return self._state

    @workflow.update
    async def resolve_compensation(self, action: OperatorAction) -> SagaResult:
        """Mark a stuck compensation as resolved by hand; or confirm that a step parked as
        uncertain did take effect (it counts as succeeded). The saga moves on."""
        await self._operator.decide(action, resolved=True)
        return self._state

    retry_compensation.validator(_waits_for_operator)
    resolve_compensation.validator(_waits_for_operator)

    # -- the saga ----------------------------------------------------------------------
    @workflow.run
    async def run(self, inp: SagaInput) -> SagaResult:
        if inp.mode is SagaMode.ACT:
            return await self._run_acting(inp)
        try:
            plan = await self._obtain_plan(inp)
            if plan is not None:
                plan = await self._approved(plan)
        except asyncio.CancelledError:
            self._state.status = SagaStatus.CANCELLED
            self._state.error = "cancelled before any step ran"
            await self._close()
            raise
        if plan is None:
            return await self._closed(SagaStatus.REJECTED)
        self._start(plan)
        failure = await self._run_steps(plan)
        if failure is None:
            return await self._closed(SagaStatus.COMPLETED)
        return await self._undone(failure)

    async def _run_acting(self, inp: SagaInput) -> SagaResult:
        """Act mode: the agent acts until it answers; undone if it gives up or fails."""
        self._state.mode = inp.mode
        refused = saga_input_problems(inp)
        if refused or not inp.request:
            self._reject(refused or ["saga: act mode needs a request"], "input refused")
            return await self._closed(SagaStatus.REJECTED)
        try:
            failure = await self._act(inp.request)
        except asyncio.CancelledError:
            self._cancel_requested = True
            failure = "cancelled"
        if failure is None:
            return await self._closed(SagaStatus.COMPLETED)
        return await self._undone(failure)

    async def _undone(self, failure: str) -> SagaResult:
        """Unwind, then close as compensated (or cancelled, re-raising the cancel)."""
        await self._unwind(failure)
        if self._cancel_requested or workflow.cancellation_reason() is not None:
            await self._closed(SagaStatus.CANCELLED)
            raise asyncio.CancelledError("saga cancelled; every effect compensated")
        return await self._closed(SagaStatus.COMPENSATED)

    async def _run_steps(self, plan: Plan) -> str | None:
        """Run the plan's steps in order; why they stopped short, or None. A step that
        fails for a business reason may get the rest of the plan re-planned."""
        pending = [step.id for step in plan.steps]
        try:
            while pending:
                step_id = pending.pop(0)
                try:
                    await self._run_step(step_id)
                except ActivityError as exc:
                    replanned = await self._replanned(step_id, exc)
                    if replanned is None:
                        raise
                    pending = self._adopt(replanned)
                    continue
                self._raise_if_cancel_swallowed()
        except asyncio.CancelledError:
            self._cancel_requested = True
            return "cancelled"
        except Exception as exc:  # eviction and interpreter exits are not ours to handle
            return _cause(exc)
        return None

    async def _unwind(self, failure: str) -> None:
        """Undo every registered step; a cancel meanwhile cannot stop it."""
        workflow.logger.info("saga %s unwinding: %s", self._state.saga_id, failure)
        self._state.error = failure
        self._state.status = SagaStatus.COMPENSATING
        await self._uncancellable(self._compensate_all())

    async def _closed(self, status: SagaStatus) -> SagaResult:
        self._state.status = status
        await self._close()
        return self._state

    # -- approval gate -----------------------------------------------------------------
    def _start(self, plan: Plan) -> None:
        self._state.options = plan.options
        self._compensations = Compensations(parallel=plan.options.parallel_compensation)
        self._state.status = SagaStatus.RUNNING
        steps = [StepState(id=s.id, action=s.action, args=s.args) for s in plan.steps]
        self._steps = {s.id: s for s in steps}
        # Assigned, not appended: the agents plugin's converter drops unset fields.
        self._state.steps = steps

    async def _undo_now(self, step_id: str) -> None:
        """Undo one failed step before the saga goes on without it: a step can fail
        after it took effect. A cancel meanwhile cannot stop it (it is remembered)."""
        if self._compensations.remove(step_id):
            await self._uncancellable(self._compensate(step_id))

    def _adopt(self, plan: Plan) -> list[str]:
        """Take on a re-planned ``plan`` (the steps that ran, then new ones): the old
        plan's steps that did not run are dropped; the ids of the new steps to run."""
        self._state.status = SagaStatus.RUNNING
        for state in self._state.steps:
            if state.status is StepStatus.PENDING:
                state.status = StepStatus.SKIPPED
                state.error = "dropped by a re-plan"
        added = [
            StepState(id=s.id, action=s.action, args=s.args)
            for s in plan.steps
            if s.id not in self._steps
        ]
        self._steps.update((s.id, s) for s in added)
        self._state.steps = [*self._state.steps, *added]
        return [s.id for s in added]

    def _raise_if_cancel_swallowed(self) -> None:
        # sdk-python #620/#1224: a cancel delivered in the same task as an activity
        # completion can be swallowed by the await; the reason still says it came.
        if workflow.cancellation_reason() is not None:
            raise asyncio.CancelledError("workflow cancellation requested")

    async def _run_step(self, step_id: str) -> None:
        state = self._steps[step_id]
        spec = self._specs[step_id]
        if spec.kind is ActionKind.COMPENSABLE:
            self._compensations.add(step_id)  # registered before the step runs
            state.compensation = CompensationStatus.REGISTERED
        state.status = StepStatus.RUNNING
        state.started_at = workflow.now()
        try:
            if spec.timer:
                await workflow.sleep(timedelta(seconds=float(state.args["seconds"])))
                result: Any = None
            else:
                result = await self._execute(spec, state)
        except BaseException as exc:
            if state.status is StepStatus.UNCERTAIN:
                raise  # cancelled while parked: it may have taken effect, so it stays so
            cancelled = isinstance(exc, asyncio.CancelledError) or (
                isinstance(exc, ActivityError) and isinstance(exc.cause, CancelledError)
            )
            state.status = StepStatus.CANCELLED if cancelled else StepStatus.FAILED
            state.error = "cancelled" if cancelled else _cause(exc)
            state.ended_at = workflow.now()
            raise
        state.status = StepStatus.SUCCEEDED
        state.ended_at = workflow.now()
        if isinstance(result, dict):
            state.result = result
            ext = result.get("external_id")
            state.external_id = None if ext is None else str(ext)

    async def _execute(self, spec: StepSpec, state: StepState) -> Any:
        """The step's activity. A step parked as uncertain (it may have taken effect and
        must not be repeated unasked) waits for an operator: confirmed, it counts as done
        (result None); retried, it runs again as a new round with its own activity id."""
        activity_id = state.id
        round_ = 0
        while True:
            try:
                return await start_forward(spec, state.args, round_, activity_id)
            except ActivityError as exc:
                found = parked(exc)
                if found is None:
                    raise
                state.evidence, external_id = found
                state.external_id = external_id or state.external_id
                state.status = StepStatus.UNCERTAIN
                state.error = _cause(exc)
            if await self._await_operator(state.id):
                return None
            round_ += 1
            activity_id = f"{state.id}{RESEND}{round_}"

    async def _compensate_all(self) -> None:
        for state in self._steps.values():
            if state.status is StepStatus.PENDING:
                state.status = StepStatus.SKIPPED
        await self._compensations.compensate(self._compensate)

    async def _compensate(self, step_id: str) -> None:
        state = self._steps[step_id]
        spec = self._specs[step_id]
        assert spec.compensation is not None
        round_ = 0
        while True:
            round_ += 1
            state.compensation = CompensationStatus.RUNNING
            try:
                undo = await start_compensation(spec, state.args, state.result, round_)
            except ActivityError as exc:
                state.compensation = CompensationStatus.FAILED
                state.compensation_error = _cause(exc)
                state.compensation_attempts += spec.compensation_retry.maximum_attempts
                if not await self._await_operator(step_id):
                    continue
                return
            state.compensation = CompensationStatus.COMPENSATED
            state.compensation_error = None
            state.compensation_result = undo if isinstance(undo, dict) else None
            state.compensated_at = workflow.now()
            return

    async def _await_operator(self, step_id: str) -> bool:
        """needs_attention until an operator decides on a stuck compensation or a step
        parked as uncertain; True when they resolved it by hand (for the parked step: it
        did take effect). The decision shows in the state the operator's update returns."""
        state = self._steps[step_id]
        parked = state.status is StepStatus.UNCERTAIN
        workflow.logger.warning(
            "step %s (%s) needs an operator: %s",
            step_id,
            state.external_id,
            state.error if parked else state.compensation_error,
        )
        self._state.status = SagaStatus.NEEDS_ATTENTION
        await self._record()
        if parked:  # a cancel that came meanwhile is the answer (unwinding ignores it)
            self._raise_if_cancel_swallowed()
        decision = await self._operator.wait(step_id)
        resolved, note = decision.resolved, decision.note
        if parked:
            state.status = StepStatus.SUCCEEDED if resolved else StepStatus.RUNNING
            state.error = None
            if resolved:
                state.operator_note = note
            self._state.status = SagaStatus.RUNNING
        else:
            if resolved:
                state.compensation = CompensationStatus.RESOLVED
                state.operator_note = note
                state.compensated_at = workflow.now()
            if not any(
                s.compensation == CompensationStatus.FAILED and s.id != step_id
                for s in self._state.steps
            ):
                self._state.status = SagaStatus.COMPENSATING
        self._operator.done(step_id)
        return resolved

    async def _close(self) -> None:
        """Before the saga closes: let update handlers still running return, then record.

        An operator's update issued as the saga ends gets its answer rather than "workflow
        completed before the update finished". Neither wait can be cut short by a cancel.
        With no handler running the wait adds no command, so histories replay unchanged.
        """
        await self._uncancellable(workflow.wait_condition(workflow.all_handlers_finished))
        self._index()
        await self._record()

    async def _record(self) -> None:
        """Write the saga's status to the ledger; a cancel cannot interrupt it."""
        await self._uncancellable(
            workflow.execute_local_activity(
                RECORD_SAGA,
                SagaOutcome(
                    saga_id=self._state.saga_id,
                    status=self._state.status,
                    error=self._state.error,
                    request=self._input.request,
                    plan=self._input.plan,
                    model_calls=self._state.model_calls,
                    tokens=self._state.tokens,
                ),
                start_to_close_timeout=timedelta(seconds=30),
            )
        )

    async def _uncancellable(self, work: Awaitable[T]) -> T:
        """``work`` to its end; a cancel meanwhile is remembered (the saga then closes
        as cancelled)."""
        return await finish(work, self._note_cancel)

    def _note_cancel(self) -> None:
        self._cancel_requested = True
