"""The saga core, as small as the Java SDK's ``io.temporal.workflow.Saga``.

:class:`Compensations` registers a step's compensation before the step runs and undoes
the registered steps in reverse order (one by one, or all at once). :class:`Operator` is
the loop a stuck step waits in until a person retries or resolves it. :func:`finish`
runs work to its end even when the workflow is cancelled meanwhile.

Workflow code only: deterministic, no I/O.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

from temporalio import workflow

from saga._models import CompensationStatus, OperatorAction, StepState, StepStatus

T = TypeVar("T")


@dataclass
class Compensations:
    """The steps whose effects a failure must undo, in the order they were registered."""

    parallel: bool = False
    """Undo all registered steps at once instead of one by one in reverse order."""
    _registered: list[str] = field(default_factory=list)

    def add(self, step_id: str) -> None:
        """Register ``step_id``'s compensation; call it *before* the step runs, so a step
        that took effect and then failed, timed out or was cancelled is undone too."""
        self._registered.append(step_id)

    def remove(self, step_id: str) -> bool:
        """Take ``step_id`` off the list (its undo is run now, by the caller); whether it
        was on it."""
        if step_id not in self._registered:
            return False
        self._registered.remove(step_id)
        return True

    async def compensate(self, undo: Callable[[str], Awaitable[None]]) -> None:
        """``undo`` every registered step, last registered first (or all together)."""
        order = list(reversed(self._registered))
        if self.parallel:
            await asyncio.gather(*(undo(step_id) for step_id in order))
        else:
            for step_id in order:
                await undo(step_id)


async def finish(work: Awaitable[T], on_cancel: Callable[[], None]) -> T:
    """Run ``work`` to its end in a task a workflow cancel cannot stop; ``on_cancel`` is
    called for each cancel that arrives meanwhile (the caller remembers it)."""
    task = asyncio.ensure_future(work)
    while not task.done():
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            on_cancel()
    return task.result()


@dataclass(frozen=True)
class Decision:
    """An operator's answer to a step waiting for them."""

    resolved: bool
    """True: resolved by hand (a parked step: it did take effect); False: try again."""
    note: str | None


@dataclass
class Operator:
    """Steps waiting for a person, and the decisions the operator updates bring."""

    _pending: dict[str, Decision] = field(default_factory=dict)

    @staticmethod
    def waiting(step: StepState) -> bool:
        """Whether ``step`` needs an operator: its compensation ran out of retries, or it
        is parked as uncertain."""
        return step.compensation == CompensationStatus.FAILED or step.status == StepStatus.UNCERTAIN

    def check(self, step: StepState | None, step_id: str) -> None:
        """Raise ``ValueError`` (the update is refused) unless ``step`` waits for a
        decision that has not been given yet."""
        if step is None:
            raise ValueError(f"no step {step_id!r} in this saga")
        if not self.waiting(step) or step_id in self._pending:
            raise ValueError(
                f"step {step_id!r} is not waiting for an operator "
                f"(step {step.status.value}, compensation {step.compensation.value})"
            )

    async def decide(self, action: OperatorAction, *, resolved: bool) -> None:
        """Hand the waiting step its decision; returns once the saga has taken it."""
        self._pending[action.step_id] = Decision(resolved=resolved, note=action.note)
        await workflow.wait_condition(lambda: action.step_id not in self._pending)

    async def wait(self, step_id: str) -> Decision:
        """The decision for ``step_id``, once an operator gives it. The caller applies it
        to the saga's state, then calls :meth:`done` (which answers the update)."""
        await workflow.wait_condition(lambda: step_id in self._pending)
        return self._pending[step_id]

    def done(self, step_id: str) -> None:
        del self._pending[step_id]
