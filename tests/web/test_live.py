"""`saga.cli._live.watch`: the CLI's live table, against the real dev server and worker."""

from __future__ import annotations

import asyncio
import io

from rich.console import Console

from saga import SagaStatus, SagaWorkflow
from saga.cli._live import render, watch
from tests.conftest import Stack, eventually
from tests.web import CARD, apply, start, wait


def terminal() -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    return Console(file=out, force_terminal=True, width=160, color_system=None), out


async def test_watch_until_completed(stack: Stack) -> None:
    sid = await start(stack, apply("reserve"), wait("settle", 1), apply("charge"))
    console, out = terminal()
    result = await watch(stack.client, sid, console, interval=0.2)
    assert result.status == SagaStatus.COMPLETED
    text = out.getvalue()
    assert "running" in text  # drawn while the steps ran, not only at the end
    for step_id in ("reserve", "settle", "charge"):
        assert step_id in text
    # The live table is cleared at the end: the caller prints the final state once.
    assert "completed: 3 steps done" not in text
    console.print(render(result, "completed"))
    assert "completed: 3 steps done" in out.getvalue()


async def test_watch_shows_the_compensation_after_a_cancel(stack: Stack) -> None:
    sid = await start(
        stack,
        apply("reserve", revert_delay=1.5),
        apply("charge", revert_delay=1.5),
        wait("hold", 300),
        request=f"pay with {CARD}",
    )
    console, out = terminal()
    watching = asyncio.create_task(watch(stack.client, sid, console, interval=0.2))
    handle = stack.client.get_workflow_handle_for(SagaWorkflow.run, sid)

    def drawn_holding() -> bool:
        """The watcher has drawn the saga waiting at `hold`: it is up and polling."""
        return any("hold" in line and "running" in line for line in out.getvalue().splitlines())

    await eventually(drawn_holding, timeout=60)
    await handle.cancel()
    result = await asyncio.wait_for(watching, 60)
    assert result.status == SagaStatus.CANCELLED
    assert [s.compensation.value for s in result.steps] == ["compensated", "compensated", "none"]
    text = out.getvalue()
    assert "compensating" in text  # drawn while the steps were undone
    console.print(render(result, "canceled"))
    assert "cancelled: 2 steps compensated" in out.getvalue()


def test_render_masks_card_numbers() -> None:
    from saga import SagaResult

    state = SagaResult.model_validate(
        {
            "saga_id": "s",
            "status": "running",
            "steps": [
                {
                    "id": "charge",
                    "action": "payments.charge",
                    "status": "failed",
                    "error": f"Declined: card {CARD} refused",
                }
            ],
        }
    )
    out = io.StringIO()
    Console(file=out, width=200, color_system=None).print(render(state))
    assert CARD not in out.getvalue()
    assert "•••• 4242" in out.getvalue()


def test_watch_shows_the_agents_lookups_answer_and_model_use_masked() -> None:
    from saga import SagaResult

    state = SagaResult.model_validate(
        {
            "saga_id": "s",
            "status": "completed",
            "mode": "act",
            "lookups": [
                {
                    "id": "lookup:1",
                    "action": "payments.customer",
                    "args": {"email": "ana.lopez@example.com"},
                    "result": {"found": True},
                }
            ],
            "replans": ["b: Declined: re-planned as c"],
            "answer": "charged ana.lopez@example.com",
            "model_calls": 3,
            "tokens": 420,
        }
    )
    out = io.StringIO()
    Console(file=out, width=200, color_system=None).print(render(state))
    text = out.getvalue()
    assert 'looked up payments.customer {"email": "a***@example.com"}: {"found": true}' in text
    assert "re-planned after step b: Declined: re-planned as c" in text
    assert "answer: charged a***@example.com" in text
    assert "model: 3 call(s), 420 token(s)" in text
    assert "ana.lopez" not in text


def test_email_addresses_are_masked_ids_and_hashes_are_not() -> None:
    from saga.web import mask_text, redact

    assert mask_text("order for ana.maria+shop@mail.example.co.uk, cc bo@x.org") == (
        "order for a***@mail.example.co.uk, cc b***@x.org"
    )
    assert mask_text("a***@example.com") == "a***@example.com"  # masking twice is a no-op
    assert mask_text("saga@localhost") == "saga@localhost"  # no domain to hide a person in
    # Our own Message-IDs name a message, not a person: operators need them whole.
    mid = "<saga-d1199b0c5c89e6ee58d954d11de5b306@example.com>"
    assert mask_text(f"sent {mid} to ana@example.com") == f"sent {mid} to a***@example.com"
    assert mask_text("saga-team@example.com") == "s***@example.com"
    shown = redact(
        {
            "saga_id": "order-for-ana@example.com",
            "steps": [
                {
                    "id": "confirm",
                    "external_id": "<saga-1f2e@shop.example.com>",
                    "args": {"to": "ana@example.com", "customer_email": "ana@example.com"},
                    "result": {"to": "ana@example.com"},
                }
            ],
        }
    )
    step = shown["steps"][0]
    assert shown["saga_id"] == "order-for-ana@example.com"
    assert step["external_id"] == "<saga-1f2e@shop.example.com>"  # an id, kept whole
    assert step["args"] == {"to": "a***@example.com", "customer_email": "a***@example.com"}
    assert step["result"] == {"to": "a***@example.com"}


def test_log_records_are_masked_message_and_traceback() -> None:
    import logging

    from saga._redact import MaskingFilter

    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.addFilter(MaskingFilter())
    log = logging.getLogger("test-masking")
    log.addHandler(handler)
    try:
        try:
            raise RuntimeError(f"550 <ana@example.com> refused card {CARD}")
        except RuntimeError:
            log.exception("step failed for %s", "ana@example.com")
    finally:
        log.removeHandler(handler)
    text = out.getvalue()
    assert "ana@" not in text and CARD not in text and "4242424242424242" not in text
    assert "step failed for a***@example.com" in text
    assert "RuntimeError: 550 <a***@example.com> refused card •••• 4242" in text
