"""Plans, live state and results: the pydantic models that cross the workflow boundary."""

from __future__ import annotations

import enum
from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from temporalio.common import RetryPolicy

from saga._catalog import ActionKind, Delivery

# The plan as data has its own module (the policy reads it too); named here as well.
from saga._plan_model import Plan as Plan
from saga._plan_model import PlanOptions as PlanOptions
from saga._plan_model import Step as Step
from saga._policy import Policy


class Retry(BaseModel):
    """A Temporal retry policy as data (it travels in the plan's step specs)."""

    model_config = ConfigDict(frozen=True)
    initial_interval: timedelta
    backoff_coefficient: float
    maximum_interval: timedelta | None = None
    maximum_attempts: int = Field(description="The budget of real failures; 0: no cap.")
    non_retryable_error_types: list[str] | None = None

    @classmethod
    def of(cls, policy: RetryPolicy) -> Retry:
        types = policy.non_retryable_error_types
        return cls(
            initial_interval=policy.initial_interval,
            backoff_coefficient=policy.backoff_coefficient,
            maximum_interval=policy.maximum_interval,
            maximum_attempts=policy.maximum_attempts,
            non_retryable_error_types=None if types is None else list(types),
        )

    def unbounded(self) -> RetryPolicy:
        """The policy as given to Temporal: the same back-off, no cap on attempts.

        Temporal counts an attempt lost with its worker (a heartbeat time-out) like any
        other; the ledger interceptor counts only real failures against
        ``maximum_attempts``, so a worker dying does not spend a step's retry budget.
        """
        return RetryPolicy(
            initial_interval=self.initial_interval,
            backoff_coefficient=self.backoff_coefficient,
            maximum_interval=self.maximum_interval,
            maximum_attempts=0,
            non_retryable_error_types=self.non_retryable_error_types,
        )


class StepSpec(BaseModel):
    """How the engine runs one step of a validated plan and undoes it: resolved from the
    catalog when the plan is checked, so running and compensating read only this."""

    model_config = ConfigDict(frozen=True)
    step_id: str
    action: str
    activity: str = Field(description="Temporal activity name; empty for a built-in.")
    kind: ActionKind
    delivery: Delivery = Delivery.EXACTLY_ONCE
    timer: bool = Field(False, description="The built-in wait: a durable timer, no activity.")
    start_to_close_timeout: timedelta
    heartbeat_timeout: timedelta | None
    retry: Retry
    compensation: str | None = None
    compensation_timeout: timedelta
    compensation_retry: Retry


class SagaMode(enum.StrEnum):
    PLAN = "plan"
    """A plan (given, or written by the planner) is checked, maybe approved, then run."""
    ACT = "act"
    """The agent acts step by step with tools; each write call is a step of the saga."""


class SagaInput(BaseModel):
    """What starts a saga: a plan, or a request the planner agent turns into one (or, in
    act mode, that the agent does step by step).

    ``plan`` stays raw so that a malformed plan is rejected with reasons, not crashed on.
    """

    plan: Any = None
    request: str | None = None
    policy: Policy = Field(default_factory=Policy)
    mode: SagaMode = SagaMode.PLAN
    started_by: str | None = Field(
        None,
        max_length=200,
        description="Who started the saga (their identity: a person, or user@host of the "
        "command line); with the policy's four_eyes they cannot approve it.",
    )
    agent: str | None = Field(
        None,
        description="Act mode: the worker's own agent of that name "
        "(saga.create_worker(agents=...)) instead of the built-in one.",
    )


class WorkerCapabilities(BaseModel):
    """What the workers that run a saga's steps can do and allow."""

    actions: list[str] | None = Field(
        description="Catalog actions they can run (configured); None: not known here "
        "(a workflow-only worker, whose steps run on other workers)."
    )
    policy: Policy | None = Field(
        None, description="Their own policy (SAGA_POLICY_FILE): a floor no starter loosens."
    )


