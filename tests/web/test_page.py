"""The saga page says what happened in plain words, in a real browser (issue 14).

A cancel's answer stays in view, an undone step does not look done, each step says when
it ran, the approval page says how Reject and Cancel differ and when approval runs out,
an unknown saga gets a page of its own, and long ids wrap. Screenshots of each page
land in test-artifacts/ with the others.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

from saga import SagaWorkflow
from saga._models import ApprovalDecision
from tests.conftest import Stack
from tests.web import TOKEN, apply, start, wait
from tests.web.browser import expect, open_saga, row, shot

GREEN = "rgb(230, 244, 234)"  # --ok-bg: done, and it stays done
RED = "rgb(180, 35, 24)"  # --bad: an error
SECONDS = r"(?:\d+ s|under 1 s)"


async def style(locator: Any, prop: str) -> str:
    value: str = await locator.evaluate(f"(node) => getComputedStyle(node).{prop}")
    return value


async def page_width(page: Any) -> int:
    width: int = await page.evaluate("document.documentElement.scrollWidth")
    return width


async def test_a_cancel_that_lost_the_race_says_so_and_it_stays(
    page: Any, base_url: str, stack: Stack
) -> None:
    sid = await start(stack, apply("reserve-room"), approval=True, prefix="raced")
    await open_saga(page, base_url, sid)
    await expect(page.locator("#status")).to_have_text("awaiting approval")
    await expect(page.locator("#cancel")).to_be_visible()

    # The page's next look is held while the saga completes: the person still sees
    # Cancel, and presses it after the saga won the race.
    held: asyncio.Queue[Any] = asyncio.Queue()
    await page.route(f"**/api/sagas/{sid}", held.put_nowait)
    first = await asyncio.wait_for(held.get(), 10)  # the poll loop now waits on it
    handle = stack.client.get_workflow_handle_for(SagaWorkflow.run, sid)
    state = await handle.query(SagaWorkflow.state)
    await handle.execute_update(
        SagaWorkflow.approve, ApprovalDecision(plan_hash=state.plan_hash, by="test")
    )
    await handle.result()
    await page.click("#cancel")

    message = page.locator("#message")
    await expect(message).to_have_text("already completed: nothing was cancelled")
    await expect(message).to_be_visible()
    await first.continue_()  # the held look comes back: the saga has closed
    await page.unroute(f"**/api/sagas/{sid}")
    await expect(page.locator("body")).to_have_attribute("data-polling", "off")
    await expect(message).to_be_visible()
    await expect(message).to_have_text("already completed: nothing was cancelled")
    await expect(page.locator("#outcome")).to_have_text("completed: 1 step done")
    await expect(page.locator("#cancel")).to_be_hidden()
    await shot(page, "page-raced.png")


async def test_an_undone_step_does_not_look_done(page: Any, base_url: str, stack: Stack) -> None:
    sid = await start(
        stack,
        apply("reserve-room"),
        apply("charge-card"),
        apply("book-flight", fail="before"),
        request="Book a room and a flight",
        prefix="undone",
    )
    await open_saga(page, base_url, sid)
    await expect(page.locator("#status")).to_have_text("compensated")
    for step_id in ("reserve-room", "charge-card"):
        undone = row(page, step_id)
        await expect(undone).to_have_attribute("data-compensation", "compensated")
        shown = undone.locator("td.status .badge")
        await expect(shown).to_have_text("applied, then reverted")
        assert await style(shown, "backgroundColor") != GREEN
        undo = undone.locator("td.undo")
        await expect(undo).to_contain_text(re.compile(r"^reverted rev-\d+"))
        assert await style(undo.locator(".badge"), "backgroundColor") != GREEN
        # When it ran and when it was undone.
        await expect(undone.locator("td.status .when")).to_have_text(
            re.compile(rf"^started .+\s+ended .+ \({SECONDS}\)$")
        )
        await expect(undo.locator(".when")).to_have_text(re.compile(r"^at .+"))
    # The step that failed before it took effect: nothing to undo, and it says so.
    failed = row(page, "book-flight")
    await expect(failed.locator("td.status .badge")).to_have_text("failed")
    await expect(failed.locator("td.undo")).to_contain_text("nothing to undo")
    await expect(page.locator("#steps")).not_to_contain_text("succeeded")
    await shot(page, "page-compensated.png")


async def test_plain_words_times_and_a_cancelled_wait(
    page: Any, base_url: str, stack: Stack
) -> None:
    sid = await start(
        stack,
        apply("reserve-room"),
        wait("wait-for-checkin", 300),
        apply("send-receipt"),
        request="Book a room, then wait for the guest",
        prefix="running",
    )
    await open_saga(page, base_url, sid)
    waiting = row(page, "wait-for-checkin")
    await expect(waiting).to_have_attribute("data-status", "running")
    await expect(waiting.locator(".when")).to_have_text(
        re.compile(r"^started .+\s+ends .+: 4 min(?: \d+ s)? left$")
    )
    await expect(row(page, "reserve-room").locator("td.undo")).to_have_text("can be undone")
    await expect(row(page, "send-receipt").locator("td.status")).to_have_text("not started")
    await expect(page.locator("#cancel-help")).to_contain_text("already ran are undone")
    since = re.compile(rf"^started .+ \({SECONDS} ago\)$")
    await expect(page.locator("#times")).to_have_text(since)
    assert "registered" not in await page.locator("main").inner_text()
    await shot(page, "page-running.png")

    await page.click("#cancel")  # the confirm dialog is accepted
    await expect(page.locator("#status")).to_have_text("cancelled")
    await expect(waiting.locator("td.status .badge")).to_have_text("cancelled")
    note = waiting.locator("td.notes span")
    await expect(note).to_have_text(
        re.compile(rf"^waited {SECONDS} of 5 min, then the saga was cancelled$")
    )
    assert await style(note, "color") != RED
    await expect(waiting.locator(".when")).to_have_text(
        re.compile(rf"^started .+\s+cancelled .+ \({SECONDS}\)$")
    )
    await expect(row(page, "reserve-room").locator("td.status .badge")).to_have_text(
        "applied, then reverted"
    )
    text = await page.locator("main").inner_text()
    assert "canceled" not in text and "registered" not in text  # one spelling, plain words
    await shot(page, "page-cancelled.png")


async def test_the_approval_page_says_how_reject_and_cancel_differ(
    page: Any, base_url: str, stack: Stack
) -> None:
    sid = await start(
        stack, apply("reserve-room"), apply("charge-card"), approval=True, prefix="approval"
    )
    await open_saga(page, base_url, sid)
    await expect(page.locator("#status")).to_have_text("awaiting approval")
    # The policy's approval time-out is a day: it runs out in 23 h 59 min.
    await expect(page.locator("#approval-deadline")).to_have_text(
        re.compile(r"^Unanswered, the plan is rejected at .+ \(23 h 59 min from now\)\.$")
    )
    await expect(page.locator("#approval")).to_contain_text("Reject plan refuses it: nothing runs")
    await expect(page.locator("#cancel-help")).to_have_text(
        "Cancel saga stops it without a decision on the plan: nothing has run yet, so "
        "nothing is undone. To refuse this plan, use Reject plan above."
    )
    # Reject comes first; Cancel stands below it, with its own words.
    below = await page.evaluate(
        "document.querySelector('#approval').compareDocumentPosition("
        "document.querySelector('#cancel')) & Node.DOCUMENT_POSITION_FOLLOWING"
    )
    assert below
    reject_box = await page.locator("#reject").bounding_box()
    cancel_box = await page.locator("#cancel").bounding_box()
    assert cancel_box["y"] > reject_box["y"]
    await shot(page, "page-awaiting-approval.png")


async def test_an_unknown_saga_gets_a_not_found_page_and_no_more_polling(
    page: Any, base_url: str
) -> None:
    sid = "no-such-saga-" + "x" * 3000
    looks: list[str] = []
    page.on("request", lambda r: looks.append(r.url) if "/api/sagas/" in r.url else None)
    await page.goto(f"{base_url}/sagas/{sid}")
    await page.fill("#token", TOKEN)
    await page.click("button[type=submit]")
    await expect(page.locator("#not-found")).to_be_visible()
    await expect(page.locator("#not-found h1")).to_have_text("Saga not found")
    await expect(page.locator("#not-found-id")).to_have_text(sid)
    await expect(page.locator("body")).to_have_attribute("data-polling", "off")
    await expect(page.locator("#saga")).to_be_hidden()
    assert len(looks) == 1
    assert await page.title() == "Saga not found"
    assert await page_width(page) <= 1280
    await shot(page, "page-not-found.png")


async def test_a_long_saga_id_and_long_arguments_wrap(
    page: Any, base_url: str, stack: Stack
) -> None:
    long_name = "n" * 100
    sid = await start(
        stack,
        apply("reserve-room-" + "r" * 50, name=long_name),
        approval=True,
        prefix="long-" + "i" * 600,
    )
    await open_saga(page, base_url, sid)
    await expect(page.locator("#status")).to_have_text("awaiting approval")
    await expect(page.locator("#steps")).to_contain_text(long_name)
    assert await page_width(page) <= 1280
    overflow = await page.locator(".table-wrap").evaluate("(n) => n.scrollWidth - n.clientWidth")
    assert overflow <= 0
    await shot(page, "page-long-id.png")
