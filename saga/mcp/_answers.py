"""What the MCP tools answer: the catalog with its undo in plain words, a plan's check,
a saga's state in a few lines, with the page where a person can act on it."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from saga._catalog import ActionKind, ActionSpec, Delivery
from saga._listing import WORLD
from saga._models import CompensationStatus, SagaStatus, StepStatus
from saga._summary import money_text
from saga.web._service import SagaView

WaitingFor = Literal["approval", "operator"]


class ActionInfo(BaseModel):
    """One action a plan may name."""

    action: str
    kind: ActionKind
    pivot: bool = Field(
        description="True: it cannot be undone, so every step that can be undone must "
        "come before it (an email sent stays sent)."
    )
    description: str
    undo: str = Field(description="What undoing this step does, in plain words.")
    delivery: Delivery = Field(description="What a retry after a lost answer promises.")
    args_schema: dict[str, Any]


def action_info(spec: ActionSpec) -> ActionInfo:
    if spec.kind is ActionKind.COMPENSABLE:
        undo = spec.undo or f"undone by {spec.compensation}"
    elif spec.kind is ActionKind.PIVOT:
        undo = (
            "cannot be undone; once it ran, a failure later does not undo what came "
            "before it, so the plan must put it after every step that can be undone"
        )
    else:
        undo = "nothing to undo: it changes nothing"
    return ActionInfo(
        action=spec.name,
        kind=spec.kind,
        pivot=spec.kind is ActionKind.PIVOT,
        description=spec.description,
        undo=undo,
        delivery=spec.delivery,
        args_schema=spec.input_model.model_json_schema(),
    )


class PlanCheck(BaseModel):
    """A plan checked as a start would check it; nothing ran."""

    valid: bool
    problems: list[str] = Field(description="One line per problem, each naming its step.")
    needs_approval: bool = Field(
        False, description="A person must approve it before any step runs (the policy)."
    )
    approval_steps: list[str] = Field(
        default_factory=list, description="The steps that make the policy ask a person."
    )
    plan_hash: str | None = None
    summary: str | None = None
    amount: int = Field(0, description="The plan's total amount, in minor units.")
    currency: str | None = None
    message: str


class StepLine(BaseModel):
    """One step of a saga, as far as it got."""

    id: str
    action: str
    status: StepStatus
    external_id: str | None = Field(None, description="The effect's id in its system.")
    undo: CompensationStatus = Field(
        description="none, registered, running, compensated (undone), failed, resolved."
    )
    error: str | None = None


class SagaAnswer(BaseModel):
    """A saga's state, for an agent: where it is, what it means, what comes next."""

    saga_id: str
    status: SagaStatus
    world: str = Field(description="What the status means outside: done, undone, ...")
    finished: bool = Field(description="True: it has ended and will not change again.")
    waiting_for: WaitingFor | None = Field(
        None,
        description="approval: a person must approve the plan on its page (no tool does); "
        "operator: a person must settle a step on its page.",
    )
    message: str = Field(description="One line on how it ended or what it waits for.")
    page: str = Field(description="The saga's page in the web app.")
    summary: str | None = None
    amount: int = 0
    amount_text: str | None = None
    plan_hash: str | None = None
    steps: list[StepLine] = Field(default_factory=list)
    problems: list[str] = Field(
        default_factory=list, description="Why its plan was rejected, one per line."
    )
    error: str | None = None
    can_cancel: bool = False


def saga_answer(view: SagaView, page: str) -> SagaAnswer:
    """The few lines an agent needs of a saga's (already redacted) view."""
    state = view.state
    waiting: WaitingFor | None = None
    if not view.closed and state.status is SagaStatus.AWAITING_APPROVAL:
        waiting = "approval"
    elif not view.closed and state.status is SagaStatus.NEEDS_ATTENTION:
        waiting = "operator"
    line = view.outcome  # saga._outcome's line, computed with the view
    if waiting == "approval":
        line = (
            f"waiting for a person to approve the plan (hash {state.plan_hash}) at {page}; "
            "nothing has run, and approving is not a tool"
        )
    elif waiting == "operator":
        line = f"{line}; a person settles it at {page}"
    elif line is None:
        done = sum(1 for s in state.steps if s.status is StepStatus.SUCCEEDED)
        line = f"{state.status.value}: {done} of {len(state.steps)} steps done"
    return SagaAnswer(
        saga_id=view.saga_id,
        status=state.status,
        world=WORLD.get(state.status, state.status.value),
        finished=view.closed,
        waiting_for=waiting,
        message=line,
        page=page,
        summary=state.summary,
        amount=state.amount,
        amount_text=money_text(state.amount, state.currency) if state.amount else None,
        plan_hash=state.plan_hash,
        steps=[
            StepLine(
                id=s.id,
                action=s.action,
                status=s.status,
                external_id=s.external_id,
                undo=s.compensation,
                error=s.error or s.compensation_error,
            )
            for s in state.steps
        ],
        problems=state.problems,
        error=state.error,
        can_cancel=view.can_cancel,
    )


class Started(BaseModel):
    """A saga that was started; it runs on without the caller."""

    saga_id: str
    status: Literal["started"] = "started"
    page: str
    resource: str = Field(description="Its live state as an MCP resource.")
    message: str
