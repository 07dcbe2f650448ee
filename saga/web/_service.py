"""What the web app does to sagas: list, look, approve, reject, cancel, retry, resolve.

Every answer is a redacted view of the saga's live state (the workflow's `state` query),
with the Temporal execution status beside it: the saga's status says where the plan is,
the execution status says whether the workflow is still open.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel, Field
from temporalio.api.enums.v1 import EventType
from temporalio.client import (
    Client,
    WorkflowExecutionDescription,
    WorkflowExecutionStatus,
    WorkflowHandle,
    WorkflowUpdateFailedError,
)
from temporalio.service import RPCError, RPCStatusCode

from saga._errors import SagaError
from saga._listing import SagaRow, list_sagas
from saga._models import (
    ApprovalDecision,
    ApprovalState,
    OperatorAction,
    SagaResult,
    SagaStatus,
)
from saga._outcome import ALREADY_COMPLETED, outcome, plural
from saga._redact import redact
from saga._workflow import SagaWorkflow

QUERY_TIMEOUT = timedelta(seconds=5)
_UNWINDING = frozenset({SagaStatus.COMPENSATING, SagaStatus.NEEDS_ATTENTION})


class SagaNotFound(SagaError):
    """No workflow with that id."""


class SagaConflict(SagaError):
    """The saga is not in a state that allows the operation."""


class SagaSummary(SagaRow):
    """One row of the saga list: the saga's own status, what it does, its amount."""

    took_seconds: float | None = Field(
        None, description="From start to close (to now while it runs)."
    )


class SagaView(BaseModel):
    """A saga as an operator sees it: its (redacted) state and what can be done."""

    saga_id: str
    execution: str = Field(description="Temporal execution status: running, completed, ...")
    closed: bool
    started_at: datetime | None = None
    closed_at: datetime | None = None
    cancel_requested: bool = Field(
        False, description="A cancel was requested (known once the saga has closed)."
    )
    outcome: str | None = Field(None, description="One line on how it ended, or what it needs.")
    can_cancel: bool
    can_approve: bool
    state: SagaResult


class CancelOutcome(BaseModel):
    """What a cancel did."""

    cancelled: bool | None = Field(
        description="True: cancelled and compensated; False: nothing was cancelled; "
        "None: cancel requested, compensation still running."
    )
    message: str
    saga: SagaView


def _execution(status: WorkflowExecutionStatus | None) -> str:
    return status.name.lower() if status is not None else "unknown"


def _already(view: SagaView) -> str:
    """Why a cancel of a closed saga changed nothing."""
    status = view.state.status
    if status == SagaStatus.COMPLETED:
        return ALREADY_COMPLETED
    if status == SagaStatus.CANCELLED:
        n = len(view.state.compensated_steps)
        return f"already cancelled: {plural(n, 'step')} compensated"
    return f"already closed ({status.value}): nothing was cancelled"


