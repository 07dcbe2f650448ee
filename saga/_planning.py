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

from datetime import timedelta
from typing import Any

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from saga._approval import ApprovalGate
    from saga._catalog import catalog
    from saga._errors import PlanRejected, PolicyBreached
    from saga._limits import saga_input_problems
    from saga._models import CheckedPlan, Plan, SagaInput, SagaStatus, WorkerCapabilities
    from saga._plan import check_plan, step_specs
    from saga._plan_check import planner_catalog
    from saga._policy import Policy, plan_hash, stricter
    from saga.planner._agent import NO_VALID_PLAN, plan_problems, plan_with_agent

WORKER_CAPABILITIES = "saga_worker_capabilities"
"""Registered on every worker (a local activity): the actions it can run, its policy.
Asked by sagas started before ``saga_check_plan`` (replays) only."""
CHECKS_PLAN = "worker-checks-plan"
"""The patch: the worker checks the plan (``saga_check_plan``); the workflow reads no
catalog."""


class Planning(ApprovalGate):
    """Obtains the saga's plan: given, or planned from the request; checked either way."""

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

            planned = await plan_with_agent(inp.request, offer.policy, offer.catalog or [], check)
            self._state.planner = planned.planner
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
