"""Policy guardrails: what a plan may do, and when a person must approve it first.

Applied to every plan, hand-written or planned by the model, after catalog validation:
whatever the model returns, nothing outside the policy runs.
"""

from __future__ import annotations

import enum
import hashlib
import json

from pydantic import BaseModel, ConfigDict, Field

from saga._catalog import ActionKind, Catalog
from saga._money import CURRENCIES, Currency
from saga._plan_model import Plan, Step


class PolicyViolation(Exception):
    """A step the policy cannot read; reported as a problem, never let through."""


class ApprovalMode(enum.StrEnum):
    ALWAYS = "always"
    NEVER = "never"
    RISKY = "risky"
    """Only plans with a pivot step, or an amount over the approval threshold."""


class Policy(BaseModel):
    """Guardrails for plans. Amounts are in the currency's minor unit (cents)."""

    model_config = ConfigDict(extra="forbid")
    allowed_actions: list[str] | None = Field(
        None, description="Actions a plan may use; None allows the whole catalog."
    )
    max_amount_per_step: int | None = Field(None, ge=0)
    max_amount_per_saga: int | None = Field(None, ge=0)
    currencies: list[Currency] | None = Field(None, description="Allowed ISO 4217 codes.")
    max_steps: int = Field(20, ge=1, le=100)
    approval: ApprovalMode = ApprovalMode.NEVER
    approval_threshold: int | None = Field(
        None, ge=0, description="With approval=risky: amounts above this need approval."
    )
    approval_timeout_seconds: float = Field(
        24 * 3600, gt=0, description="No answer within this time means rejected."
    )
    max_repairs: int = Field(2, ge=0, le=5, description="Model repair turns for bad plans.")
    max_lookups: int = Field(
        8, ge=0, le=50, description="Read-only look-ups the planner may call for one plan."
    )
    max_turns: int = Field(
        12, ge=1, le=50, description="Act mode: the agent's model calls (turns), at most."
    )
    four_eyes: bool = Field(
        False,
        description="Whoever started a saga cannot approve it: approval needs a second "
        "person (approvals carry the approver's identity).",
    )
    max_replans: int = Field(
        1,
        ge=0,
        le=5,
        description="Times the planner may propose the rest of a plan after a step failed "
        "for a business reason (card declined, out of stock); 0 undoes at once.",
    )


_APPROVAL_ORDER = [ApprovalMode.NEVER, ApprovalMode.RISKY, ApprovalMode.ALWAYS]


def _least(a: int | None, b: int | None) -> int | None:
    return b if a is None else a if b is None else min(a, b)


def _common(a: list[str] | None, b: list[str] | None) -> list[str] | None:
    return b if a is None else a if b is None else [x for x in a if x in b]


def stricter(policy: Policy, floor: Policy) -> Policy:
    """What both policies allow: the starter's ``policy`` held to the workers' ``floor``.

    Whoever starts a saga passes a policy; the workers' own (``SAGA_POLICY_FILE`` where
    they run) is a floor that no starter can loosen.
    """
    approval = max(policy.approval, floor.approval, key=_APPROVAL_ORDER.index)
    return Policy(
        allowed_actions=_common(policy.allowed_actions, floor.allowed_actions),
        max_amount_per_step=_least(policy.max_amount_per_step, floor.max_amount_per_step),
        max_amount_per_saga=_least(policy.max_amount_per_saga, floor.max_amount_per_saga),
        currencies=_common(policy.currencies, floor.currencies),
        max_steps=min(policy.max_steps, floor.max_steps),
        approval=approval,
        approval_threshold=_least(
            policy.approval_threshold if policy.approval is approval else None,
            floor.approval_threshold if floor.approval is approval else None,
        ),
        approval_timeout_seconds=min(
            policy.approval_timeout_seconds, floor.approval_timeout_seconds
        ),
        max_repairs=min(policy.max_repairs, floor.max_repairs),
        max_lookups=min(policy.max_lookups, floor.max_lookups),
        max_replans=min(policy.max_replans, floor.max_replans),
        max_turns=min(policy.max_turns, floor.max_turns),
        four_eyes=policy.four_eyes or floor.four_eyes,
    )


