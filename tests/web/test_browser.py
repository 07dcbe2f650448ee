"""The saga page in a real browser (Debian's headless Chromium) against a real uvicorn.

Screenshots of each final page land in test-artifacts/ (kept by CI as artifacts).
Needs `pip install playwright` and `apt-get install chromium` (.ci/run installs both);
without them the tests fail: a browser test that is not run proves nothing.
"""

from __future__ import annotations

from typing import Any

from saga import SagaInput, SagaWorkflow
from tests import effects
from tests.conftest import Stack, unique
from tests.web import CARD, TOKEN, apply, deliver, start, wait
from tests.web.browser import expect, open_saga, row, shot


async def test_cancel_a_running_saga(page: Any, base_url: str, stack: Stack) -> None:
    sid = await start(
        stack,
        apply("reserve-room", revert_delay=1.5),
        apply("charge-card", revert_delay=1.5),
        wait("wait-for-checkin", 300),
        apply("send-receipt"),
        approval=True,
        request=f"Book a room for two nights for ana.lopez@example.com and charge card {CARD}",
        prefix="cancel",
    )
    await open_saga(page, base_url, sid)

    # A plan waiting for approval: the plan is on the page, the card number is not.
    await expect(page.locator("#status")).to_have_text("awaiting approval")
    await expect(page.locator("#approval")).to_be_visible()
    await expect(page.locator("#steps tbody tr")).to_have_count(4)
    await expect(page.locator("#request")).to_contain_text("•••• 4242")
    await expect(page.locator("#request")).to_contain_text("a***@example.com")
    assert CARD not in await page.content() and "ana.lopez" not in await page.content()
    await expect(page.locator("#cancel")).to_be_visible()

    await page.click("#approve")
    await expect(row(page, "charge-card")).to_have_attribute("data-status", "succeeded")
    await expect(row(page, "wait-for-checkin")).to_have_attribute("data-status", "running")
    await expect(row(page, "reserve-room")).to_contain_text("eff-")
    await expect(page.locator("#approval")).to_be_hidden()

    await page.click("#cancel")  # the confirm dialog is accepted
    # Compensations run in reverse order: charge-card is undone while reserve-room waits.
    await expect(row(page, "charge-card")).to_have_attribute("data-compensation", "running")
    assert await row(page, "reserve-room").get_attribute("data-compensation") == "registered"
    await expect(row(page, "charge-card")).to_have_attribute("data-compensation", "compensated")
    await expect(row(page, "reserve-room")).to_have_attribute("data-compensation", "compensated")
    await expect(page.locator("#outcome")).to_have_text("cancelled: 2 steps compensated")
    await expect(page.locator("#status")).to_have_text("cancelled")
    await expect(page.locator("#cancel")).to_be_hidden()
    await expect(row(page, "send-receipt")).to_have_attribute("data-status", "skipped")

    log = await page.locator("#log").inner_text()
    undone = log.index("step charge-card: being undone")
    assert undone < log.index("step reserve-room: being undone")
    assert effects.log_of(stack.effects, sid)[-2:] == [
        ("revert", "charge-card"),
        ("revert", "reserve-room"),
    ]
    await shot(page, "web-cancelled.png")


async def test_approve_and_watch_it_complete(page: Any, base_url: str, stack: Stack) -> None:
    sid = await start(
        stack,
        apply("reserve-room"),
        wait("settle", 2),
        apply("charge-card"),
        approval=True,
        request="Book a room for one night",
        prefix="approve",
    )
    await open_saga(page, base_url, sid)
    await expect(page.locator("#status")).to_have_text("awaiting approval")
    plan_hash = await page.locator("#plan-hash").inner_text()
    assert plan_hash

    await page.click("#approve")
    await expect(row(page, "settle")).to_have_attribute("data-status", "running")
    await expect(page.locator("#status")).to_have_text("running")
    await expect(page.locator("#outcome")).to_have_text("completed: 3 steps done")
    await expect(page.locator("#status")).to_have_text("completed")
    for step_id in ("reserve-room", "settle", "charge-card"):
        await expect(row(page, step_id)).to_have_attribute("data-status", "succeeded")
    await expect(row(page, "charge-card")).to_contain_text("eff-")
    await expect(page.locator("#cancel")).to_be_hidden()
    assert len(effects.effects_of(stack.effects, sid)) == 2
    await shot(page, "web-completed.png")


