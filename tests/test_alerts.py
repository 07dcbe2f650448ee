"""Alerts, against the real dev server, worker, ledger, a local webhook and SMTP: a saga
whose undo gets stuck, and a plan waiting too long for approval, each notify once (the
webhook's first answer is a 500, retried), recorded in the audit trail, while the sagas
themselves go on."""

from __future__ import annotations

import asyncio
import json
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine
from temporalio.client import Client

from saga import Ledger, SagaInput, SagaWorkflow, Settings, create_worker
from saga._audit import trail
from saga._policy import Policy
from saga.dev._devstack import MailServer
from tests.conftest import eventually, unique
from tests.web import apply


class Hook:
    """A local webhook: records each JSON POST; answers the first one with a 500."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.answers = 0
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                hook.answers += 1
                if hook.answers == 1:
                    self.send_response(500)
                else:
                    hook.received.append(json.loads(body))
                    self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/alerts"

    def events(self, saga_id: str) -> list[str]:
        return [r["event"] for r in self.received if r["saga_id"] == saga_id]


@pytest.fixture
def hook() -> Iterator[Hook]:
    hook = Hook()
    thread = threading.Thread(target=hook.server.serve_forever, daemon=True)
    thread.start()
    yield hook
    hook.server.shutdown()
    hook.server.server_close()


async def test_a_stuck_undo_and_a_long_approval_alert_once(
    client: Client,
    effects_engine: Engine,
    smtp_server: MailServer,
    hook: Hook,
    tmp_path: Path,
) -> None:
    settings = Settings(
        task_queue=f"alerts-{uuid.uuid4().hex[:8]}",
        database_url=f"sqlite:///{tmp_path / 'ledger.db'}",
        data_dir=tmp_path,
        activities="tests.effects:build_activities",
        alert_webhook_url=hook.url,
        alert_email="ops@example.com",
        smtp_port=smtp_server.port,
        alert_poll_seconds=0.3,
        alert_approval_after_seconds=1.0,
    )
    ledger = Ledger(settings.ledger_url())
    mails_before = len(smtp_server.messages_to("ops@example.com"))
    try:
        async with create_worker(client, settings, ledger):
            stuck, waiting = unique("alert-stuck"), unique("alert-wait")
            for sid, steps, policy in (
                (stuck, [apply("a", revert_failures=1000), apply("b", fail="before")], Policy()),
                (waiting, [apply("c")], Policy(approval="always")),
            ):
                await client.start_workflow(
                    SagaWorkflow.run,
                    SagaInput(plan={"steps": steps}, policy=policy),
                    id=sid,
                    task_queue=settings.task_queue,
                )
            await eventually(lambda: hook.events(stuck) and hook.events(waiting), timeout=60)
            await asyncio.sleep(1.5)  # several more looks: nothing is sent twice
            assert hook.events(stuck) == ["needs_attention"]
            assert hook.events(waiting) == ["approval_waiting"]
            (alert,) = [r for r in hook.received if r["saga_id"] == stuck]
            assert "step a (effects.apply)" in alert["text"] and alert["key"].startswith(stuck)
            mails = smtp_server.messages_to("ops@example.com")[mails_before:]
            subjects = sorted(str(m["Subject"]) for m in mails)
            assert subjects == [
                f"[saga] approval waiting: {waiting}",
                f"[saga] needs attention: {stuck}",
            ]
            audited = [e for e in trail(ledger) if e.via == "alert"]
            assert sorted((e.saga_id, e.action) for e in audited) == sorted(
                [(stuck, "alert needs_attention"), (waiting, "alert approval_waiting")]
            )
            outcomes = {e.outcome for e in audited}
            assert outcomes == {"webhook sent; email sent to o***@example.com"}, outcomes
            # The sagas went on meanwhile: one waits for a person, one for approval.
            state = await client.get_workflow_handle_for(SagaWorkflow.run, waiting).query(
                SagaWorkflow.state
            )
            assert state.status.value == "awaiting_approval"
            for sid in (stuck, waiting):
                await client.get_workflow_handle(sid).terminate("test over")
    finally:
        ledger.close()