def _money(step: Step, catalog: Catalog) -> tuple[list[int], list[str]]:
    """The step's amounts and currencies, read from its validated args.

    A step whose action is unknown, or whose money the validation did not leave as an
    integer and an ISO code, cannot be checked: that is a ``PolicyViolation``, never a
    silent pass.
    """
    spec = catalog.get(step.action)
    if spec is None:
        raise PolicyViolation(f"step {step.id!r}: unknown action {step.action!r}")
    amounts, currencies = spec.amounts(step.args), spec.currencies(step.args)
    for amount in amounts:
        if type(amount) is not int:
            raise PolicyViolation(f"step {step.id!r}: amount {amount!r} is not an integer")
    for currency in currencies:
        if not isinstance(currency, str) or currency.upper() not in CURRENCIES:
            raise PolicyViolation(f"step {step.id!r}: currency {currency!r} is not ISO 4217")
    return amounts, currencies


def check_policy(plan: Plan, policy: Policy, catalog: Catalog) -> list[str]:
    """Every way the plan breaks the policy, one line each; empty when it complies.

    ``plan`` is what :func:`~saga.validate_plan` returned: the policy reads the same
    validated values the activities will receive.
    """
    problems: list[str] = []
    if len(plan.steps) > policy.max_steps:
        problems.append(f"plan: {len(plan.steps)} steps, policy allows {policy.max_steps}")
    total = 0
    allowed_currencies = {c.lower() for c in policy.currencies or []}
    for step in plan.steps:
        label = f"step {step.id!r}"
        if policy.allowed_actions is not None and step.action not in policy.allowed_actions:
            problems.append(f"{label}: action {step.action} is not allowed by policy")
        try:
            amounts, currencies = _money(step, catalog)
        except PolicyViolation as exc:
            problems.append(str(exc))
            continue
        for amount in amounts:
            total += amount
            if policy.max_amount_per_step is not None and amount > policy.max_amount_per_step:
                problems.append(
                    f"{label}: amount {amount} is over the per-step limit "
                    f"{policy.max_amount_per_step}"
                )
        for currency in currencies:
            if allowed_currencies and currency.lower() not in allowed_currencies:
                problems.append(f"{label}: currency {currency} is not allowed by policy")
    if policy.max_amount_per_saga is not None and total > policy.max_amount_per_saga:
        problems.append(
            f"plan: total amount {total} is over the per-saga limit {policy.max_amount_per_saga}"
        )
    return problems


def risky_steps(plan: Plan, policy: Policy, catalog: Catalog) -> list[str]:
    """The ids of the steps that, each on its own, the policy wants a person to approve:
    every step under ``always``; under ``risky`` a pivot, an unknown action, money that
    cannot be read, or an amount over the threshold."""
    if policy.approval is ApprovalMode.ALWAYS:
        return [step.id for step in plan.steps]
    if policy.approval is ApprovalMode.NEVER:
        return []
    threshold = policy.approval_threshold
    risky: list[str] = []
    for step in plan.steps:
        spec = catalog.get(step.action)
        if spec is None or spec.kind is ActionKind.PIVOT:
            risky.append(step.id)
            continue
        try:
            amounts, _ = _money(step, catalog)
        except PolicyViolation:
            risky.append(step.id)  # what cannot be read is shown to a person
            continue
        if threshold is not None and any(amount > threshold for amount in amounts):
            risky.append(step.id)
    return risky


def needs_approval(plan: Plan, policy: Policy, catalog: Catalog) -> bool:
    return policy.approval is ApprovalMode.ALWAYS or bool(risky_steps(plan, policy, catalog))


def plan_hash(plan: Plan) -> str:
    """A short stable hash of exactly what a person is asked to approve."""
    canonical = json.dumps(plan.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]
