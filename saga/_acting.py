"""Act mode: the agent's write calls become the saga's steps, one at a time.

A part of :class:`saga.SagaWorkflow` (a base class, as planning and the approval gate
are). Workflow code only. Each write call the agent makes is checked by a worker as the
plan "the steps that ran, then this call" (so amounts already spent count, a pivot that
ran forbids compensable calls, the step limit holds), held for a person when the policy
calls that one call risky (approved by the hash of the plan ending in it), registered for
undo before it runs, and run as a step with the id ``call-<n>`` (its order), so its
ledger key is ``<saga id>/call-<n>``. A business error goes back to the model; any other
failure ends the run, and the saga is undone.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from temporalio import workflow
from temporalio.exceptions import ActivityError, CancelledError

with workflow.unsafe.imports_passed_through():
    from saga._models import Plan, SagaStatus, StepState, StepStatus
    from saga._planning import LOOKUP_ARGS_CHARS, Planning
    from saga._policy import plan_hash
    from saga._step_header import business_failure, cause_text
    from saga.planner._act import act_with_agent


class Acting(Planning):
    """Runs a request in act mode: the agent acts, the saga keeps every write undoable."""

    _steps: dict[str, StepState]
    _abort: str | None = None
    """Why the run cannot go on (a step failed for good): the saga unwinds."""
    _write_lock: asyncio.Lock | None = None

    def _start(self, plan: Plan) -> None:
        raise NotImplementedError  # the saga workflow's

    async def _run_step(self, step_id: str) -> None:
        raise NotImplementedError  # the saga workflow's

    async def _act(self, request: str) -> str | None:
        """Let the agent do ``request``; why the saga must be undone, or None."""
        offer = await self._check(None)
        self._policy = offer.policy
        self._start(Plan(steps=[]))
        self._state.plan = Plan(steps=[])
        acted = await act_with_agent(
            request,
            offer.policy,
            offer.catalog or [],
            self._lookup,
            self._write,
            self._turn,
            agent_name=self._input.agent,
        )
        self._state.planner = acted.planner
        self._count(acted.model_calls, acted.tokens)
        if self._abort is not None:
            return self._abort
        if acted.error is not None:
            return acted.error
        self._state.answer = acted.answer
        if not acted.done:
            return f"the agent gave up: {acted.answer}"
        return None

    async def _write(self, action: str, args: dict[str, Any]) -> dict[str, Any]:
        """One write call of the agent, as the saga's next step. Calls the model makes
        at once run one after the other: each is checked with the ones before it."""
        if self._write_lock is None:
            self._write_lock = asyncio.Lock()
        async with self._write_lock:
            return await self._write_one(action, args)

    async def _write_one(self, action: str, args: dict[str, Any]) -> dict[str, Any]:
        if self._abort is not None:
            return {"error": f"refused: the saga is being undone ({self._abort})"}
        if len(json.dumps(args, default=str)) > LOOKUP_ARGS_CHARS:
            return {"error": f"refused: arguments over {LOOKUP_ARGS_CHARS} characters"}
        if len(self._state.steps) >= self._policy.max_steps:  # failed calls count too
            return {"error": f"refused: the policy allows {self._policy.max_steps} calls"}
        step_id = f"call-{len(self._state.steps) + 1}"
        ran = [s for s in self._state.steps if s.status is StepStatus.SUCCEEDED]
        done = [{"id": s.id, "action": s.action, "args": s.args} for s in ran]
        raw = {"steps": [*done, {"id": step_id, "action": action, "args": args}]}
        checked = await self._check(raw, planned=True)
        if checked.plan is None:
            return {"error": "refused: " + "; ".join(checked.problems)}
        self._specs = {**self._specs, **checked.specs}
        plan = checked.plan
        if step_id in checked.risky:  # a person approves this exact call
            self._needs_approval = True
            self._state.plan, self._state.plan_hash = plan, plan_hash(plan)
            approved = await self._approved(plan)
            self._state.status = SagaStatus.RUNNING
            if approved is None:
                why = self._state.error or "not approved"
                self._state.error, self._state.problems = None, []
                return {"error": f"refused: a person did not approve this call ({why})"}
            plan = approved  # an edit during approval changed its arguments
        call = plan.steps[-1]
        state = StepState(id=step_id, action=call.action, args=call.args)
        self._steps[step_id] = state
        self._state.steps = [*self._state.steps, state]
        self._state.plan = plan
        self._state.plan_hash = plan_hash(plan)
        try:
            await self._run_step(step_id)
        except ActivityError as exc:
            if isinstance(exc.cause, CancelledError):
                raise asyncio.CancelledError("saga cancelled mid-step") from None
            if business_failure(exc) is None:
                self._abort = f"step {step_id} ({action}): {cause_text(exc)}"
                return {"error": f"{cause_text(exc)}; the saga cannot go on and is undone"}
            await self._undo_now(step_id)  # it may have taken effect before it failed
            if self._cancel_requested:
                self._abort = "cancelled"
            return {"error": cause_text(exc)}
        if workflow.cancellation_reason() is not None:  # delivered with the step's end
            raise asyncio.CancelledError("saga cancelled")
        return {"result": state.result}
