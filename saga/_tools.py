"""Bring your own agent: catalog actions as compensable Agents SDK tools in any workflow.

Inside a workflow of your own, on a worker from :func:`saga.create_worker` (its ledger
interceptor and its ``saga_check_plan`` local activity), with your own OpenAI Agents SDK
agent::

    async with SagaSteps.open(policy) as steps:
        agent = Agent(name="shop", tools=[steps.tool("payments.charge"), my_tool])
        result = await Runner.run(agent, request)
        if not result.final_output.ok:
            raise ApplicationError("the agent gave up")   # everything is undone

Each call of a ``steps.tool(...)`` tool is a saga step, as in act mode: checked by a worker
with the steps that ran (the policy counts what was spent; no compensable call after a
pivot), registered for undo before it runs, run on the ledger as ``<workflow id>/call-<n>``;
a business error (a declined card) is undone at once and goes back to the model. Leaving
the block with an exception or a cancel undoes every step in reverse order, in a task the
cancel cannot stop, then lets the exception go on. There is no approval wait and no
operator loop here: a call the policy wants approved is refused, and an undo that still
fails after its retries raises :class:`CompensationFailed` naming the step (the saga
workflow itself has both, for plans and act mode).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from agents import FunctionTool
from temporalio.exceptions import ActivityError, ApplicationError

from saga._approval import check_on_worker
from saga._compensations import Compensations, finish
from saga._models import CheckedPlan, StepSpec
from saga._policy import Policy
from saga._step_header import business_failure, cause_text, start_compensation, start_forward
from saga.planner._act import write_tool


class CompensationFailed(ApplicationError):
    """Undoing a step failed after its retries: the world is not fully undone."""


@dataclass
class _Done:
    spec: StepSpec
    args: dict[str, Any]
    result: Any = None


@dataclass
class SagaSteps:
    """The steps of a saga run by your own agent in your own workflow."""

    policy: Policy
    offer: CheckedPlan
    _steps: dict[str, _Done] = field(default_factory=dict)
    _ran: list[str] = field(default_factory=list)
    _compensations: Compensations = field(default_factory=Compensations)
    _calls: int = 0
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @classmethod
    def open(cls, policy: Policy | None = None) -> _Opening:
        """``async with SagaSteps.open(policy) as steps``: asks a worker what it runs."""
        return _Opening(policy or Policy())

    @property
    def steps(self) -> list[str]:
        """The ids of the steps that ran, in order."""
        return list(self._ran)

    def tool(self, action: str) -> FunctionTool:
        """The catalog action ``action`` as an Agents SDK tool whose calls are steps."""
        for described in self.offer.catalog or []:
            if described.get("action") == action:
                return write_tool(described, self.call)
        raise ValueError(f"{action!r} is not an action the workers run and the policy allows")

    async def call(self, action: str, args: dict[str, Any]) -> dict[str, Any]:
        """Run one call of ``action`` as the next step: ``{"result"}`` or ``{"error"}``.
        Calls made at once run one after the other, each checked with those before."""
        async with self._lock:
            return await self._call(action, args)

    async def _call(self, action: str, args: dict[str, Any]) -> dict[str, Any]:
        if self._calls >= self.policy.max_steps:  # failed calls count too
            return {"error": f"refused: the policy allows {self.policy.max_steps} calls"}
        self._calls += 1
        step_id = f"call-{self._calls}"
        done = [
            {"id": s, "action": self._steps[s].spec.action, "args": self._steps[s].args}
            for s in self._ran
        ]
        raw = {"steps": [*done, {"id": step_id, "action": action, "args": args}]}
        checked = await check_on_worker(raw, self.policy, planned=True)
        if checked.plan is None:
            return {"error": "refused: " + "; ".join(checked.problems)}
        if step_id in checked.risky:
            return {"error": "refused: the policy wants a person to approve this call"}
        spec = checked.specs[step_id]
        step = _Done(spec, checked.plan.steps[-1].args)
        self._steps[step_id] = step
        if spec.compensation is not None:
            self._compensations.add(step_id)  # registered before the step runs
        try:
            step.result = await start_forward(spec, step.args)
        except ActivityError as exc:
            if business_failure(exc) is None:
                raise
            await self._undo_now(step_id)  # it may have taken effect before it failed
            return {"error": cause_text(exc)}
        self._ran.append(step_id)
        return {"result": step.result}

    async def _undo_now(self, step_id: str) -> None:
        if self._compensations.remove(step_id):
            await finish(self._undo(step_id), lambda: None)

    async def _undo(self, step_id: str) -> None:
        step = self._steps[step_id]
        try:
            await start_compensation(step.spec, step.args, step.result, 1)
        except ActivityError as exc:
            raise CompensationFailed(
                f"undoing step {step_id} ({step.spec.action}) failed: {cause_text(exc)}",
                type="CompensationFailed",
                non_retryable=True,
            ) from None

    async def compensate(self) -> None:
        """Undo every registered step, last first; a cancel meanwhile cannot stop it."""
        await finish(self._compensations.compensate(self._undo), lambda: None)


class _Opening:
    def __init__(self, policy: Policy) -> None:
        self._policy = policy
        self._steps: SagaSteps | None = None

    async def __aenter__(self) -> SagaSteps:
        offer = await check_on_worker(None, self._policy)
        self._steps = SagaSteps(policy=offer.policy, offer=offer)
        return self._steps

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is not None and self._steps is not None:
            await self._steps.compensate()
