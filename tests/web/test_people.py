"""People, roles and logins, against the real web app, Temporal dev server and ledger:
every API route for every role, a person's own token and sessions (logout, revocation,
rotation end them), the brake on guessed tokens, the bootstrap token's length, `saga
people` from the command line, and in Chromium a viewer who sees no button and an
approver whose name the approval shows."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from saga import Policy, SagaError, SagaInput, SagaWorkflow
from saga._audit import trail
from saga._people import People, Role
from saga.web import create_app
from saga.web._auth import Brake
from tests.conftest import Stack, eventually, unique
from tests.test_cli import saga
from tests.web import TOKEN, apply, start, web_app
from tests.web.browser import expect, shot

BASE = "http://saga.test"
ROUTES: list[tuple[str, str, dict[str, Any] | None]] = [
    ("GET", "/api/sagas", None),
    ("GET", "/api/sagas/{sid}", None),
    ("GET", "/api/sagas/{sid}/audit", None),
    ("GET", "/api/me", None),
    ("POST", "/api/sagas/{sid}/cancel", None),
    ("POST", "/api/sagas/{sid}/approve", {"plan_hash": "nothing-to-see"}),
    ("POST", "/api/sagas/{sid}/reject", {"reason": "no"}),
    ("POST", "/api/sagas/{sid}/retry", {"step_id": "a"}),
    ("POST", "/api/sagas/{sid}/resolve", {"step_id": "a"}),
]
ALLOWED = {
    Role.VIEWER: {"GET"},
    Role.OPERATOR: {"GET", "cancel", "retry", "resolve"},
    Role.APPROVER: {"GET", "approve", "reject"},
    Role.ADMIN: {"GET", "cancel", "retry", "resolve", "approve", "reject"},
}


@pytest.fixture
async def http(stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=web_app(stack))
    async with httpx.AsyncClient(transport=transport, base_url=BASE) as client:
        yield client


def person(stack: Stack, role: Role) -> tuple[str, str]:
    name = unique(role.value)
    return name, People(stack.ledger).add(name, role)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_every_route_for_every_role(http: httpx.AsyncClient, stack: Stack) -> None:
    sid = await start(stack, apply("a"), approval=True, prefix="roles")
    for role, allowed in ALLOWED.items():
        name, token = person(stack, role)
        for method, route, body in ROUTES:
            action = "GET" if method == "GET" else route.rsplit("/", 1)[1]
            r = await http.request(
                method, route.format(sid=f"nobody-{sid}"), json=body, headers=bearer(token)
            )
            if action in allowed:
                assert r.status_code != 403, (role, method, route, r.text)
            else:
                assert r.status_code == 403, (role, method, route, r.status_code)
                detail = r.json()["detail"]
                assert detail.startswith(f"forbidden: {name} is ") and role.value in detail
                assert f"{action} needs the role " in detail
        me = (await http.get("/api/me", headers=bearer(token))).json()
        assert (me["name"], me["role"]) == (name, role.value)
    # The saga nobody may touch stayed as it was: waiting for approval.
    view = (await http.get(f"/api/sagas/{sid}", headers=bearer(TOKEN))).json()
    assert view["state"]["status"] == "awaiting_approval"
    await stack.client.get_workflow_handle(sid).cancel()


async def test_logins_are_sessions_that_end(http: httpx.AsyncClient, stack: Stack) -> None:
    name, token = person(stack, Role.OPERATOR)
    form = {"Origin": BASE, "Content-Type": "application/x-www-form-urlencoded"}
    login = await http.post("/login", content=f"token={token}&next=/", headers=form)
    assert login.status_code == 303
    cookie = login.cookies["saga_session"]
    assert token not in cookie and len(cookie) > 30
    other = await http.post("/login", content=f"token={token}&next=/", headers=form)
    assert other.cookies["saga_session"] != cookie  # each login its own session

    def as_session(sid: str) -> dict[str, str]:
        return {"Cookie": f"saga_session={sid}"}

    assert (await http.get("/api/me", headers=as_session(cookie))).json()["name"] == name
    out = await http.post("/logout", headers={**as_session(cookie), "Origin": BASE})
    assert out.status_code == 303
    assert (await http.get("/api/me", headers=as_session(cookie))).status_code == 401
    kept = other.cookies["saga_session"]
    assert (await http.get("/api/me", headers=as_session(kept))).status_code == 200

    fresh = People(stack.ledger).rotate(name)  # the old token and its logins end
    assert (await http.get("/api/me", headers=as_session(kept))).status_code == 401
    assert (await http.get("/api/me", headers=bearer(token))).status_code == 401
    assert (await http.get("/api/me", headers=bearer(fresh))).status_code == 200
    People(stack.ledger).revoke(name)
    assert (await http.get("/api/me", headers=bearer(fresh))).status_code == 401


async def test_guessed_tokens_are_slowed_and_recorded(stack: Stack) -> None:
    brake = Brake(free=3, first=0.1, most=0.4)
    app = create_app(stack.settings, lambda: _client(stack), token=TOKEN, brake=brake)
    transport = httpx.ASGITransport(app=app, client=("203.0.113.7", 1234))
    async with httpx.AsyncClient(transport=transport, base_url=BASE) as http:
        began = time.monotonic()
        for n in range(8):
            r = await http.get("/api/sagas", headers=bearer(f"saga_guess-{n}"))
            assert r.status_code == 401
        took = time.monotonic() - began
        # 3 free, then 0.1, 0.2, 0.4, 0.4, 0.4 seconds.
        assert took >= 1.5, took
        assert (await http.get("/api/me", headers=bearer(TOKEN))).status_code == 200
    refused = [e for e in trail(stack.ledger) if e.who == "unknown (203.0.113.7)"]
    assert len(refused) == 8 and {e.action for e in refused} == {"login"}


async def _client(stack: Stack) -> Any:
    return stack.client


def test_a_short_bootstrap_token_is_refused() -> None:
    with pytest.raises(SagaError, match="SAGA_WEB_TOKEN: at least 16 characters"):
        create_app(token="too-short")


async def test_people_from_the_command_line(stack: Stack) -> None:
    name = unique("ana")
    added = await saga(stack, "people", "add", name, "--role", "approver")
    assert added.returncode == 0, added.stderr
    token = added.stdout.strip()
    assert token.startswith("saga_") and "shown only now" in added.stderr
    found = People(stack.ledger).by_token(token)
    assert found is not None and (found.name, found.role) == (name, Role.APPROVER)
    twice = await saga(stack, "people", "add", name, "--role", "viewer")
    assert twice.returncode == 2 and "exists already" in twice.stderr
    listed = json.loads((await saga(stack, "people", "list", "--json")).stdout)
    assert {"name": name, "role": "approver"}.items() <= next(
        p for p in listed if p["name"] == name
    ).items()
    rotated = await saga(stack, "people", "rotate", name)
    assert rotated.returncode == 0 and People(stack.ledger).by_token(token) is None
    revoked = await saga(stack, "people", "revoke", name)
    assert revoked.returncode == 0, revoked.stderr
    assert People(stack.ledger).by_token(rotated.stdout.strip()) is None
    actions = [e.action for e in trail(stack.ledger) if e.detail and name in e.detail]
    assert actions == ["people add", "people add", "people rotate", "people revoke"]


async def test_a_viewer_sees_no_button_and_an_approver_is_named(
    page: Any, base_url: str, stack: Stack
) -> None:
    sid = await start(stack, apply("a"), approval=True, prefix="people-page")
    _, viewer = person(stack, Role.VIEWER)
    approver_name, approver = person(stack, Role.APPROVER)
    await page.goto(f"{base_url}/login?token={viewer}&next=/sagas/{sid}")
    await expect(page.locator("#status")).to_have_text("awaiting approval")
    await expect(page.locator("#me")).to_contain_text("· viewer")
    await expect(page.locator("#approval")).to_be_hidden()
    await expect(page.locator("#cancel")).to_be_hidden()
    assert await page.locator("main button:visible").count() == 0
    await shot(page, "web-viewer.png")

    await page.context.clear_cookies()
    await page.goto(f"{base_url}/login?token={approver}&next=/sagas/{sid}")
    await expect(page.locator("#approval")).to_be_visible()
    await expect(page.locator("#cancel")).to_be_hidden()  # cancelling is an operator's
    await page.click("#approve")
    await expect(page.locator("#status")).to_have_text("completed")
    await expect(page.locator("#decisions li")).to_contain_text(f"{approver_name} (web): approve")
    handle = stack.client.get_workflow_handle_for(SagaWorkflow.run, sid)
    assert (await handle.query(SagaWorkflow.state)).approval_note == f"approved by {approver_name}"
    await shot(page, "web-approver.png")


async def test_revoking_ends_a_session_at_once(http: httpx.AsyncClient, stack: Stack) -> None:
    name, token = person(stack, Role.VIEWER)
    form = {"Origin": BASE, "Content-Type": "application/x-www-form-urlencoded"}
    login = await http.post("/login", content=f"token={token}&next=/", headers=form)
    cookie = {"Cookie": f"saga_session={login.cookies['saga_session']}"}
    assert (await http.get("/api/sagas", headers=cookie)).status_code == 200
    await asyncio.to_thread(People(stack.ledger).revoke, name)
    assert (await http.get("/api/sagas", headers=cookie)).status_code == 401


async def test_four_eyes_the_starter_cannot_approve(
    http: httpx.AsyncClient, stack: Stack, tmp_path: Any
) -> None:
    ana, ana_token = person(stack, Role.APPROVER)
    bo, bo_token = person(stack, Role.APPROVER)
    sid = unique("four-eyes")
    await stack.client.start_workflow(
        SagaWorkflow.run,
        SagaInput(
            plan={"steps": [apply("a")]},
            policy=Policy(approval="always", four_eyes=True),
            started_by=ana,
        ),
        id=sid,
        task_queue=stack.settings.task_queue,
    )
    view = await _until_awaiting(http, sid)
    body = {"plan_hash": view["state"]["plan_hash"]}
    own = await http.post(f"/api/sagas/{sid}/approve", json=body, headers=bearer(ana_token))
    assert own.status_code == 409, own.text
    assert f"four eyes: {ana} started this saga and cannot approve it" in own.json()["detail"]
    other = await http.post(f"/api/sagas/{sid}/approve", json=body, headers=bearer(bo_token))
    assert other.status_code == 200, other.text
    assert other.json()["state"]["approval_note"] == f"approved by {bo}"

    # From the command line: whoever started it (user@host) cannot approve it either.
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps({"approval": "always", "four_eyes": True}))
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"steps": [apply("b")]}))
    cli_sid = unique("four-eyes-cli")
    extra = {"SAGA_POLICY_FILE": str(policy)}
    started = await saga(stack, "start", "--plan", str(plan), "--id", cli_sid, **extra)
    assert started.returncode == 0, started.stderr
    await _until_awaiting(http, cli_sid)
    refused = await saga(stack, "approve", cli_sid)
    assert refused.returncode == 2 and "four eyes: " in refused.stderr, refused.stderr
    await stack.client.get_workflow_handle(cli_sid).cancel()


async def _until_awaiting(http: httpx.AsyncClient, sid: str) -> dict[str, Any]:
    async def awaiting() -> dict[str, Any] | None:
        view = (await http.get(f"/api/sagas/{sid}", headers=bearer(TOKEN))).json()
        return view if view.get("can_approve") else None

    found: dict[str, Any] = await eventually(awaiting)
    return found
