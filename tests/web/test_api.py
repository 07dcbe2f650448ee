"""The JSON API behind every button, against the real Temporal dev server and worker."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from temporalio.client import (
    CancelWorkflowInput,
    Client,
    Interceptor,
    OutboundInterceptor,
    WorkflowExecutionStatus,
)

from saga import SagaWorkflow
from tests import effects
from tests.conftest import Stack, eventually
from tests.web import CARD, TOKEN, apply, deliver, start, wait, web_app

BASE = "http://saga.test"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
async def api(stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=web_app(stack))
    async with httpx.AsyncClient(transport=transport, base_url=BASE, headers=AUTH) as http:
        yield http


@pytest.fixture
async def anonymous(stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=web_app(stack))
    async with httpx.AsyncClient(transport=transport, base_url=BASE) as http:
        yield http


async def detail(api: httpx.AsyncClient, sid: str) -> dict[str, Any]:
    r = await api.get(f"/api/sagas/{sid}")
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


async def until(api: httpx.AsyncClient, sid: str, check: Any) -> dict[str, Any]:
    async def probe() -> dict[str, Any] | None:
        view = await detail(api, sid)
        return view if check(view) else None

    return await eventually(probe, timeout=30, interval=0.2)  # type: ignore[no-any-return]


def step(view: dict[str, Any], step_id: str) -> dict[str, Any]:
    return next(s for s in view["state"]["steps"] if s["id"] == step_id)


async def execution(stack: Stack, sid: str) -> WorkflowExecutionStatus | None:
    return (await stack.client.get_workflow_handle(sid).describe()).status


# -- reading ------------------------------------------------------------------------------
async def test_list_newest_first(api: httpx.AsyncClient, stack: Stack) -> None:
    older = await start(stack, apply("a"))
    await asyncio.sleep(0.05)
    newer = await start(stack, apply("a"), approval=True)

    async def listed() -> list[dict[str, Any]] | None:
        r = await api.get("/api/sagas")
        assert r.status_code == 200, r.text
        rows = r.json()
        by_id = {row["saga_id"]: row for row in rows}
        if newer in by_id and by_id.get(older, {}).get("execution") == "completed":
            return rows
        return None

    rows = await eventually(listed)
    ids = [row["saga_id"] for row in rows]
    assert ids.index(newer) < ids.index(older)
    starts = [row["started_at"] for row in rows]
    assert starts == sorted(starts, reverse=True)
    row = next(r for r in rows if r["saga_id"] == newer)
    assert row["execution"] == "running"
    assert row["status"] == "awaiting_approval"
    assert next(r for r in rows if r["saga_id"] == older)["status"] == "completed"
    await api.post(f"/api/sagas/{newer}/reject", json={"reason": "test over"})


async def test_detail_shows_plan_and_masks_card_numbers(
    api: httpx.AsyncClient, stack: Stack
) -> None:
    sid = await start(
        stack,
        apply("reserve"),
        apply("charge", **{"name": "card 4111-1111-1111-1111"}),
        approval=True,
        request=f"Book the room for ana.lopez@example.com and pay with card {CARD}",
    )
    view = await until(api, sid, lambda v: v["state"]["status"] == "awaiting_approval")
    assert view["can_approve"] and view["can_cancel"] and not view["closed"]
    assert view["outcome"] == "waiting for approval"
    assert [s["id"] for s in view["state"]["plan"]["steps"]] == ["reserve", "charge"]
    assert view["state"]["plan_hash"]
    raw = (await api.get(f"/api/sagas/{sid}")).text
    assert CARD not in raw and "4242424242424242" not in raw
    assert "4111-1111-1111-1111" not in raw
    assert "•••• 4242" in view["state"]["request"]
    assert "ana.lopez" not in raw and "a***@example.com" in view["state"]["request"]
    assert view["state"]["plan"]["steps"][1]["args"]["name"] == "card •••• 1111"

    r = await api.get("/api/sagas/no-such-saga")
    assert r.status_code == 404
    await api.post(f"/api/sagas/{sid}/reject", json={"reason": "test over"})


# -- approval -----------------------------------------------------------------------------
async def test_approve_with_the_hash_shown(api: httpx.AsyncClient, stack: Stack) -> None:
    sid = await start(stack, apply("a"), apply("b"), approval=True)
    view = await until(api, sid, lambda v: v["can_approve"])

    stale = await api.post(f"/api/sagas/{sid}/approve", json={"plan_hash": "0" * 16})
    assert stale.status_code == 409
    assert "stale plan hash" in stale.json()["detail"]
    assert effects.effects_of(stack.effects, sid) == []

    r = await api.post(
        f"/api/sagas/{sid}/approve", json={"plan_hash": view["state"]["plan_hash"], "by": "ann"}
    )
    assert r.status_code == 200, r.text
    assert r.json()["state"]["approval"] == "approved"
    # Who approved is who the token says, not the free-text "by" a client sends.
    assert r.json()["state"]["approval_note"] == "approved by admin (SAGA_WEB_TOKEN)"

    done = await until(api, sid, lambda v: v["closed"])
    assert done["state"]["status"] == "completed"
    assert done["outcome"] == "completed: 2 steps done"
    assert done["execution"] == "completed"
    assert not done["can_cancel"] and not done["can_approve"]
    assert step(done, "a")["external_id"].startswith("eff-")
    assert len(effects.effects_of(stack.effects, sid)) == 2

    again = await api.post(f"/api/sagas/{sid}/approve", json={"plan_hash": "x"})
    assert again.status_code == 409


async def test_reject(api: httpx.AsyncClient, stack: Stack) -> None:
    sid = await start(stack, apply("a"), approval=True)
    await until(api, sid, lambda v: v["can_approve"])
    r = await api.post(f"/api/sagas/{sid}/reject", json={"reason": "too expensive", "by": "bob"})
    assert r.status_code == 200, r.text
    done = await until(api, sid, lambda v: v["closed"])
    assert done["state"]["status"] == "rejected"
    assert done["outcome"] == "rejected: plan rejected: admin (SAGA_WEB_TOKEN): too expensive"
    assert effects.effects_of(stack.effects, sid) == []


# -- cancel -------------------------------------------------------------------------------
async def test_cancel_compensates_in_reverse_order(api: httpx.AsyncClient, stack: Stack) -> None:
    sid = await start(stack, apply("a"), apply("b"), wait("hold", 60), apply("c"))
    await until(api, sid, lambda v: v["state"]["steps"] and step(v, "hold")["status"] == "running")

    r = await api.post(f"/api/sagas/{sid}/cancel")
    assert r.status_code in (200, 202), r.text
    assert r.json()["cancelled"] in (None, True)

    done = await until(api, sid, lambda v: v["closed"])
    assert done["execution"] == "canceled"
    assert done["state"]["status"] == "cancelled"
    assert done["outcome"] == "cancelled: 2 steps compensated"
    assert done["cancel_requested"]
    assert [s["compensation"] for s in done["state"]["steps"]] == [
        "compensated",
        "compensated",
        "none",
        "none",
    ]
    assert step(done, "c")["status"] == "skipped"
    assert effects.log_of(stack.effects, sid) == [
        ("apply", "a"),
        ("apply", "b"),
        ("revert", "b"),
        ("revert", "a"),
    ]

    again = await api.post(f"/api/sagas/{sid}/cancel")
    assert again.status_code == 200
    assert again.json()["cancelled"] is False
    assert again.json()["message"] == "already cancelled: 2 steps compensated"


async def test_cancel_and_wait_while_awaiting_approval(
    api: httpx.AsyncClient, stack: Stack
) -> None:
    sid = await start(stack, apply("a"), approval=True)
    await until(api, sid, lambda v: v["can_approve"])
    r = await api.post(f"/api/sagas/{sid}/cancel", params={"wait": 20})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["cancelled"] is True
    assert body["message"] == "cancelled: 0 steps compensated"
    assert body["saga"]["state"]["error"] == "cancelled before any step ran"
    assert effects.effects_of(stack.effects, sid) == []


async def test_cancel_after_completion_changes_nothing(
    api: httpx.AsyncClient, stack: Stack
) -> None:
    sid = await start(stack, apply("a"))
    await until(api, sid, lambda v: v["closed"])
    r = await api.post(f"/api/sagas/{sid}/cancel", params={"wait": 5})
    assert r.status_code == 200, r.text
    assert r.json()["cancelled"] is False
    assert r.json()["message"] == "already completed: nothing was cancelled"
    assert r.json()["saga"]["state"]["status"] == "completed"
    assert [e["reverted"] for e in effects.effects_of(stack.effects, sid)] == [0]
    assert await execution(stack, sid) == WorkflowExecutionStatus.COMPLETED


class _CancelAfterCompletion(Interceptor):
    """Holds every cancel until its workflow has completed: the cancel loses the race."""

    def __init__(self, client: Client) -> None:
        self.client = client

    def intercept_client(self, next: OutboundInterceptor) -> OutboundInterceptor:
        client = self.client

        class Late(OutboundInterceptor):
            async def cancel_workflow(self, input: CancelWorkflowInput) -> None:
                await client.get_workflow_handle(input.id).result()
                await super().cancel_workflow(input)

        return Late(next)


async def test_cancel_racing_completion_reports_the_final_state(stack: Stack) -> None:
    config = stack.client.config()
    config["interceptors"] = [_CancelAfterCompletion(stack.client)]
    late_client = Client(**config)
    transport = httpx.ASGITransport(app=web_app(stack, late_client))
    async with httpx.AsyncClient(transport=transport, base_url=BASE, headers=AUTH) as api:
        sid = await start(stack, apply("a"), wait("hold", 1), apply("b"))
        await until(api, sid, lambda v: v["state"]["status"] == "running")
        r = await api.post(f"/api/sagas/{sid}/cancel")  # describe: running; cancel: too late
        assert r.status_code == 200, r.text
        assert r.json()["cancelled"] is False
        assert r.json()["message"] == "already completed: nothing was cancelled"
        assert r.json()["saga"]["state"]["status"] == "completed"
    assert [e["reverted"] for e in effects.effects_of(stack.effects, sid)] == [0, 0]


async def test_cancel_near_completion_is_all_or_nothing(
    api: httpx.AsyncClient, stack: Stack
) -> None:
    """Cancels fired around the moment of completion: each saga ends one way, and says so."""
    outcomes = []
    for delay in (0.0, 0.8, 0.9, 0.95, 1.0, 1.05, 1.1, 1.2, 3.0):  # it closes ~1 s in
        sid = await start(stack, apply("a"), wait("hold", 0.5), apply("b"))
        handle = stack.client.get_workflow_handle_for(SagaWorkflow.run, sid)

        async def holding(handle: Any = handle) -> bool:
            try:
                state = await handle.query(SagaWorkflow.state)
            except Exception:
                return False
            return any(s.id == "hold" and s.status == "running" for s in state.steps)

        await eventually(holding, interval=0.02)
        await asyncio.sleep(delay)
        r = await api.post(f"/api/sagas/{sid}/cancel", params={"wait": 30})
        assert r.status_code == 200, r.text
        body = r.json()
        rows = effects.effects_of(stack.effects, sid)
        if body["cancelled"]:
            assert body["saga"]["state"]["status"] == "cancelled"
            steps = "1 step" if len(rows) == 1 else f"{len(rows)} steps"
            assert body["message"] == f"cancelled: {steps} compensated"
            assert all(e["reverted"] == 1 for e in rows)
        else:
            assert body["message"] == "already completed: nothing was cancelled"
            assert body["saga"]["state"]["status"] == "completed"
            assert [e["reverted"] for e in rows] == [0, 0]
            view = await detail(api, sid)
            assert view["outcome"] in (
                "already completed: nothing was cancelled",  # the cancel arrived, too late
                "completed: 3 steps done",  # the cancel found it closed and was not sent
            )
        outcomes.append(body["cancelled"])
    assert outcomes[0] is True  # mid-wait: always cancelled
    assert outcomes[-1] is False  # long after the end: never


# -- stuck compensation -------------------------------------------------------------------
async def test_stuck_compensation_retry_and_resolve(api: httpx.AsyncClient, stack: Stack) -> None:
    sid = await start(
        stack,
        apply("a", revert_failures=5),  # gives in on the operator's retry
        apply("b", revert_failures=100),  # never does: resolved by hand
        apply("c", fail="before"),
    )
    stuck = await until(api, sid, lambda v: v["state"]["status"] == "needs_attention")
    assert step(stuck, "b")["compensation"] == "failed"
    assert step(stuck, "a")["compensation"] == "registered"  # reverse order: b before a
    assert not stuck["can_cancel"]  # already unwinding: a cancel would undo nothing more
    assert stuck["outcome"].startswith("needs attention: the compensation of b failed")

    wrong = await api.post(f"/api/sagas/{sid}/retry", json={"step_id": "a"})
    assert wrong.status_code == 409
    assert "not waiting for an operator" in wrong.json()["detail"]

    r = await api.post(f"/api/sagas/{sid}/retry", json={"step_id": "b"})
    assert r.status_code == 200, r.text
    again = await until(
        api,
        sid,
        lambda v: (
            v["state"]["status"] == "needs_attention" and step(v, "b")["compensation_attempts"] == 8
        ),
    )
    assert step(again, "b")["compensation"] == "failed"

    r = await api.post(f"/api/sagas/{sid}/resolve", json={"step_id": "b", "note": "undone by hand"})
    assert r.status_code == 200, r.text
    a_stuck = await until(api, sid, lambda v: step(v, "a")["compensation"] == "failed")
    assert step(a_stuck, "b")["compensation"] == "resolved"
    assert step(a_stuck, "b")["operator_note"] == "undone by hand"

    r = await api.post(f"/api/sagas/{sid}/retry", json={"step_id": "a"})
    assert r.status_code == 200, r.text
    done = await until(api, sid, lambda v: v["closed"])
    assert done["state"]["status"] == "compensated"
    assert step(done, "a")["compensation"] == "compensated"
    assert done["outcome"].startswith("failed and undone: 2 steps compensated, 1 step resolved")
    late = await api.post(f"/api/sagas/{sid}/resolve", json={"step_id": "a"})
    assert late.status_code == 409


# -- a step parked as uncertain ------------------------------------------------------------
@pytest.mark.parametrize("answer", ["resolve", "retry", "cancel"])
async def test_a_parked_step_shows_its_evidence_and_the_operator_decides(
    api: httpx.AsyncClient, stack: Stack, answer: str
) -> None:
    sid = await start(stack, apply("hold"), deliver("tell", lose_response=True))
    parked = await until(api, sid, lambda v: v["state"]["status"] == "needs_attention")
    tell = step(parked, "tell")
    assert tell["status"] == "uncertain"
    assert tell["external_id"] == f"dlv-{sid}/tell"
    evidence = tell["evidence"]
    assert evidence["attempt"] == 1 and evidence["receiver"] == "the effects test system"
    assert "ConnectionResetError" in evidence["ended"] and evidence["worker"], evidence
    assert parked["outcome"] == (
        "needs attention: tell may already have taken effect and was not repeated; "
        "confirm it happened, do it again, or cancel the saga"
    )
    assert parked["can_cancel"]  # nothing is unwinding yet: cancel is one of the answers
    assert effects.log_of(stack.effects, sid) == [("apply", "hold"), ("deliver", "tell")]

    if answer == "cancel":
        r = await api.post(f"/api/sagas/{sid}/cancel")
        assert r.status_code in (200, 202), r.text
    else:
        body = {"step_id": "tell", "note": "they have it"} if answer == "resolve" else {}
        r = await api.post(f"/api/sagas/{sid}/{answer}", json={"step_id": "tell", **body})
        assert r.status_code == 200, r.text
    done = await until(api, sid, lambda v: v["closed"])
    log = effects.log_of(stack.effects, sid)
    if answer == "resolve":
        assert done["state"]["status"] == "completed"
        assert step(done, "tell")["status"] == "succeeded"
        assert step(done, "tell")["operator_note"] == "they have it"
        assert log == [("apply", "hold"), ("deliver", "tell")]
    elif answer == "retry":
        assert done["state"]["status"] == "completed"
        assert step(done, "tell")["status"] == "succeeded"
        assert log == [("apply", "hold"), ("deliver", "tell"), ("deliver", "tell")]
    else:
        assert done["state"]["status"] == "cancelled"
        assert step(done, "tell")["status"] == "uncertain"
        assert log == [("apply", "hold"), ("deliver", "tell"), ("revert", "hold")]


# -- security -----------------------------------------------------------------------------
async def test_without_the_token_401_and_nothing_changes(
    anonymous: httpx.AsyncClient, api: httpx.AsyncClient, stack: Stack
) -> None:
    sid = await start(stack, apply("a"), approval=True)
    view = await until(api, sid, lambda v: v["can_approve"])
    plan_hash = view["state"]["plan_hash"]
    wrong = {"Authorization": "Bearer not-the-token"}
    for headers in ({}, wrong):
        for method, path, body in [
            ("GET", "/api/sagas", None),
            ("GET", f"/api/sagas/{sid}", None),
            ("GET", "/openapi.json", None),
            ("POST", f"/api/sagas/{sid}/approve", {"plan_hash": plan_hash}),
            ("POST", f"/api/sagas/{sid}/reject", {"reason": "x"}),
            ("POST", f"/api/sagas/{sid}/cancel", None),
        ]:
            r = await anonymous.request(method, path, json=body, headers=headers)
            assert r.status_code == 401, (method, path, r.text)
            assert r.json() == {"detail": "a token is required (yours, or SAGA_WEB_TOKEN)"}
    page = await anonymous.get(f"/sagas/{sid}", headers={"Accept": "text/html"})
    assert page.status_code == 401
    assert 'action="/login"' in page.text
    assert sid not in page.text.replace(f'value="/sagas/{sid}"', "")

    await asyncio.sleep(0.5)
    still = await detail(api, sid)
    assert still["state"]["status"] == "awaiting_approval" and still["can_approve"]
    assert await execution(stack, sid) == WorkflowExecutionStatus.RUNNING
    await api.post(f"/api/sagas/{sid}/reject", json={"reason": "test over"})


async def test_login_cookie(anonymous: httpx.AsyncClient) -> None:
    bad = await anonymous.get("/login", params={"token": "nope"})
    assert bad.status_code == 401
    r = await anonymous.get("/login", params={"token": TOKEN, "next": "//evil.example/x"})
    assert r.status_code == 303
    assert r.headers["location"] == "/"
    cookie = r.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie
    assert TOKEN.lower() not in cookie
    ok = await anonymous.get("/api/sagas")
    assert ok.status_code == 200
    page = await anonymous.get("/")
    assert page.status_code == 200
    assert page.headers["x-frame-options"] == "DENY"
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]

    form = await anonymous.post(
        "/login", data={"token": TOKEN, "next": "/"}, headers={"Origin": BASE}
    )
    assert form.status_code == 303
    cross = await anonymous.post(
        "/login", data={"token": TOKEN}, headers={"Origin": "https://evil.example"}
    )
    assert cross.status_code == 403


async def test_cross_site_post_refused(anonymous: httpx.AsyncClient, stack: Stack) -> None:
    login = await anonymous.get("/login", params={"token": TOKEN})
    assert login.status_code == 303
    sid = await start(stack, apply("a"), approval=True)
    evil = "https://evil.example"
    for headers in (
        {"Origin": evil},
        {"Origin": "null"},
        {"Referer": f"{evil}/page"},
        {"Sec-Fetch-Site": "cross-site", "Origin": BASE},
        {},  # a cookie alone, from nowhere, is not enough for a POST
    ):
        r = await anonymous.post(f"/api/sagas/{sid}/cancel", headers=headers)
        assert r.status_code == 403, (headers, r.text)
        assert r.json() == {"detail": "cross-site request refused"}
    bearer_from_evil = await anonymous.post(
        f"/api/sagas/{sid}/cancel", headers={"Origin": evil, **AUTH}
    )
    assert bearer_from_evil.status_code == 403
    assert await execution(stack, sid) == WorkflowExecutionStatus.RUNNING

    get_only = await anonymous.get(f"/api/sagas/{sid}/cancel")
    assert get_only.status_code == 405
    assert await execution(stack, sid) == WorkflowExecutionStatus.RUNNING

    same = await anonymous.post(
        f"/api/sagas/{sid}/cancel",
        params={"wait": 20},
        headers={"Origin": BASE, "Sec-Fetch-Site": "same-origin"},
    )
    assert same.status_code == 200, same.text
    assert same.json()["cancelled"] is True


async def test_openapi_documents_every_button(api: httpx.AsyncClient) -> None:
    spec = (await api.get("/openapi.json")).json()
    paths = spec["paths"]
    assert set(paths["/api/sagas"]) == {"get"}
    assert set(paths["/api/sagas/{saga_id}"]) == {"get"}
    for action in ("cancel", "approve", "reject", "retry", "resolve"):
        assert set(paths[f"/api/sagas/{{saga_id}}/{action}"]) == {"post"}
