"""The worker's side of a plan check: what the workflow asks in ``saga_check_plan``.

The workflow reads no catalog of its own: a worker answers, as a local activity, with
the same :func:`~saga.check_plan`, :func:`~saga._plan.step_specs` and
:func:`~saga._policy.needs_approval` as everywhere else, and the answer is recorded in
history. A replay reads it back, whatever catalog the replaying process holds.
"""

from __future__ import annotations

from typing import Any

from saga._catalog import Catalog
from saga._errors import PlanRejected, PolicyBreached
from saga._models import CheckedPlan, CheckInput, WorkerCapabilities
from saga._plan import check_plan, step_specs
from saga._policy import Policy, needs_approval, risky_steps, stricter
from saga._summary import plan_amount, plan_summary

CHECK_PLAN = "saga_check_plan"
"""Registered on every worker (a local activity): the plan checked there, see CheckedPlan."""


def planner_catalog(cat: Catalog, policy: Policy) -> list[dict[str, Any]]:
    """The actions of ``cat`` that ``policy`` allows, as the planner is shown them."""
    allowed = policy.allowed_actions
    return [spec.describe() for spec in cat if allowed is None or spec.name in allowed]


def answer_check(inp: CheckInput, cat: Catalog, caps: WorkerCapabilities) -> CheckedPlan:
    """The answer of a worker with catalog ``cat`` and capabilities ``caps``."""
    policy = inp.policy if caps.policy is None else stricter(inp.policy, caps.policy)
    answer = CheckedPlan(actions=caps.actions, policy=policy)
    offered = cat if caps.actions is None else cat.only(caps.actions)
    if inp.plan is None:
        answer.catalog = planner_catalog(offered, policy)
        return answer
    try:
        if inp.planned:  # the same verdict; an unavailable action is not named as such
            check_plan(inp.plan, offered, policy)
        plan = check_plan(inp.plan, cat, policy, available=caps.actions)
    except PlanRejected as exc:  # PolicyBreached included
        answer.problems = list(exc.problems)
        answer.policy_breached = isinstance(exc, PolicyBreached)
        return answer
    answer.plan = plan
    answer.specs = step_specs(plan, cat)
    answer.risky = risky_steps(plan, policy, cat)
    answer.needs_approval = needs_approval(plan, policy, cat)
    described = [(spec, step.args) for step in plan.steps if (spec := cat.get(step.action))]
    answer.summary = plan_summary(described)
    answer.amount, answer.currency = plan_amount(described)
    return answer
