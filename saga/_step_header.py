"""Step identity, sent from the workflow to the activity in a Temporal header.

The workflow starts a step's activity (or its compensation) with :func:`start_step`; a
workflow outbound interceptor (installed by :class:`saga.LedgerInterceptor`) adds the
``saga-step`` header: which step, in which role and round, and what the ledger
interceptor on the activity side needs of its spec (action, delivery, time-outs, the
failure budget). The activity side reads it with :func:`read_header`, so it neither
parses activity ids nor looks the activity up in the catalog.

The header is plain JSON, not run through the payload converter or codec: it holds no
arguments and no personal data, only names, numbers and time-outs.
"""

from __future__ import annotations

import asyncio
import contextvars
import enum
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError
from temporalio import workflow
from temporalio.api.common.v1 import Payload
from temporalio.exceptions import ActivityError, ApplicationError, CancelledError, TimeoutError
from temporalio.worker import (
    Interceptor,
    StartActivityInput,
    WorkflowInboundInterceptor,
    WorkflowInterceptorClassInput,
    WorkflowOutboundInterceptor,
)

from saga._catalog import Catalog, Delivery
from saga._models import Retry, StepSpec
from saga._plan import step_spec

STEP_HEADER = "saga-step"
DELIVERY_UNCERTAIN = "DeliveryUncertain"
"""Error type of an at-most-once step that an earlier attempt may have delivered; its
details are the evidence (a dict) and the external id the attempt recorded."""
COMPENSATE = ":compensate:"
"""``<step id>:compensate:<round>``: the activity id of a step's compensation."""
RESEND = ":resend:"
"""``<step id>:resend:<round>``: the activity id of an operator's "do it again" of a step
parked as uncertain (round 0, the plain step id, is the saga's own run of it)."""


class StepRole(enum.StrEnum):
    FORWARD = "forward"
    """The saga's own run of the step (round 0)."""
    RESEND = "resend"
    """An operator's "do it again" of a step parked as uncertain (round 1, 2, ...)."""
    COMPENSATE = "compensate"
    """The step's compensation (round 1, and one more per operator retry)."""


class StepHeader(BaseModel):
    """Who an activity runs for, and the part of its step's spec the activity side uses."""

    model_config = ConfigDict(frozen=True)
    step_id: str
    role: StepRole
    round: int
    action: str
    delivery: Delivery
    timeout: timedelta
    """Start-to-close time-out of this activity (the step's, or its compensation's)."""
    heartbeat_timeout: timedelta | None
    retry: Retry
    """Its ``maximum_attempts`` is the failure budget the ledger interceptor spends."""

    @property
    def compensating(self) -> bool:
        return self.role is StepRole.COMPENSATE

    @classmethod
    def forward(cls, spec: StepSpec, round_: int = 0) -> StepHeader:
        return cls(
            step_id=spec.step_id,
            role=StepRole.RESEND if round_ else StepRole.FORWARD,
            round=round_,
            action=spec.action,
            delivery=spec.delivery,
            timeout=spec.start_to_close_timeout,
            heartbeat_timeout=spec.heartbeat_timeout,
            retry=spec.retry,
        )

    @classmethod
    def compensation(cls, spec: StepSpec, round_: int) -> StepHeader:
        return cls(
            step_id=spec.step_id,
            role=StepRole.COMPENSATE,
            round=round_,
            action=spec.action,
            delivery=spec.delivery,
            timeout=spec.compensation_timeout,
            heartbeat_timeout=spec.heartbeat_timeout,
            retry=spec.compensation_retry,
        )

    def payload(self) -> Payload:
        return Payload(metadata={"encoding": b"json/plain"}, data=self.model_dump_json().encode())


def read_header(headers: Mapping[str, Payload]) -> StepHeader | None:
    """The step header among an activity's ``headers``; None when there is none (or it
    is not one this release can read)."""
    payload = headers.get(STEP_HEADER)
    if payload is None:
        return None
    try:
        return StepHeader.model_validate_json(payload.data)
    except ValidationError:
        return None


def step_from_ids(activity_type: str, activity_id: str, cat: Catalog) -> StepHeader | None:
    """The step of an activity scheduled without a ``saga-step`` header, or None.

    Fallback for activities in flight across a deploy (scheduled by a release that sent
    no header): their identity is parsed from the activity id as those releases wrote
    it (``<step>``, ``<step>:resend:<n>``, ``<step>:compensate:<n>``), their spec found
    in the catalog by activity name.
    """
    spec = cat.by_activity(activity_type)
    if spec is not None:
        step_id, _, resend = activity_id.partition(RESEND)
        return StepHeader.forward(step_spec(step_id, spec), int(resend or 0))
    for spec in cat:
        if spec.compensation == activity_type:
            step_id, _, round_ = activity_id.partition(COMPENSATE)
            return StepHeader.compensation(step_spec(step_id, spec), int(round_ or 1))
    return None