class CheckInput(BaseModel):
    """What the workflow asks the worker to check (local activity ``saga_check_plan``)."""

    plan: Any = None
    """The raw plan to check; None: only say what the worker can do (before planning)."""
    policy: Policy = Field(default_factory=Policy)
    """The starter's policy; the worker holds it to its own floor."""
    planned: bool = False
    """A planner's candidate: checked against the actions the planner was shown, so an
    action the workers cannot run is unknown to it (as the repair feedback always said)."""


class CheckedPlan(BaseModel):
    """The worker's answer, recorded in history: the workflow decides on it alone."""

    actions: list[str] | None = Field(
        description="The actions the workers can run (see WorkerCapabilities.actions)."
    )
    policy: Policy = Field(description="The starter's policy held to the worker's own.")
    catalog: list[dict[str, Any]] | None = Field(
        None,
        description="Without a plan: the actions a planner may use (available and "
        "allowed), each as the catalog describes it.",
    )
    plan: Plan | None = Field(None, description="The plan as checked, if it passed.")
    problems: list[str] = Field(default_factory=list)
    policy_breached: bool = Field(
        False, description="A valid plan the policy does not allow (not a malformed one)."
    )
    specs: dict[str, StepSpec] = Field(default_factory=dict)
    needs_approval: bool = False
    risky: list[str] = Field(
        default_factory=list,
        description="The steps that, each on its own, the policy wants a person to approve.",
    )
    summary: str = Field("", description="What the plan does, in one line (masked).")
    amount: int = Field(0, description="The plan's total amount, in minor units.")
    currency: str | None = Field(None, description="Its currency (None: none or several).")
    search_attributes: list[str] = Field(
        default_factory=list,
        description="The saga search attributes the server has (saga._index): the saga "
        "indexes its status, summary, request and amount under them.",
    )


class SagaStatus(enum.StrEnum):
    PENDING = "pending"
    PLANNING = "planning"
    AWAITING_APPROVAL = "awaiting_approval"
    RUNNING = "running"
    COMPENSATING = "compensating"
    NEEDS_ATTENTION = "needs_attention"
    COMPLETED = "completed"
    COMPENSATED = "compensated"
    CANCELLED = "cancelled"
    REJECTED = "rejected"

    @property
    def final(self) -> bool:
        return self in _FINAL


_FINAL = {
    SagaStatus.COMPLETED,
    SagaStatus.COMPENSATED,
    SagaStatus.CANCELLED,
    SagaStatus.REJECTED,
}


