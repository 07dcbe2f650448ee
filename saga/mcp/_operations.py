"""What the MCP tools do, apart from the protocol: the same checks, starts, cancels and
reads as the command line and the web app, for one caller whose role is checked.

Over stdio the caller is the local user (``user@host``), as for the command line; over
HTTP it is the person whose token came with the request. Starting and cancelling are
recorded in the audit trail (``via mcp``), also when refused.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from temporalio.client import Client
from temporalio.exceptions import WorkflowAlreadyStartedError

from saga._audit import AuditEntry
from saga._catalog import catalog
from saga._client import check_start, connect_client, start_saga
from saga._errors import PlanRejected, Refused
from saga._ledger_schema import utcnow
from saga._limits import check_saga_input
from saga._models import SagaInput, SagaMode, SagaStatus
from saga._people import Permission, Person
from saga._plan import check_plan
from saga._policy import Policy, needs_approval, plan_hash, risky_steps
from saga._settings import Settings
from saga._summary import plan_amount, plan_summary
from saga.mcp._answers import (
    ActionInfo,
    PlanCheck,
    SagaAnswer,
    Started,
    action_info,
    saga_answer,
)
from saga.web._decisions import Decisions, LedgerAccess
from saga.web._roles import forbidden
from saga.web._service import SagaService, SagaSummary

T = TypeVar("T")
SAGA_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,99}")
MAX_WAIT_SECONDS = 60.0
_PERSON_NEEDED = frozenset({SagaStatus.AWAITING_APPROVAL, SagaStatus.NEEDS_ATTENTION})
Progress = Callable[[float, float | None, str], Awaitable[None]]


class ToolRefused(Refused):
    """A tool call refused before it had any effect; one line per problem."""


@dataclass(frozen=True)
class Caller:
    """Who calls the tools, and what their role lets them do."""

    person: Person
    via: str = "mcp"

    def require(self, permission: Permission) -> None:
        if not self.person.may(permission):
            raise ToolRefused([forbidden(self.person, permission)])


def saga_uri(saga_id: str) -> str:
    return f"saga://{saga_id}"


def _checked_id(saga_id: str) -> str:
    if not SAGA_ID.fullmatch(saga_id):
        raise ToolRefused(
            [f"not a saga id: {saga_id[:40]!r} (letters, digits, '.', '_', ':', '-'; 1-100)"]
        )
    return saga_id


class Operations:
    """The tools' work over one Temporal client, opened on first use."""

    def __init__(
        self,
        settings: Settings,
        policy: Policy,
        *,
        client_factory: Callable[[], Awaitable[Client]] | None = None,
    ) -> None:
        self.settings = settings
        self.policy = policy
        self._factory = client_factory or (lambda: connect_client(settings))
        self._service: SagaService | None = None
        self._lock = asyncio.Lock()
        self.ledger = LedgerAccess(settings)
        self._decisions = Decisions(self.ledger)

    async def service(self) -> SagaService:
        async with self._lock:
            if self._service is None:
                try:
                    client = await self._factory()
                except RuntimeError as exc:
                    raise ToolRefused(
                        [f"cannot reach Temporal at {self.settings.temporal_address}: {exc}"]
                    ) from None
                self._service = SagaService(client)
            return self._service

    def page(self, saga_id: str) -> str:
        return f"{self.settings.web_url.rstrip('/')}/sagas/{saga_id}"

    # -- reading -------------------------------------------------------------------------
    def list_actions(self) -> list[ActionInfo]:
        allowed = self.policy.allowed_actions
        return [action_info(spec) for spec in catalog if allowed is None or spec.name in allowed]

    def validate_plan(self, plan: Any) -> PlanCheck:
        """The start's own check (catalog, sizes, policy), and whether a person must
        approve; nothing is sent anywhere."""
        try:
            check_saga_input(SagaInput(plan=plan, policy=self.policy))
            checked = check_plan(plan, catalog, self.policy)
        except Refused as exc:
            prefix = "plan rejected: " if isinstance(exc, PlanRejected) else ""
            return PlanCheck(
                valid=False,
                problems=[f"{prefix}{p}" for p in exc.problems],
                message=f"invalid: {len(exc.problems)} problem(s); nothing ran",
            )
        specs = [(catalog.get(step.action), step.args) for step in checked.steps]
        steps = [(spec, args) for spec, args in specs if spec is not None]
        amount, currency = plan_amount(steps)
        approval = needs_approval(checked, self.policy, catalog)
        return PlanCheck(
            valid=True,
            problems=[],
            needs_approval=approval,
            approval_steps=risky_steps(checked, self.policy, catalog),
            plan_hash=plan_hash(checked),
            summary=plan_summary(steps),
            amount=amount,
            currency=currency,
            message="valid; started, it waits for a person to approve it first"
            if approval
            else "valid; start_saga runs it",
        )

    async def status(self, saga_id: str) -> SagaAnswer:
        view = await (await self.service()).view(_checked_id(saga_id))
        return saga_answer(view, self.page(saga_id))

    async def wait(
        self, saga_id: str, seconds: float, progress: Progress | None = None
    ) -> SagaAnswer:
        """Until the saga ends or waits for a person, at most ``seconds`` (up to 60);
        each change of its steps is reported to ``progress``."""
        bound = min(max(seconds, 0.0), MAX_WAIT_SECONDS)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + bound
        said: tuple[Any, ...] | None = None
        while True:
            answer = await self.status(saga_id)
            now = (answer.status, tuple((s.status, s.undo) for s in answer.steps))
            if progress is not None and now != said:
                done = sum(1 for s in answer.steps if s.status.value != "pending")
                await progress(done, len(answer.steps) or None, answer.message)
                said = now
            if answer.finished or answer.status in _PERSON_NEEDED or loop.time() >= deadline:
                return answer
            await asyncio.sleep(min(0.5, max(0.0, deadline - loop.time())))

    async def list(
        self,
        *,
        statuses: list[str],
        words: str | None,
        min_amount: int | None,
        limit: int,
    ) -> list[SagaSummary]:
        return await (await self.service()).list(
            limit, statuses=statuses, words=words, min_amount=min_amount
        )

    # -- changing ------------------------------------------------------------------------
    async def start(
        self,
        caller: Caller,
        *,
        plan: Any,
        request: str | None,
        mode: SagaMode,
        saga_id: str | None,
    ) -> Started:
        saga_id = saga_id or f"saga-{uuid.uuid4().hex[:12]}"
        detail = "plan" if plan is not None else "request in words"
        if mode is SagaMode.ACT:
            detail += "; mode act"
        return await self._recorded(
            caller, "start", saga_id, detail, self._start(caller, plan, request, mode, saga_id)
        )

    async def _start(
        self, caller: Caller, plan: Any, request: str | None, mode: SagaMode, saga_id: str
    ) -> Started:
        caller.require(Permission.START)
        _checked_id(saga_id)
        if plan is not None and request:
            raise ToolRefused(["give a plan or a request in words, not both"])
        if plan is None and not (request or "").strip():
            raise ToolRefused(["give a plan, or a request in words"])
        if mode is SagaMode.ACT and plan is not None:
            raise ToolRefused(["mode act takes a request in words, not a plan"])
        inp = SagaInput(
            plan=plan,
            request=request if plan is None else None,
            policy=self.policy,
            mode=mode,
            started_by=caller.person.name,
        )
        check_start(inp)
        service = await self.service()
        try:
            await start_saga(
                service.client,
                plan,
                saga_id=saga_id,
                task_queue=self.settings.task_queue,
                input=inp,
                settings=self.settings,
            )
        except WorkflowAlreadyStartedError:
            problem = f"saga {saga_id} already exists; saga_status tells its state"
            raise ToolRefused([problem]) from None
        return Started(
            saga_id=saga_id,
            page=self.page(saga_id),
            resource=saga_uri(saga_id),
            message=f"started saga {saga_id}; wait_saga follows it until it ends or needs a "
            "person, cancel_saga undoes what it did",
        )

    async def cancel(self, caller: Caller, saga_id: str, wait_seconds: float) -> SagaAnswer:
        async def cancel() -> SagaAnswer:
            caller.require(Permission.CANCEL)
            service = await self.service()
            wait = min(max(wait_seconds, 0.0), MAX_WAIT_SECONDS)
            result = await service.cancel(_checked_id(saga_id), wait=wait, by=caller.person.name)
            answer = saga_answer(result.saga, self.page(saga_id))
            return answer.model_copy(update={"message": result.message})

        return await self._recorded(caller, "cancel", saga_id, None, cancel())

    async def _recorded(
        self, caller: Caller, action: str, saga_id: str, detail: str | None, run: Awaitable[T]
    ) -> T:
        """Run one decision; the trail gets it with its outcome, also when refused."""
        entry = AuditEntry(
            at=utcnow(),
            who=caller.person.name,
            via=caller.via,
            action=action,
            saga_id=saga_id[:200],
            outcome="done",
            detail=detail,
        )
        return await self._decisions.recorded(entry, run)
