"""The audit trail: every decision on a saga, from the command line and the web app, with
who, when, what and how it turned out; append-only in the ledger's database (SQLite and
PostgreSQL), and shown by `saga audit`, `saga status` and the saga's API."""

from __future__ import annotations

import getpass
import json
import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from saga import Ledger
from saga._audit import AuditEntry, record, trail
from saga._ledger_schema import utcnow
from tests import effects
from tests.conftest import Stack, eventually, unique
from tests.pgdb import ledger_on
from tests.test_cli import saga, write_plan
from tests.web import TOKEN, apply, start, web_app

ME = f"{getpass.getuser()}@{socket.gethostname()}"


@pytest.fixture(params=["sqlite", "postgresql"])
def ledger(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Ledger]:
    with ledger_on(request.param, tmp_path, "saga_audit") as ledger:
        yield ledger


def test_the_trail_is_append_only_and_masks_free_text(ledger: Ledger) -> None:
    entry = AuditEntry(
        at=utcnow(), who="ana", via="web", action="reject", saga_id="s-1",
        outcome="done", detail="reason call ana@example.com, card 4242 4242 4242 4242",
    )  # fmt: skip
    record(ledger, entry)
    record(ledger, entry.model_copy(update={"action": "cancel", "saga_id": "s-2"}))
    (kept,) = trail(ledger, saga_id="s-1")
    assert (kept.who, kept.action, kept.outcome) == ("ana", "reject", "done")
    assert kept.detail == "reason call a***@example.com, card •••• 4242"
    assert [e.saga_id for e in trail(ledger)] == ["s-1", "s-2"]
    for change in ("UPDATE saga_audit SET who = 'mallory'", "DELETE FROM saga_audit"):
        with pytest.raises(DBAPIError, match="append-only"), ledger.engine.begin() as conn:
            conn.execute(text(change))
    assert [e.who for e in trail(ledger)] == ["ana", "ana"]


async def test_the_command_line_records_its_decisions(stack: Stack, tmp_path: Path) -> None:
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps({"approval": "always", "allowed_actions": ["effects.apply"]}))
    extra = {"SAGA_POLICY_FILE": str(policy)}
    plan = {"steps": [{"id": "a", "action": "effects.apply", "args": {"name": "a"}}]}
    sid = unique("audit")
    started = await saga(stack, "start", "--plan", write_plan(tmp_path, plan), "--id", sid, **extra)
    assert started.returncode == 0, started.stderr
    stale = await saga(stack, "approve", sid, "--plan-hash", "00000000deadbeef")
    assert stale.returncode == 2
    approved = await saga(stack, "approve", sid, "--by", "ops")
    assert approved.returncode == 0, approved.stderr
    await eventually(lambda: len(effects.effects_of(stack.effects, sid)) == 1)

    listed = await saga(stack, "audit", "--saga", sid, "--json")
    assert listed.returncode == 0, listed.stderr
    rows = json.loads(listed.stdout)
    assert [(r["action"], r["who"], r["via"], r["saga_id"]) for r in rows] == [
        ("start", ME, "cli", sid),
        ("approve", ME, "cli", sid),
        ("approve", ME, "cli", sid),
    ]
    assert rows[0]["outcome"] == "done" and rows[0]["detail"].startswith("plan ")
    assert rows[1]["outcome"].startswith("refused: ") and "stale plan hash" in rows[1]["outcome"]
    assert rows[1]["detail"] == "plan hash 00000000deadbeef"
    assert (rows[2]["outcome"], rows[2]["detail"]) == ("done", "by ops")

    status = await saga(stack, "status", sid)
    assert "decisions:" in status.stdout
    assert f"{ME} (cli): approve -> done (by ops)" in status.stdout
    recent = await saga(stack, "audit", "--since", "10m")
    assert sid in recent.stdout and "approve" in recent.stdout
    bad = await saga(stack, "audit", "--since", "yesterday-ish")
    assert bad.returncode == 2 and "--since 'yesterday-ish'" in bad.stderr


async def test_the_web_app_records_its_decisions_and_refused_logins(stack: Stack) -> None:
    app = web_app(stack)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://saga.test") as http:
        sid = await start(stack, apply("a"), approval=True, prefix="audit-web")
        r = await http.post(f"/api/sagas/{sid}/reject", json={"reason": "not today"}, headers=auth)
        assert r.status_code == 200, r.text
        again = await http.post(f"/api/sagas/{sid}/cancel", headers=auth)
        assert again.status_code == 200 and again.json()["cancelled"] is False
        wrong = await http.post(
            "/login",
            content="token=guess",
            headers={
                "Origin": "http://saga.test",
                "Content-Type": "application/x-www-form-urlencoded",
            },
        )
        assert wrong.status_code == 401
        got = await http.get(f"/api/sagas/{sid}/audit", headers=auth)
        assert got.status_code == 200, got.text
        rows = got.json()
        assert [(r["action"], r["via"], r["who"]) for r in rows] == [
            ("reject", "api", "admin (SAGA_WEB_TOKEN)"),
            ("cancel", "api", "admin (SAGA_WEB_TOKEN)"),
        ]
        assert (rows[0]["outcome"], rows[0]["detail"]) == ("done", "reason not today")
        assert rows[1]["outcome"].startswith("no effect: already")
        logins = [e for e in trail(stack.ledger) if e.action == "login"]
        assert logins and logins[-1].outcome == "refused: not a valid token"
        assert logins[-1].who.startswith("unknown (")