class StepStatus(enum.StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    SKIPPED = "skipped"
    UNCERTAIN = "uncertain"
    """An at-most-once step that an earlier attempt may have done: not repeated unasked;
    an operator confirms it happened, has it done again, or cancels the saga."""


class CompensationStatus(enum.StrEnum):
    NONE = "none"
    """Nothing registered (read-only, pivot, or the step never started)."""
    REGISTERED = "registered"
    RUNNING = "running"
    COMPENSATED = "compensated"
    FAILED = "failed"
    """Its retry budget is spent; an operator must retry it or resolve it by hand."""
    RESOLVED = "resolved"
    """An operator marked it resolved by hand."""


class ApprovalState(enum.StrEnum):
    NOT_REQUIRED = "not_required"
    PENDING = "pending"
    APPROVED = "approved"
    REJECTED = "rejected"
    TIMED_OUT = "timed_out"


class ApprovalDecision(BaseModel):
    """A person's answer to a plan waiting for approval."""

    plan_hash: str | None = Field(None, description="Hash of the plan the person saw.")
    by: str | None = None
    reason: str | None = None


class StepEdit(BaseModel):
    """Change one step's arguments while the plan waits for approval."""

    plan_hash: str
    step_id: str
    args: dict[str, Any]


class StepState(BaseModel):
    """Live and final state of one step."""

    id: str
    action: str
    args: dict[str, Any] = Field(default_factory=dict)
    status: StepStatus = StepStatus.PENDING
    external_id: str | None = None
    result: dict[str, Any] | None = None
    error: str | None = None
    compensation: CompensationStatus = CompensationStatus.NONE
    compensation_error: str | None = None
    compensation_attempts: int = 0
    operator_note: str | None = None
    started_at: datetime | None = Field(None, description="When the step began (workflow time).")
    ended_at: datetime | None = Field(
        None, description="When it succeeded, failed or was cancelled (workflow time)."
    )
    compensation_result: dict[str, Any] | None = Field(
        None,
        description="What its compensation answered once it undid the step (a refund, a "
        "release, a closed issue), as the compensation returned it.",
    )
    compensated_at: datetime | None = Field(
        None, description="When its compensation finished, or an operator resolved it."
    )
    evidence: dict[str, Any] | None = Field(
        None,
        description="For a step parked as uncertain: the attempt that may have done it "
        "(when it started delivering, on which worker, how it ended, what to check).",
    )


class LookupRecord(BaseModel):
    """One read-only look-up the planner called before it proposed a plan."""

    id: str = Field(description="``lookup:<n>``, its ledger step id (no plan step has one).")
    action: str
    args: dict[str, Any] = Field(default_factory=dict)
    result: dict[str, Any] | None = None
    error: str | None = Field(None, description="Why it was refused or failed.")


class SagaResult(BaseModel):
    """The saga's state: returned by the live-state query and as the workflow result."""

    saga_id: str
    status: SagaStatus
    steps: list[StepState] = Field(default_factory=list)
    error: str | None = Field(None, description="Why the saga did not complete.")
    problems: list[str] = Field(
        default_factory=list, description="Why the plan was rejected, one per line."
    )
    request: str | None = None
    options: PlanOptions = Field(default_factory=PlanOptions)
    plan: Plan | None = None
    plan_hash: str | None = None
    planner: str | None = Field(None, description="Which planner wrote the plan, if any.")
    approval: ApprovalState = ApprovalState.NOT_REQUIRED
    approval_note: str | None = None
    approval_deadline: datetime | None = Field(
        None, description="When a plan waiting for approval is rejected if nobody answers."
    )
    lookups: list[LookupRecord] = Field(
        default_factory=list, description="What the planner looked up, in order."
    )
    mode: SagaMode = SagaMode.PLAN
    answer: str | None = Field(None, description="Act mode: the agent's last word.")
    model_calls: int = Field(0, description="Model calls made for this saga, in all.")
    turns: list[str] = Field(
        default_factory=list,
        description="What the model did on each call: the tools it called, what it said.",
    )
    tokens: int = Field(0, description="Tokens those calls used (their usage), in all.")
    replans: list[str] = Field(
        default_factory=list,
        description="Each re-plan after a step failed for a business reason: what failed "
        "and what the planner answered.",
    )
    summary: str | None = Field(
        None,
        description="What the saga does, in one line (masked), e.g. `2 x mug-blue, "
        "charge 25.00 EUR, email`.",
    )
    amount: int = Field(0, description="The plan's total amount, in minor units.")
    currency: str | None = Field(None, description="Its currency (None: none or several).")

    @property
    def compensated_steps(self) -> list[StepState]:
        return [s for s in self.steps if s.compensation == CompensationStatus.COMPENSATED]

    @property
    def stuck_steps(self) -> list[StepState]:
        return [s for s in self.steps if s.compensation == CompensationStatus.FAILED]

    @property
    def uncertain_steps(self) -> list[StepState]:
        """Steps parked because they may already have taken effect."""
        return [s for s in self.steps if s.status == StepStatus.UNCERTAIN]


class OperatorAction(BaseModel):
    """An operator's decision on a compensation that ran out of retries, or on a step
    parked as uncertain."""

    step_id: str
    note: str | None = None


class SagaOutcome(BaseModel):
    """What the workflow asks the ledger to record about the saga as a whole."""

    saga_id: str
    status: SagaStatus
    error: str | None = None
    request: str | None = None
    plan: Any = None
    at: datetime | None = None
    model_calls: int = Field(0, description="The saga's model calls so far (for metrics).")
    tokens: int = Field(0, description="Tokens those calls used (for metrics).")
