"""`saga demo`: three order sagas, one planned request and three act-mode requests on the
embedded dev stack."""

from __future__ import annotations

import asyncio
import os
import uuid

from rich.console import Console
from temporalio.client import Client

from saga._client import saga_state, start_saga, wait_saga
from saga._models import SagaInput, SagaMode, SagaResult, SagaStatus, StepStatus
from saga._settings import Settings
from saga.dev._examples import read_example

REQUEST = "order 2 blue mugs for ana@example.com and charge her card"


def _stock(settings: Settings, sku: str) -> object:
    """What the inventory system shows of ``sku`` (its stock), through its seeding hook."""
    from saga._catalog import catalog

    catalog.load_systems(settings)
    seed = catalog.seeds().get("inventory")
    return None if seed is None or seed.show is None else seed.show(settings, sku)


def _summary(result: SagaResult) -> str:
    compensated = len(result.compensated_steps)
    if result.status is SagaStatus.COMPLETED:
        return "completed: every step done"
    if result.status is SagaStatus.CANCELLED:
        return f"cancelled: {compensated} steps compensated"
    if result.status is SagaStatus.COMPENSATED:
        return f"compensated: {compensated} steps undone ({result.error})"
    return f"{result.status.value}: {result.error or ''}"


async def run_demo(client: Client, settings: Settings, console: Console) -> int:
    from saga._outcome import agent_lines
    from saga._redact import mask_text
    from saga.cli._render import masked, render

    queue = settings.task_queue
    run = uuid.uuid4().hex[:6]
    failures = 0

    async def show(title: str, result: SagaResult, expected: SagaStatus) -> None:
        nonlocal failures
        result = masked(result)
        console.rule(title)
        console.print(render(result))
        console.print(_summary(result), style="bold")
        for sku in ("mug-blue", "mug-red"):
            console.print(f"  stock of {sku}: {await asyncio.to_thread(_stock, settings, sku)}")
        if result.status is not expected:
            failures += 1
            console.print(f"expected {expected.value}", style="red")

    sid = f"order-{run}"
    await start_saga(
        client, read_example("order"), saga_id=sid, task_queue=queue, settings=settings
    )
    await show(
        "1. an order that completes (saga start --plan order)",
        await wait_saga(client, sid),
        SagaStatus.COMPLETED,
    )

    sid = f"order-declined-{run}"
    await start_saga(
        client, read_example("order_declined"), saga_id=sid, task_queue=queue, settings=settings
    )
    await show(
        "2. card 4000000000000002 is declined: the reservation is released",
        await wait_saga(client, sid),
        SagaStatus.COMPENSATED,
    )

    sid = f"order-cancelled-{run}"
    await start_saga(
        client, read_example("order_cancel"), saga_id=sid, task_queue=queue, settings=settings
    )
    while True:
        state = await saga_state(client, sid)
        if any(s.id == "cooling-off" and s.status is StepStatus.RUNNING for s in state.steps):
            break
        if state.status.final:
            break
        await asyncio.sleep(0.2)
    console.rule("3. cancelled midway, during its cooling-off wait")
    console.print(render(masked(state)))
    await client.get_workflow_handle(sid).cancel()
    console.print("cancel requested")
    await show("3. ... and unwound", await wait_saga(client, sid), SagaStatus.CANCELLED)

    offline = not os.environ.get("OPENAI_API_KEY")
    sid = f"request-{run}"
    label = "offline planner, no OPENAI_API_KEY" if offline else "the configured model"
    await start_saga(
        client, None, saga_id=sid, task_queue=queue, request=REQUEST, settings=settings
    )
    result = await wait_saga(client, sid)
    console.rule(f"4. a request in words, planned by the agent ({label})")
    console.print(f"request: {mask_text(REQUEST)!r}")
    console.print(f"planner: {result.planner}")
    await show("4. planned and run", result, SagaStatus.COMPLETED)
    # Act mode: the agent looks before each write, adapts, or gives up (all undone).
    acts = [
        (
            "5. act mode: it looks up stock and Ana's saved card, then buys every blue mug left",
            "order 6 blue mugs for ana@example.com and charge her card",
            SagaStatus.COMPLETED,
        ),
        (
            "6. act mode: blue mugs are out of stock, so it takes red ones as asked",
            "order 2 blue mugs or red ones for ana@example.com and charge her card",
            SagaStatus.COMPLETED,
        ),
        (
            "7. act mode: card 4000000000000002 is declined, it gives up, all is undone",
            "order 1 red mug for ana@example.com and charge card 4000000000000002",
            SagaStatus.COMPENSATED,
        ),
    ]
    for n, (title, request, expected) in enumerate(acts, start=5):
        sid = f"act-{n}-{run}"
        await start_saga(
            client,
            None,
            saga_id=sid,
            task_queue=queue,
            input=SagaInput(request=request, mode=SagaMode.ACT),
            settings=settings,
        )
        result = await wait_saga(client, sid)
        console.rule(title)
        console.print(f"request: {mask_text(request)!r}")
        for line in agent_lines(masked(result)):
            console.print(line, markup=False, highlight=False)
        await show(title, result, expected)
    await _show_list(client, run, 7, console)
    mail = settings.data_dir / "mail"
    console.rule("done")
    console.print(
        f"emails delivered to the local SMTP server: {len(list(mail.glob('*.eml')))}"
        f" (saved in {mail})"
    )
    return 1 if failures else 0


async def _show_list(client: Client, run: str, count: int, console: Console) -> None:
    """`saga list`: the demo's sagas by their own status, once visibility has them all."""
    from saga._listing import list_sagas
    from saga.cli._list import list_table

    rows = []
    for _ in range(50):  # visibility trails the sagas by moments
        rows = [
            r
            for r in await list_sagas(client)
            if run in r.saga_id and r.status is not None and r.status.final
        ]
        if len(rows) >= count:
            break
        await asyncio.sleep(0.2)
    console.rule("8. saga list: each saga's own status, what it did, for how much")
    console.print(list_table(rows, console.width))
