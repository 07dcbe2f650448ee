"""Following a saga until it ends: on a terminal, a live table of its steps, redrawn as
they run and are undone."""

from __future__ import annotations

import asyncio

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.service import RPCError

from saga._client import saga_state, wait_saga
from saga._errors import SagaError
from saga._models import SagaResult, SagaStatus, StepState
from saga._outcome import agent_lines, outcome
from saga._redact import redact

_STYLE = {
    "pending": "dim",
    "running": "bold cyan",
    "succeeded": "green",
    "failed": "bold red",
    "cancelled": "yellow",
    "skipped": "dim",
    "none": "dim",
    "registered": "dim",
    "compensated": "yellow",
    "resolved": "magenta",
    "planning": "cyan",
    "awaiting_approval": "bold yellow",
    "compensating": "bold yellow",
    "needs_attention": "bold red",
    "completed": "bold green",
    "rejected": "bold red",
}


def _styled(value: str) -> Text:
    return Text(value.replace("_", " "), style=_STYLE.get(value, ""))


def _step_status(step: StepState) -> Text:
    """A step that was undone does not read as done: "succeeded, then undone"."""
    if step.status.value == "succeeded" and step.compensation.value == "compensated":
        return Text("succeeded, then undone", style="yellow")
    return _styled(step.status.value)


def render(state: SagaResult, execution: str = "running") -> Group:
    """The saga as a table of steps, with its outcome under it (card numbers masked)."""
    safe = SagaResult.model_validate(redact(state.model_dump(mode="json")))
    table = Table(title=Text.assemble(f"saga {safe.saga_id}  ", _styled(safe.status.value)))
    for name in ("#", "step", "action", "status", "external id", "compensation", "notes"):
        table.add_column(name, justify="right" if name == "#" else "left")
    steps = safe.steps
    if not steps and safe.plan is not None:
        for i, planned in enumerate(safe.plan.steps, 1):
            table.add_row(str(i), planned.id, planned.action, _styled("pending"), "", "", "")
    for i, step in enumerate(steps, 1):
        comp = _styled(step.compensation.value)
        if step.compensation_attempts:
            comp.append(f" ({step.compensation_attempts} attempts)", style="dim")
        notes = " · ".join(
            n for n in (step.error, step.compensation_error, step.operator_note) if n
        )
        table.add_row(
            str(i),
            step.id,
            step.action,
            _step_status(step),
            step.external_id or "",
            comp,
            Text(notes, style="red"),
        )
    line = outcome(safe, execution, cancel_requested=False)
    parts: list[Table | Text] = [table]
    if line:
        parts.append(Text(line, style=_STYLE.get(safe.status.value, "bold")))
    for problem in safe.problems:
        parts.append(Text(f"  {problem}", style="red"))
    parts += [Text(line, style="dim") for line in agent_lines(safe)]
    return Group(*parts)


async def watch(
    client: Client,
    saga_id: str,
    console: Console | None,
    *,
    cancelling: bool = False,
    interval: float = 0.5,
) -> SagaResult:
    """Follow the saga until it closes or waits for a person; return its state.

    On a terminal (``console`` given, not a dumb one) a live table of its steps is redrawn
    meanwhile and cleared at the end: the caller prints the final state once. Elsewhere
    nothing is drawn. Stopped by Ctrl-C, the last table drawn stays on the screen.
    """
    if console is None or not console.is_terminal or console.is_dumb_terminal:
        return await _final_state(client, saga_id, cancelling, interval, None)
    with Live(console=console, auto_refresh=False, transient=True) as live:
        try:
            return await _final_state(client, saga_id, cancelling, interval, live)
        except (asyncio.CancelledError, KeyboardInterrupt):
            live.transient = False  # Ctrl-C: what was seen last stays
            raise


async def _final_state(
    client: Client, saga_id: str, cancelling: bool, interval: float, live: Live | None
) -> SagaResult:
    handle = client.get_workflow_handle(saga_id)
    while True:
        try:
            desc = await handle.describe()
        except RPCError as exc:
            raise SagaError(f"no saga {saga_id!r}: {exc.message}") from None
        if desc.status == WorkflowExecutionStatus.RUNNING:
            state = await saga_state(client, saga_id)
            if _waits_for_person(state, cancelling):
                return state
            if live is not None:
                live.update(render(state), refresh=True)
            await asyncio.sleep(interval)
            continue
        try:
            return await wait_saga(client, saga_id)
        except Exception:  # failed or terminated: its last state is all there is
            return await saga_state(client, saga_id)


def _waits_for_person(state: SagaResult, cancelling: bool) -> bool:
    """An undo failed past its retries, or a step is parked as uncertain: the saga waits
    for an operator. A cancel answers a parked step (the steps before it are undone)."""
    if state.status is not SagaStatus.NEEDS_ATTENTION:
        return False
    return bool(state.stuck_steps) or not cancelling
