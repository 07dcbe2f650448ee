"""The web list in Chromium: each saga's own status (a compensated saga does not read
"completed"), what it does, its amount, how long it took; the status filter and the
word search, kept in the address so a filtered list can be shared."""

from __future__ import annotations

from typing import Any

from saga._listing import list_sagas
from tests.conftest import Stack, eventually
from tests.web import TOKEN, apply, start
from tests.web.browser import expect, shot


async def test_the_list_says_what_each_saga_did(page: Any, base_url: str, stack: Stack) -> None:
    done = await start(stack, apply("reserve-room"), request="book a quiet room", prefix="lst")
    undone = await start(
        stack, apply("charge-card"), apply("book-flight", fail="before"), prefix="lst"
    )
    waiting = await start(stack, apply("reserve-room"), approval=True, prefix="lst")

    async def indexed() -> bool:
        rows = {r.saga_id: r for r in await list_sagas(stack.client, limit=500)}
        return (
            all(
                s in rows and rows[s].status is not None and rows[s].closed_at is not None
                for s in (done, undone)
            )
            and waiting in rows
        )

    await eventually(indexed)
    await page.goto(f"{base_url}/login?token={TOKEN}")
    row = page.locator(f'#sagas tbody tr:has(a:text-is("{undone}"))')
    await expect(row).to_have_attribute("data-status", "compensated")
    await expect(row.locator(".badge")).to_have_text("compensated")
    await expect(row.locator(".world")).to_have_text("undone")
    await expect(row.locator("td.what")).to_have_text("effects.apply, effects.apply")
    await expect(row.locator("td").nth(5)).not_to_be_empty()  # how long it took
    await expect(page.locator(f'#sagas tbody tr:has(a:text-is("{waiting}")) .badge')).to_have_text(
        "awaiting approval"
    )
    await shot(page, "web-list-all.png")

    await page.select_option("#filter select[name=status]", "compensated")
    await expect(page).to_have_url(f"{base_url}/?status=compensated")
    await expect(page.locator(f'#sagas a:text-is("{done}")')).to_have_count(0)
    await expect(page.locator(f'#sagas a:text-is("{undone}")')).to_have_count(1)
    statuses = await page.locator("#sagas tbody tr").evaluate_all(
        "rows => rows.map(r => r.dataset.status)"
    )
    assert statuses and set(statuses) == {"compensated"}, statuses
    await shot(page, "web-list-compensated.png")

    await page.select_option("#filter select[name=status]", "")
    await page.fill("#filter input[name=q]", "quiet room")
    await page.press("#filter input[name=q]", "Enter")
    await expect(page.locator("#sagas tbody tr")).to_have_count(1)
    await expect(page.locator("#sagas tbody tr")).to_contain_text(done)
    await page.fill("#filter input[name=q]", "nothing-like-this-anywhere")
    await page.press("#filter input[name=q]", "Enter")
    await expect(page.locator("#none-match")).to_be_visible()
    await expect(page.locator("#sagas tbody tr")).to_have_count(0)

    # The saga's page says the same, under its title.
    await page.goto(f"{base_url}/sagas/{done}")
    await expect(page.locator("#summary")).to_have_text("effects.apply")
    await expect(page.locator('#steps tr[data-step="reserve-room"] td.undo')).to_have_text("kept")

    # A decision on a saga's page shows under "Decisions", from the audit trail.
    await page.goto(f"{base_url}/sagas/{waiting}")
    await expect(page.locator("#decisions-none")).to_be_visible()
    await page.click("#cancel")  # the confirm dialog is accepted
    await expect(page.locator("#status")).to_have_text("cancelled")
    await expect(page.locator("#decisions li")).to_have_count(1)
    await expect(page.locator("#decisions li")).to_contain_text(
        "admin (SAGA_WEB_TOKEN) (web): cancel → done"
    )