def parked(exc: BaseException) -> tuple[dict[str, Any], str | None] | None:
    """The evidence and external id of an at-most-once step that an earlier attempt may
    have delivered (the ledger interceptor's ``DeliveryUncertain``), else None."""
    cause = exc.cause if isinstance(exc, ActivityError) else None
    if not isinstance(cause, ApplicationError) or cause.type != DELIVERY_UNCERTAIN:
        return None
    details = list(cause.details)
    evidence = details[0] if details and isinstance(details[0], dict) else {}
    external_id = details[1] if len(details) > 1 and isinstance(details[1], str) else None
    return evidence, external_id


def cause_text(exc: BaseException) -> str:
    """The innermost useful message of an activity failure."""
    while isinstance(exc, ActivityError) and exc.cause is not None:
        exc = exc.cause
    if isinstance(exc, ApplicationError):
        kind = f"{exc.type}: " if exc.type else ""
        return f"{kind}{exc.message}"
    if isinstance(exc, TimeoutError):
        return f"timed out ({exc.type.name if exc.type else 'timeout'})"
    if isinstance(exc, CancelledError | asyncio.CancelledError):
        return "cancelled"
    return str(exc) or type(exc).__name__


OUT_OF_RETRIES = "out of retries"
"""Ends the message of a failure the engine made final (retries spent, timed out)."""
TIMED_OUT = "StartToCloseTimeout"


def business_failure(exc: BaseException) -> ApplicationError | None:
    """The action's own final refusal behind a step failure (a card declined, out of
    stock: an ``ApplicationError`` it raised as non-retryable), else None: time-outs,
    spent retries, lost workers and cancellations are not the business's answer."""
    cause = exc.cause if isinstance(exc, ActivityError) else None
    if not isinstance(cause, ApplicationError) or not cause.non_retryable:
        return None
    if cause.type in (TIMED_OUT, DELIVERY_UNCERTAIN) or cause.message.rstrip(")").endswith(
        OUT_OF_RETRIES
    ):
        return None
    return cause


_outgoing: contextvars.ContextVar[StepHeader | None] = contextvars.ContextVar(
    "saga_step_header", default=None
)


def start_step(header: StepHeader, activity: str, **options: Any) -> workflow.ActivityHandle[Any]:
    """``workflow.start_activity(activity, **options)`` with ``header`` attached.

    Issues the same command as before the header existed (the header is not part of
    what replay compares), so recorded histories replay unchanged.
    """
    token = _outgoing.set(header)
    try:
        return workflow.start_activity(activity, **options)
    finally:
        _outgoing.reset(token)


def start_forward(
    spec: StepSpec, args: dict[str, Any], round_: int = 0, activity_id: str | None = None
) -> workflow.ActivityHandle[Any]:
    """Start step ``spec``'s action (its ``round_``: 0, or an operator's resend) with its
    header, time-outs and retry policy (attempts lost with a dead worker uncapped: the
    ledger interceptor spends the budget on real failures only)."""
    return start_step(
        StepHeader.forward(spec, round_),
        spec.activity,
        arg=args,
        activity_id=activity_id or spec.step_id,
        start_to_close_timeout=spec.start_to_close_timeout,
        heartbeat_timeout=spec.heartbeat_timeout,
        retry_policy=spec.retry.unbounded(),
        cancellation_type=workflow.ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
    )


def start_compensation(
    spec: StepSpec, args: dict[str, Any], result: Any, round_: int
) -> workflow.ActivityHandle[Any]:
    """Start round ``round_`` of undoing step ``spec`` (given its args and result)."""
    assert spec.compensation is not None
    return start_step(
        StepHeader.compensation(spec, round_),
        spec.compensation,
        args=[args, result],
        activity_id=f"{spec.step_id}{COMPENSATE}{round_}",
        start_to_close_timeout=spec.compensation_timeout,
        heartbeat_timeout=spec.heartbeat_timeout,
        retry_policy=spec.compensation_retry.unbounded(),
    )


class _HeaderOutbound(WorkflowOutboundInterceptor):
    def start_activity(self, input: StartActivityInput) -> workflow.ActivityHandle[Any]:
        header = _outgoing.get()
        if header is not None:
            input.headers = {**input.headers, STEP_HEADER: header.payload()}
        return super().start_activity(input)


class StepHeaderInbound(WorkflowInboundInterceptor):
    """Installs the outbound interceptor that adds the step header."""

    def init(self, outbound: WorkflowOutboundInterceptor) -> None:
        super().init(_HeaderOutbound(outbound))


class StepHeaders(Interceptor):
    """Sends the step header from workflow code (:class:`saga.LedgerInterceptor` does
    this too; this one alone serves a worker or replayer without a ledger)."""

    def workflow_interceptor_class(
        self, input: WorkflowInterceptorClassInput
    ) -> type[WorkflowInboundInterceptor]:
        return StepHeaderInbound
