"""A live table of a saga's steps for the terminal, redrawn as they run and are undone."""

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
from saga._models import SagaResult
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
            _styled(step.status.value),
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
    client: Client, saga_id: str, console: Console, *, interval: float = 0.5
) -> SagaResult:
    """Show a live table of the saga until it closes; return its final state."""
    handle = client.get_workflow_handle(saga_id)
    with Live(console=console, refresh_per_second=8, auto_refresh=False) as live:
        while True:
            try:
                desc = await handle.describe()
            except RPCError as exc:
                raise SagaError(f"no saga {saga_id!r}: {exc.message}") from None
            if desc.status == WorkflowExecutionStatus.RUNNING:
                live.update(render(await saga_state(client, saga_id)), refresh=True)
                await asyncio.sleep(interval)
                continue
            try:
                state = await wait_saga(client, saga_id)
            except Exception:  # failed or terminated: its last state is all there is
                state = await saga_state(client, saga_id)
            execution = desc.status.name.lower() if desc.status else "closed"
            live.update(render(state, execution), refresh=True)
            return state
