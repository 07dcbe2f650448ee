"""Policy guardrails: what a plan may do, and when a person must approve it first.

Applied to every plan, hand-written or planned by the model, after catalog validation:
whatever the model returns, nothing outside the policy runs.
"""

from __future__ import annotations

import enum
import hashlib
import json
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from saga._catalog import ActionKind, Catalog

if TYPE_CHECKING:
    from saga._models import Plan


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
    currencies: list[str] | None = Field(None, description="Allowed ISO currency codes.")
    max_steps: int = Field(20, ge=1, le=100)
    approval: ApprovalMode = ApprovalMode.NEVER
    approval_threshold: int | None = Field(
        None, ge=0, description="With approval=risky: amounts above this need approval."
    )
    approval_timeout_seconds: float = Field(
        24 * 3600, gt=0, description="No answer within this time means rejected."
    )
    max_repairs: int = Field(2, ge=0, le=5, description="Model repair turns for bad plans.")


def _amount(args: dict[str, Any]) -> int | None:
    value = args.get("amount")
    return value if isinstance(value, int) else None


def check_policy(plan: Plan, policy: Policy) -> list[str]:
    """Every way the plan breaks the policy, one line each; empty when it complies."""
    problems: list[str] = []
    if len(plan.steps) > policy.max_steps:
        problems.append(f"plan: {len(plan.steps)} steps, policy allows {policy.max_steps}")
    total = 0
    currencies = {c.lower() for c in policy.currencies or []}
    for step in plan.steps:
        label = f"step {step.id!r}"
        if policy.allowed_actions is not None and step.action not in policy.allowed_actions:
            problems.append(f"{label}: action {step.action} is not allowed by policy")
        amount = _amount(step.args)
        if amount is not None:
            total += amount
            if policy.max_amount_per_step is not None and amount > policy.max_amount_per_step:
                problems.append(
                    f"{label}: amount {amount} is over the per-step limit "
                    f"{policy.max_amount_per_step}"
                )
        currency = step.args.get("currency")
        if currencies and isinstance(currency, str) and currency.lower() not in currencies:
            problems.append(f"{label}: currency {currency} is not allowed by policy")
    if policy.max_amount_per_saga is not None and total > policy.max_amount_per_saga:
        problems.append(
            f"plan: total amount {total} is over the per-saga limit {policy.max_amount_per_saga}"
        )
    return problems


def needs_approval(plan: Plan, policy: Policy, catalog: Catalog) -> bool:
    if policy.approval is ApprovalMode.ALWAYS:
        return True
    if policy.approval is ApprovalMode.NEVER:
        return False
    for step in plan.steps:
        spec = catalog.get(step.action)
        if spec is not None and spec.kind is ActionKind.PIVOT:
            return True
        amount = _amount(step.args)
        threshold = policy.approval_threshold
        if amount is not None and threshold is not None and amount > threshold:
            return True
    return False


def plan_hash(plan: Plan) -> str:
    """A short stable hash of exactly what a person is asked to approve."""
    canonical = json.dumps(plan.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]
