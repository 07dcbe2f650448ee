"""The saga's first stage: the plan, checked by a worker before anything runs.

A part of :class:`saga.SagaWorkflow` (a base class, as the approval gate is). Workflow
code only, and it reads no catalog: a hand-written plan is checked in one local activity
(``saga_check_plan``: the worker's actions and policy, the check, the step specs, whether
a person must approve), whose answer history records. A request first asks the worker
what the planner may use, and each plan the planner proposes is checked the same way.
Sagas started before that (no ``worker-checks-plan`` marker) replay on the pre-patch
path at the end of this module.
"""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.exceptions import ActivityError, CancelledError

with workflow.unsafe.imports_passed_through():
    from saga._approval import ApprovalGate
    from saga._catalog import ActionKind, catalog
    from saga._errors import PlanRejected, PolicyBreached
    from saga._limits import saga_input_problems
    from saga._models import (
        CheckedPlan,
        LookupRecord,
        Plan,
        SagaInput,
        SagaStatus,
        StepStatus,
        WorkerCapabilities,
    )
    from saga._plan import check_plan, step_specs
    from saga._plan_check import planner_catalog
    from saga._policy import Policy, plan_hash, stricter
    from saga._step_header import business_failure, cause_text, start_forward
    from saga.planner._agent import NO_VALID_PLAN, plan_problems, plan_with_agent

WORKER_CAPABILITIES = "saga_worker_capabilities"
"""Registered on every worker (a local activity): the actions it can run, its policy.
Asked by sagas started before ``saga_check_plan`` (replays) only."""
CHECKS_PLAN = "worker-checks-plan"
"""The patch: the worker checks the plan (``saga_check_plan``); the workflow reads no
catalog."""
REPLANS = "replan-after-business-failure"
"""The patch: a step's business failure may get the rest of the plan re-planned."""
LOOKUP_ARGS_CHARS = 2000
"""A look-up's arguments as the model wrote them, at most (more is refused unread)."""
SITUATION_CHARS = 8000
"""What the model is told of a failed saga's steps, at most."""


