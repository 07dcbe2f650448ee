"""One line on a saga: how it ended, or what it is waiting for.

The web page and the terminal's live view say the same thing about a saga, so both
read it from here.
"""

from __future__ import annotations

import json

from saga._models import CompensationStatus, SagaResult, SagaStatus, StepStatus

ALREADY_COMPLETED = "already completed: nothing was cancelled"


def plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def outcome(state: SagaResult, execution: str, cancel_requested: bool) -> str | None:
    """One line for the page: how the saga ended, or what it is waiting for."""
    resolved = [s for s in state.steps if s.compensation == CompensationStatus.RESOLVED]
    extra = f", {plural(len(resolved), 'step')} resolved by hand" if resolved else ""
    compensated = plural(len(state.compensated_steps), "step")
    if execution == "running":
        if state.status == SagaStatus.NEEDS_ATTENTION and state.uncertain_steps:
            parked = ", ".join(s.id for s in state.uncertain_steps)
            return (
                f"needs attention: {parked} may already have taken effect and was not "
                "repeated; confirm it happened, do it again, or cancel the saga"
            )
        if state.status == SagaStatus.NEEDS_ATTENTION:
            stuck = ", ".join(s.id for s in state.stuck_steps)
            return f"needs attention: the compensation of {stuck} failed; retry or mark resolved"
        if state.status == SagaStatus.AWAITING_APPROVAL:
            return "waiting for approval"
        if state.status == SagaStatus.COMPENSATING:
            return f"compensating in reverse order ({state.error or 'failed'})"
        return None
    if state.status == SagaStatus.CANCELLED:
        return f"cancelled: {compensated} compensated{extra}"
    if state.status == SagaStatus.COMPLETED:
        if cancel_requested:
            return ALREADY_COMPLETED
        done = sum(1 for s in state.steps if s.status == StepStatus.SUCCEEDED)
        return f"completed: {plural(done, 'step')} done"
    if state.status == SagaStatus.COMPENSATED:
        return f"failed and undone: {compensated} compensated{extra} ({state.error})"
    if state.status == SagaStatus.REJECTED:
        return f"rejected: {state.error or 'plan rejected'}"
    return f"closed as {execution} while {state.status.value}"


def agent_lines(result: SagaResult) -> list[str]:
    """What the agent did besides the steps: its look-ups, re-plans, last word and model
    use, a line each (pass a masked result: arguments and answers are printed)."""
    lines = [f"model turn {n}: {turn}" for n, turn in enumerate(result.turns, start=1)]
    for look in result.lookups:
        answer = f"error: {look.error}" if look.error else json.dumps(look.result)
        lines.append(f"looked up {look.action} {json.dumps(look.args)}: {answer}")
    lines += [f"re-planned after step {note}" for note in result.replans]
    if result.answer:
        lines.append(f"answer: {result.answer}")
    if result.model_calls:
        lines.append(f"model: {result.model_calls} call(s), {result.tokens} token(s)")
    return lines
