"""Alerts: a saga that needs a person, or a plan waiting too long for approval, notifies.

A worker with ``SAGA_ALERT_WEBHOOK_URL`` and/or ``SAGA_ALERT_EMAIL`` looks every
``SAGA_ALERT_POLL_SECONDS`` for the sagas of its task queue in those states (Temporal
visibility, through the sagas' own search attributes, saga._index), apart from the
sagas themselves: an alert never blocks or slows a saga. Each event is claimed once in
the ledger (``saga_alert``), so several workers send it once; a saga entering
``needs_attention`` again (an undo failing again after a retry) is a new event. The
webhook gets a JSON POST, retried with back-off; the email goes through the SMTP
settings; both are recorded in the audit trail.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import smtplib
from collections.abc import AsyncIterator
from datetime import timedelta
from email.message import EmailMessage
from typing import Any, cast

import httpx
from sqlalchemy import Table, insert, update
from sqlalchemy.exc import IntegrityError
from temporalio.client import Client
from temporalio.plugin import SimplePlugin
from tenacity import AsyncRetrying, stop_after_attempt, wait_exponential

from saga._audit import AuditEntry, record
from saga._client import saga_state
from saga._ledger import Ledger
from saga._ledger_schema import AlertRecord, utcnow
from saga._models import CompensationStatus, StepStatus
from saga._redact import mask_text
from saga._settings import Settings

log = logging.getLogger("saga.alerts")
ALERTS = cast(Table, AlertRecord.__table__)
WHO = "saga alerts"


class Alerts:
    """Finds alert events of one task queue and sends each once."""

    def __init__(self, client: Client, ledger: Ledger, settings: Settings) -> None:
        self.client, self.ledger, self.settings = client, ledger, settings
        self.queue = settings.task_queue

    async def check(self) -> int:
        """Look once; returns how many alerts this call sent."""
        sent = 0
        base = (
            f'WorkflowType="SagaWorkflow" AND ExecutionStatus="Running" '
            f'AND TaskQueue="{self.queue}"'
        )
        async for wf in self.client.list_workflows(f'{base} AND SagaStatus="needs_attention"'):
            state = await saga_state(self.client, wf.id)
            stuck = [
                s
                for s in state.steps
                if s.compensation is CompensationStatus.FAILED or s.status is StepStatus.UNCERTAIN
            ]
            mark = ",".join(f"{s.id}:{s.compensation_attempts}" for s in stuck)
            why = "; ".join(
                f"step {s.id} ({s.action}): {s.compensation_error or s.error or s.status.value}"
                for s in stuck
            )
            sent += await self._fire(
                f"{wf.id}/needs_attention/{mark}",
                wf.id,
                "needs_attention",
                f"saga {wf.id} needs a person: {why or 'see its page'}",
            )
        after = timedelta(seconds=self.settings.alert_approval_after_seconds)
        since = (utcnow() - after).isoformat()
        waiting = f'{base} AND SagaStatus="awaiting_approval" AND StartTime < "{since}"'
        async for wf in self.client.list_workflows(waiting):
            state = await saga_state(self.client, wf.id)
            sent += await self._fire(
                f"{wf.id}/approval_waiting/{state.plan_hash}",
                wf.id,
                "approval_waiting",
                f"saga {wf.id} has waited over {after} for approval of plan {state.plan_hash}",
            )
        return sent

    async def _fire(self, key: str, saga_id: str, event: str, text: str) -> int:
        try:
            await asyncio.to_thread(self._claim, key, saga_id, event)
        except IntegrityError:
            return 0  # sent (or being sent) by this or another worker
        text = mask_text(text)
        outcomes = []
        if self.settings.alert_webhook_url:
            outcomes.append(await self._post(key, saga_id, event, text))
        if self.settings.alert_email:
            outcomes.append(await asyncio.to_thread(self._mail, saga_id, event, text))
        outcome = "; ".join(outcomes)
        await asyncio.to_thread(self._settle, key, saga_id, event, outcome, text)
        return 1

    def _claim(self, key: str, saga_id: str, event: str) -> None:
        with self.ledger.engine.begin() as conn:
            conn.execute(
                insert(ALERTS).values(key=key[:400], saga_id=saga_id, event=event, at=utcnow())
            )

    def _settle(self, key: str, saga_id: str, event: str, outcome: str, text: str) -> None:
        with self.ledger.engine.begin() as conn:
            conn.execute(update(ALERTS).where(ALERTS.c.key == key[:400]).values(outcome=outcome))
        entry = AuditEntry(
            at=utcnow(), who=WHO, via="alert", action=f"alert {event}", saga_id=saga_id,
            outcome=outcome, detail=text,
        )  # fmt: skip
        record(self.ledger, entry)

    async def _post(self, key: str, saga_id: str, event: str, text: str) -> str:
        url = self.settings.alert_webhook_url
        assert url is not None
        body: dict[str, Any] = {"event": event, "saga_id": saga_id, "text": text, "key": key}
        try:
            async with httpx.AsyncClient(timeout=10) as http:
                async for attempt in AsyncRetrying(
                    stop=stop_after_attempt(4),
                    wait=wait_exponential(multiplier=0.5, max=8),
                    reraise=True,
                ):
                    with attempt:
                        answer = await http.post(url, json=body)
                        answer.raise_for_status()
        except Exception as exc:
            log.warning("alert %s: webhook %s failed: %s", key, url, exc)
            return f"webhook failed: {exc}"
        return "webhook sent"

    def _mail(self, saga_id: str, event: str, text: str) -> str:
        to = self.settings.alert_email
        message = EmailMessage()
        message["From"] = self.settings.mail_from
        message["To"] = to
        message["Subject"] = f"[saga] {event.replace('_', ' ')}: {saga_id}"
        message.set_content(text + "\n")
        try:
            with smtplib.SMTP(self.settings.smtp_host, self.settings.smtp_port, timeout=10) as s:
                s.send_message(message)
        except (OSError, smtplib.SMTPException) as exc:
            log.warning("alert of %s: email to %s failed: %s", saga_id, to, exc)
            return f"email failed: {exc}"
        return f"email sent to {to}"

    async def keep_watching(self) -> None:
        while True:
            try:
                await self.check()
            except Exception:
                log.exception("alerts: looking for events failed; trying again")
            await asyncio.sleep(self.settings.alert_poll_seconds)


def alerting_plugin(client: Client, ledger: Ledger, settings: Settings) -> SimplePlugin:
    """A worker plugin that watches for alert events while the worker runs."""

    @contextlib.asynccontextmanager
    async def watching() -> AsyncIterator[None]:
        watcher = asyncio.create_task(Alerts(client, ledger, settings).keep_watching())
        try:
            yield
        finally:
            watcher.cancel()
            with contextlib.suppress(BaseException):
                await watcher

    return SimplePlugin("saga.alerts", run_context=watching)