class Planning(ApprovalGate):
    """Obtains the saga's plan: given, or planned from the request; checked either way."""

    _cancel_requested: bool

    async def _undo_now(self, step_id: str) -> None:
        raise NotImplementedError  # the saga workflow's: undo one step at once

    async def _obtain_plan(self, inp: SagaInput) -> Plan | None:
        """The validated, policy-checked plan, or None."""
        refused = saga_input_problems(inp)
        if refused:  # started around start_saga: refused before the request grows payloads
            return self._reject(refused, "input refused")
        if inp.plan is None and not inp.request:
            return self._reject(["saga: give a plan or a request"], "plan rejected")
        if not workflow.patched(CHECKS_PLAN):
            return await self._obtain_plan_before_check(inp)
        self._checked_by_worker = True
        if inp.plan is not None:
            checked = await self._check(inp.plan)  # one local activity does it all
        else:
            assert inp.request is not None
            offer = await self._check(None)
            self._policy = offer.policy
            self._state.status = SagaStatus.PLANNING
            answers: list[CheckedPlan] = []

            async def check(candidate: dict[str, Any]) -> list[str]:
                answers.append(await self._check(candidate, planned=True))
                return answers[-1].problems

            planned = await plan_with_agent(
                inp.request,
                offer.policy,
                offer.catalog or [],
                check,
                lookup=self._lookup,
                on_turn=self._turn,
            )
            self._state.planner = planned.planner
            self._count(planned.model_calls, planned.tokens)
            if planned.plan is None:
                return self._reject(planned.problems, planned.error or NO_VALID_PLAN)
            checked = answers[-1]  # the planner returns the plan it had checked last
        self._policy = checked.policy
        if checked.plan is None:
            breached = checked.policy_breached
            return self._reject(
                checked.problems, "plan breaks the policy" if breached else "plan rejected"
            )
        self._specs = checked.specs
        self._needs_approval = checked.needs_approval
        self._state.plan = checked.plan
        self._state.plan_hash = plan_hash(checked.plan)
        return checked.plan

    def _turn(self, line: str) -> None:
        self._state.turns = [*self._state.turns, line]

    def _count(self, model_calls: int, tokens: int) -> None:
        self._state.model_calls += model_calls
        self._state.tokens += tokens

    async def _lookup(self, action: str, args: dict[str, Any]) -> dict[str, Any]:
        """One look-up the planner called: checked by a worker as a one-step plan, then
        run as a read-only step on the ledger (step id ``lookup:<n>``, which no plan step
        can have). Refusals and failures are answers for the model, not the saga's end."""
        record = LookupRecord(id=f"lookup:{len(self._state.lookups) + 1}", action=action)
        self._state.lookups = [*self._state.lookups, record]
        if len(json.dumps(args, default=str)) > LOOKUP_ARGS_CHARS:
            record.error = f"arguments over {LOOKUP_ARGS_CHARS} characters"
            return {"error": f"refused: {record.error}"}
        record.args = args
        one = {"steps": [{"id": "lookup", "action": action, "args": args}]}
        checked = await self._check(one, planned=True)
        spec = checked.specs.get("lookup")
        if checked.plan is None or spec is None:
            record.error = "; ".join(checked.problems) or "refused"
            return {"error": f"refused: {record.error}"}
        if spec.kind is not ActionKind.READ_ONLY:
            record.error = f"{action} is not a look-up: it changes something"
            return {"error": f"refused: {record.error}"}
        spec = spec.model_copy(update={"step_id": record.id})
        record.args = checked.plan.steps[0].args
        try:
            result = await start_forward(spec, record.args)
        except ActivityError as exc:
            if isinstance(exc.cause, CancelledError):  # the saga is cancelled: stop here
                raise asyncio.CancelledError("saga cancelled mid-look-up") from None
            record.error = cause_text(exc)
            return {"error": record.error}
        record.result = result if isinstance(result, dict) else {"value": result}
        return {"result": record.result}

    async def _replanned(self, failed: str, exc: BaseException) -> Plan | None:
        """After step ``failed`` failed for a business reason (a card declined, out of
        stock): the whole new plan, i.e. the steps that ran followed by the rest the
        planner proposes, checked by a worker with them (their amounts count) and
        approved again if the policy asks. None: unwind as before."""
        refusal = business_failure(exc)
        request = self._input.request
        if refusal is None or not request or len(self._state.replans) >= self._policy.max_replans:
            return None
        if not workflow.patched(REPLANS):
            return None
        # The failed step may have taken effect before it failed: undone first, so the
        # saga goes on from a world where it did not happen.
        await self._undo_now(failed)
        if self._cancel_requested:
            return None
        steps = self._state.steps
        ran = [s for s in steps if s.status is StepStatus.SUCCEEDED]
        failing = next(s for s in steps if s.id == failed)
        dropped = [s.id for s in steps if s.status is StepStatus.PENDING]
        taken = {s.id for s in steps}
        done = [{"id": s.id, "action": s.action, "args": s.args} for s in ran]
        status, self._state.status = self._state.status, SagaStatus.PLANNING
        offer = await self._check(None)
        answers: list[CheckedPlan] = []

        async def check(candidate: dict[str, Any]) -> list[str]:
            new = [s for s in candidate.get("steps", []) if isinstance(s, dict)]
            clash = sorted(str(s.get("id")) for s in new if s.get("id") in taken)
            if clash:
                return [f"step id {c!r} is taken in this saga: use a new id" for c in clash]
            options = self._state.options.model_dump(mode="json")
            answers.append(
                await self._check({"steps": [*done, *new], "options": options}, planned=True)
            )
            return answers[-1].problems

        situation = json.dumps(
            {
                "ran": [{**d, "result": s.result} for d, s in zip(done, ran, strict=True)],
                "failed": {"id": failed, "action": failing.action, "args": failing.args},
                "error": cause_text(exc),
                "dropped": dropped,
            },
            default=str,
        )[:SITUATION_CHARS]
        planned = await plan_with_agent(
            request,
            offer.policy,
            offer.catalog or [],
            check,
            lookup=self._lookup,
            on_turn=self._turn,
            situation="A step of the saga failed. What ran (it stays and counts against "
            "the policy), what failed and why, and what will not run now:\n"
            f"{situation}\nReturn only the steps still needed, with new ids, or say in "
            "`cannot_plan` why the request cannot be done now.",
        )
        self._count(planned.model_calls, planned.tokens)
        if planned.plan is None:
            why = "; ".join([planned.error or NO_VALID_PLAN, *planned.problems])
            self._state.replans = [*self._state.replans, f"{failed}: {refusal.message}: {why}"]
            self._state.status = status
            return None
        checked = answers[-1]
        assert checked.plan is not None
        added = [s.id for s in checked.plan.steps[len(done) :]]
        self._state.replans = [
            *self._state.replans,
            f"{failed}: {refusal.message}: re-planned as {', '.join(added) or 'nothing more'}",
        ]
        self._specs = {**self._specs, **checked.specs}
        self._needs_approval = checked.needs_approval
        self._state.plan = checked.plan
        self._state.plan_hash = plan_hash(checked.plan)
        approved = await self._approved(checked.plan)
        self._state.status = status
        return approved

    # -- the pre-patch path: sagas started before ``worker-checks-plan`` ---------------
    # They checked their plan in workflow code against this process's ``catalog``; kept
    # so that their histories replay (tests/histories). New sagas never come here.
    async def _obtain_plan_before_check(self, inp: SagaInput) -> Plan | None:
        raw = inp.plan
        available, policy = await self._capabilities(inp.policy)
        self._policy = policy
        if raw is None:
            assert inp.request is not None
            self._state.status = SagaStatus.PLANNING
            cat = catalog if available is None else catalog.only(available)

            async def check(candidate: dict[str, Any]) -> list[str]:
                return plan_problems(candidate, policy, cat)

            planned = await plan_with_agent(
                inp.request, policy, planner_catalog(cat, policy), check
            )
            self._state.planner = planned.planner
            if planned.plan is None:
                return self._reject(planned.problems, planned.error or NO_VALID_PLAN)
            raw = planned.plan
        try:
            plan = check_plan(raw, catalog, policy, available=available)
        except PolicyBreached as exc:
            return self._reject(exc.problems, "plan breaks the policy")
        except PlanRejected as exc:
            return self._reject(exc.problems, "plan rejected")
        self._specs = step_specs(plan, catalog)
        self._state.plan = plan
        self._state.plan_hash = plan_hash(plan)
        return plan

    async def _capabilities(self, policy: Policy) -> tuple[list[str] | None, Policy]:
        """Pre-patch: the actions this saga's workers can run, and ``policy`` held to
        theirs (a local activity). Sagas started before this check existed replay
        without it (``None``, their own policy)."""
        if not workflow.patched("worker-capabilities"):
            return None, policy
        caps: WorkerCapabilities = await workflow.execute_local_activity(
            WORKER_CAPABILITIES,
            start_to_close_timeout=timedelta(seconds=10),
            result_type=WorkerCapabilities,
        )
        return caps.actions, policy if caps.policy is None else stricter(policy, caps.policy)
