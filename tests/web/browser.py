"""What the browser tests share: Debian's headless Chromium on a real uvicorn.

The fixtures are offered to the tests of this package by its conftest.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import AsyncIterator
from typing import Any

import pytest
import uvicorn
from playwright import async_api as playwright_api

from saga import free_port
from tests.conftest import ARTIFACTS, Stack
from tests.web import TOKEN, web_app

expect = playwright_api.expect

CHROMIUM = os.environ.get("SAGA_TEST_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]


@pytest.fixture
def chromium() -> str:
    """The browser: a test that needs it fails without it (a skipped one proves nothing)."""
    assert os.path.exists(CHROMIUM), f"{CHROMIUM} missing: apt-get install chromium"
    return CHROMIUM


@pytest.fixture
async def base_url(stack: Stack) -> AsyncIterator[str]:
    """`saga web` on a free port, served by uvicorn in the test's event loop."""
    port = free_port()
    config = uvicorn.Config(
        web_app(stack), host="127.0.0.1", port=port, log_level="warning", lifespan="off"
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    await task


@pytest.fixture
async def page(base_url: str, chromium: str) -> AsyncIterator[Any]:
    async with playwright_api.async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        context = await browser.new_context(viewport={"width": 1280, "height": 900})
        page = await context.new_page()
        page.set_default_timeout(30_000)
        expect.set_options(timeout=30_000)
        page.on("dialog", lambda dialog: dialog.accept())
        yield page
        await browser.close()


async def open_saga(page: Any, base_url: str, sid: str) -> None:
    """Log in through the login form, as an operator does, and land on the saga."""
    await page.goto(f"{base_url}/sagas/{sid}")
    await page.fill("#token", TOKEN)
    await page.click("button[type=submit]")
    await expect(page.locator("#saga-id")).to_have_text(sid)


def row(page: Any, step_id: str) -> Any:
    return page.locator(f'#steps tr[data-step="{step_id}"]')


async def shot(page: Any, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / name), full_page=True)