class SagaService:
    """Saga operations over one Temporal client; closed sagas are cached (they never change)."""

    def __init__(self, client: Client, *, cache_size: int = 500) -> None:
        self.client = client
        self._closed: OrderedDict[str, SagaView] = OrderedDict()
        self._cache_size = cache_size

    def _handle(self, saga_id: str) -> WorkflowHandle[SagaWorkflow, SagaResult]:
        return self.client.get_workflow_handle_for(SagaWorkflow.run, saga_id)

    async def list(
        self,
        limit: int = 50,
        *,
        statuses: Sequence[str] = (),
        words: str | None = None,
        min_amount: int | None = None,
    ) -> list[SagaSummary]:
        """Sagas newest first, filtered by status, words and least amount (see
        :func:`saga._listing.list_sagas`)."""
        rows = await list_sagas(
            self.client, statuses=statuses, words=words, min_amount=min_amount, limit=limit
        )
        return [SagaSummary(**r.model_dump(), took_seconds=r.took()) for r in rows]

    async def _describe(self, saga_id: str) -> WorkflowExecutionDescription:
        try:
            return await self._handle(saga_id).describe()
        except RPCError as exc:
            if exc.status in (RPCStatusCode.NOT_FOUND, RPCStatusCode.INVALID_ARGUMENT):
                raise SagaNotFound(f"no saga {saga_id!r}") from None
            raise

    async def view(self, saga_id: str) -> SagaView:
        cached = self._closed.get(saga_id)
        if cached is not None:
            return cached
        desc = await self._describe(saga_id)
        handle = self._handle(saga_id)
        execution = _execution(desc.status)
        closed = desc.status != WorkflowExecutionStatus.RUNNING
        state = await self._state(handle, desc)
        cancel_requested = closed and await self._cancel_was_requested(handle)
        safe = SagaResult.model_validate(redact(state.model_dump(mode="json")))
        view = SagaView(
            saga_id=saga_id,
            execution=execution,
            closed=closed,
            started_at=desc.start_time,
            closed_at=desc.close_time,
            cancel_requested=cancel_requested,
            outcome=outcome(state, execution, cancel_requested),
            # Compensation is already under way once it is compensating: nothing to cancel.
            # A step parked as uncertain waits before any undo: cancel is one of the answers.
            can_cancel=not closed
            and not state.status.final
            and (state.status not in _UNWINDING or bool(state.uncertain_steps)),
            can_approve=not closed and state.approval == ApprovalState.PENDING,
            state=safe,
        )
        if closed:
            self._closed[saga_id] = view
            while len(self._closed) > self._cache_size:
                self._closed.popitem(last=False)
        return view

    async def _state(
        self, handle: WorkflowHandle[SagaWorkflow, SagaResult], desc: WorkflowExecutionDescription
    ) -> SagaResult:
        try:
            return await handle.query(SagaWorkflow.state, rpc_timeout=QUERY_TIMEOUT)
        except Exception:
            if desc.status == WorkflowExecutionStatus.RUNNING:
                # Not picked up by a worker yet: nothing has run.
                return SagaResult(saga_id=handle.id, status=SagaStatus.PENDING)
            if desc.status == WorkflowExecutionStatus.COMPLETED:
                return await handle.result()
            raise

    async def _cancel_was_requested(self, handle: WorkflowHandle[Any, Any]) -> bool:
        """Whether the history of a closed saga holds a cancel request."""
        async for event in handle.fetch_history_events():
            if event.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CANCEL_REQUESTED:
                return True
        return False

    # -- mutations -----------------------------------------------------------------------
    async def cancel(self, saga_id: str, *, wait: float = 0.0, by: str = "web") -> CancelOutcome:
        """Cancel a running saga; a closed one is reported as it ended, nothing changes.

        The race with completion is settled by the final state: describe first (closed ->
        say so); if the cancel then finds the workflow closed, or the workflow completes
        although the cancel was delivered, the final state says what happened.
        """
        desc = await self._describe(saga_id)
        if desc.status != WorkflowExecutionStatus.RUNNING:
            view = await self.view(saga_id)
            return CancelOutcome(cancelled=False, message=_already(view), saga=view)
        try:
            await self._handle(saga_id).cancel(reason=f"cancelled by {by}")
        except RPCError:
            view = await self.view(saga_id)
            if view.closed:  # it completed between describe and cancel
                return CancelOutcome(cancelled=False, message=_already(view), saga=view)
            raise
        deadline = asyncio.get_running_loop().time() + max(0.0, wait)
        view = await self.view(saga_id)
        while not view.closed and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.2)
            view = await self.view(saga_id)
        if not view.closed:
            return CancelOutcome(
                cancelled=None,
                message="cancel requested: compensating completed steps in reverse order",
                saga=view,
            )
        if view.state.status == SagaStatus.CANCELLED:
            return CancelOutcome(cancelled=True, message=view.outcome or "cancelled", saga=view)
        return CancelOutcome(cancelled=False, message=_already(view), saga=view)

    async def _update(self, saga_id: str, update: Any, arg: BaseModel) -> SagaView:
        await self._describe(saga_id)
        try:
            await self._handle(saga_id).execute_update(update, arg)
        except WorkflowUpdateFailedError as exc:
            cause = exc.cause
            message = getattr(cause, "message", None) or str(cause or exc)
            raise SagaConflict(message) from None
        except RPCError as exc:
            if exc.status in (RPCStatusCode.NOT_FOUND, RPCStatusCode.FAILED_PRECONDITION):
                raise SagaConflict(f"the saga has closed: {exc.message}") from None
            raise
        return await self.view(saga_id)

    async def approve(self, saga_id: str, plan_hash: str, by: str) -> SagaView:
        return await self._update(
            saga_id, SagaWorkflow.approve, ApprovalDecision(plan_hash=plan_hash, by=by)
        )

    async def reject(self, saga_id: str, reason: str | None, by: str) -> SagaView:
        return await self._update(
            saga_id, SagaWorkflow.reject, ApprovalDecision(reason=reason, by=by)
        )

    async def retry(self, saga_id: str, step_id: str) -> SagaView:
        return await self._update(
            saga_id, SagaWorkflow.retry_compensation, OperatorAction(step_id=step_id)
        )

    async def resolve(self, saga_id: str, step_id: str, note: str | None) -> SagaView:
        return await self._update(
            saga_id, SagaWorkflow.resolve_compensation, OperatorAction(step_id=step_id, note=note)
        )