async def test_act_mode_saga_shows_its_calls_and_the_answer(
    page: Any, base_url: str, stack: Stack
) -> None:
    # Act mode with the worker's offline model: one tool call per turn, then its answer.
    sid = unique("act")
    await stack.client.start_workflow(
        SagaWorkflow.run,
        SagaInput(request="effects.apply name=a then effects.notify name=told", mode="act"),
        id=sid,
        task_queue=stack.settings.task_queue,
    )
    await open_saga(page, base_url, sid)
    await expect(page.locator("#status")).to_have_text("completed")
    await expect(row(page, "call-1")).to_have_attribute("data-status", "succeeded")
    await expect(row(page, "call-2")).to_have_attribute("data-status", "succeeded")
    await expect(page.locator("#plan-notes")).to_contain_text(
        "the agent's answer: offline planner (no OPENAI_API_KEY): did effects.apply, effects.notify"
    )
    await expect(page.locator("#planner")).to_contain_text("acted by offline planner")
    await expect(page.locator("#plan-notes")).to_contain_text(
        'model turn 1: calls effects__apply {"name": "a"}'
    )
    await shot(page, "web-act-mode.png")


async def test_stuck_compensation_buttons(page: Any, base_url: str, stack: Stack) -> None:
    sid = await start(
        stack,
        apply("reserve-room"),
        apply("charge-card", revert_failures=100),
        apply("book-flight", fail="before"),
        request="Book a room and a flight",
        prefix="stuck",
    )
    await open_saga(page, base_url, sid)
    await expect(page.locator("#status")).to_have_text("needs attention")
    stuck = row(page, "charge-card")
    await expect(stuck).to_have_attribute("data-compensation", "failed")
    await expect(stuck.get_by_role("button", name="Retry")).to_be_visible()
    await expect(stuck.get_by_role("button", name="Mark resolved")).to_be_visible()
    await expect(page.locator("#cancel")).to_be_hidden()
    await shot(page, "web-needs-attention.png")

    await stuck.get_by_role("button", name="Retry").click()
    await expect(stuck).to_contain_text("8 attempts")
    await stuck.get_by_role("textbox").fill("refunded in the Stripe dashboard")
    await stuck.get_by_role("button", name="Mark resolved").click()
    await expect(page.locator("#outcome")).to_contain_text(
        "failed and undone: 2 steps compensated, 1 step resolved by hand"
    )
    await expect(stuck).to_have_attribute("data-compensation", "resolved")
    await expect(stuck).to_contain_text("refunded in the Stripe dashboard")
    await shot(page, "web-resolved.png")


async def test_parked_step_buttons(page: Any, base_url: str, stack: Stack) -> None:
    sid = await start(
        stack,
        apply("reserve-room"),
        deliver("send-confirmation", lose_response=True),
        request="Book a room and tell the guest",
        prefix="parked",
    )
    await open_saga(page, base_url, sid)
    await expect(page.locator("#status")).to_have_text("needs attention")
    parked = row(page, "send-confirmation")
    await expect(parked).to_have_attribute("data-status", "uncertain")
    await expect(parked).to_contain_text("may already have taken effect")
    await expect(parked).to_contain_text("attempt 1 began at")
    await expect(parked).to_contain_text("receiver: the effects test system")
    await expect(parked.get_by_role("button", name="Do it again")).to_be_visible()
    await expect(page.locator("#cancel")).to_be_visible()
    await expect(page.locator("#outcome")).to_contain_text("confirm it happened, do it again")
    await shot(page, "web-parked.png")

    await parked.get_by_role("textbox").fill("the guest replied to it")
    await parked.get_by_role("button", name="It happened").click()
    await expect(page.locator("#outcome")).to_have_text("completed: 2 steps done")
    await expect(parked).to_have_attribute("data-status", "succeeded")
    await expect(parked).to_contain_text("note: the guest replied to it")
    assert effects.log_of(stack.effects, sid) == [
        ("apply", "reserve-room"),
        ("deliver", "send-confirmation"),
    ]


async def test_list_page(page: Any, base_url: str, stack: Stack) -> None:
    sid = await start(stack, apply("reserve-room"), approval=True, prefix="listed")
    await page.goto(f"{base_url}/login?token={TOKEN}")
    link = page.get_by_role("link", name=sid)
    await expect(link).to_be_visible()
    await expect(page.locator("#sagas tbody tr").first).to_contain_text(sid)
    await shot(page, "web-list.png")
    await link.click()
    await expect(page.locator("#status")).to_have_text("awaiting approval")
    await page.fill("#reject-reason", "not today")
    await page.click("#reject")
    outcome = page.locator("#outcome")
    await expect(outcome).to_have_text("rejected: plan rejected: admin (SAGA_WEB_TOKEN): not today")
