"""What the CLI prints: a saga as a table (masked as on the web), the lines an
operator needs for a parked step, and the exit code of an outcome.
"""

from __future__ import annotations

import json

from rich.console import Console
from rich.table import Table

from saga._models import SagaResult, SagaStatus, StepState
from saga._outcome import agent_lines, outcome
from saga._redact import redact


class _Console(Console):
    def on_broken_pipe(self) -> None:
        """Its reader went away: main() stops quietly, as for `print` (Rich would exit 1)."""
        self.quiet = True
        raise BrokenPipeError


# What users and servers wrote (step ids, requests, paths, errors) is printed as it is:
# never read as Rich markup or emoji codes.
out = _Console(markup=False, emoji=False)
err = _Console(stderr=True, soft_wrap=True, markup=False, emoji=False, highlight=False)


def render(result: SagaResult) -> Table:
    table = Table(title=f"saga {result.saga_id}: {result.status.value}", title_justify="left")
    for col in ("step", "action", "status", "external id", "compensation"):
        table.add_column(col, overflow="fold")
    for s in result.steps:
        comp = s.compensation.value
        if s.compensation_error and comp == "failed":
            comp += f" ({s.compensation_error})"
        status = s.status.value
        if status == "succeeded" and s.compensation.value == "compensated":
            status = "succeeded, then undone"
        table.add_row(s.id, s.action, status, s.external_id or "-", comp)
    return table


def masked(result: SagaResult) -> SagaResult:
    """What the terminal shows: card numbers and email addresses masked, as on the web."""
    return SagaResult.model_validate(redact(result.model_dump(mode="json")))


def show(result: SagaResult, as_json: bool, *, cancel_requested: bool = False) -> None:
    """The saga as a table, then how it ended (or why it is undoing what ran) and what
    a person can do about it; or the typed result as JSON."""
    result = masked(result)
    if as_json:
        print(result.model_dump_json(indent=2))
        return
    out.print(render(result))
    if result.plan is not None and not result.steps and result.plan_hash:
        out.print(f"plan {result.plan_hash} ({result.planner or 'hand-written'}):")
        for st in result.plan.steps:
            out.print(f"  {st.id}: {st.action} {json.dumps(st.args)}")
    for line in agent_lines(result):
        out.print(line)
    if result.status is SagaStatus.AWAITING_APPROVAL:
        out.print(f"waiting for approval: saga approve {result.saga_id}")
    ended = summary(result, cancel_requested)
    if ended:  # one line, however long: what a script greps for
        out.print(ended, soft_wrap=True)
    for problem in result.problems:
        out.print(f"  - {problem}")
    for stuck in result.stuck_steps:
        out.print(
            f"needs attention: step {stuck.id} ({stuck.external_id}): "
            f"saga retry {result.saga_id} {stuck.id} | saga resolve {result.saga_id} {stuck.id}",
            soft_wrap=True,
        )
    if result.status is SagaStatus.NEEDS_ATTENTION:
        for parked in result.uncertain_steps:
            for line in parked_lines(result.saga_id, parked):
                out.print(line, markup=False, highlight=False, soft_wrap=True)


def summary(result: SagaResult, cancel_requested: bool = False) -> str | None:
    """How a saga ended, as the web page and the live view say it (`cancelled: 2 steps
    compensated`); for one still undoing what ran, why; else its error, if any."""
    if result.status.final:
        return outcome(result, "closed", cancel_requested)
    if result.error and result.status in (SagaStatus.COMPENSATING, SagaStatus.NEEDS_ATTENTION):
        return f"undoing what ran ({result.error})"
    return f"error: {result.error}" if result.error else None


def parked_lines(saga_id: str, step: StepState) -> list[str]:
    """What an operator needs for a step parked as uncertain: the evidence, the choices."""
    ev = dict(step.evidence or {})
    lines = [
        f"needs attention: step {step.id} ({step.action}) may already have taken effect; "
        "it was not repeated",
        f"  attempt {ev.pop('attempt', '?')} began delivering at {ev.pop('started_at', '?')} "
        f"on worker {ev.pop('worker', '?')}; {ev.pop('ended', '?')}",
    ]
    lines += [f"  {key}: {value}" for key, value in ev.items()]
    return [
        *lines,
        f'  it did take effect:    saga resolve {saga_id} {step.id} --note "how you know"'
        "  (counts as done; the saga goes on)",
        f"  do it again:           saga retry {saga_id} {step.id}  (it may then happen twice)",
        f"  undo the steps before: saga cancel {saga_id}",
    ]


def exit_code(result: SagaResult) -> int:
    return 0 if result.status is SagaStatus.COMPLETED else 1
