"""`notify.email`: send an email over SMTP; a pivot, since a sent email cannot be unsent.

The message names the saga and what it has done so far (read from the ledger), and
carries a Message-ID derived from the step's idempotency key: when a retry sends it a
second time (the first response was lost), the receiver can drop the duplicate.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import smtplib
from collections.abc import Callable
from email.message import EmailMessage
from email.utils import formatdate
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator
from temporalio import activity
from temporalio.exceptions import ApplicationError

from saga import Settings, StepContext, current_step, pivot

_ADDRESS = re.compile(
    r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]{1,64}"
    r"@(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$"
)
SMTP_TIMEOUT = 20.0


class EmailInput(BaseModel):
    """Send an email about this saga."""

    model_config = ConfigDict(extra="forbid")
    to: str = Field(
        max_length=320,
        description="Recipient address, e.g. `ops@example.com`.",
        json_schema_extra={"format": "email"},
    )
    subject: str = Field(min_length=1, max_length=200, description="One line.")
    body: str | None = Field(
        None, max_length=20_000, description="Optional text; the saga's summary follows it."
    )

    @field_validator("to")
    @classmethod
    def _address(cls, value: str) -> str:
        value = value.strip()
        if not _ADDRESS.match(value) or ".." in value:
            raise ValueError(f"{value!r} is not an email address like name@example.com")
        return value

    @field_validator("subject")
    @classmethod
    def _one_line(cls, value: str) -> str:
        if "\r" in value or "\n" in value:
            raise ValueError("the subject must be a single line")
        return value


class EmailResult(BaseModel):
    external_id: str = Field(description="The Message-ID the email was sent with.")
    to: str


def message_id(idempotency_key: str, mail_from: str) -> str:
    """``<saga-<hash of the key>@<sender domain>>``: the same on every attempt."""
    digest = hashlib.sha256(idempotency_key.encode()).hexdigest()[:32]
    domain = mail_from.rpartition("@")[2] or "localhost"
    return f"<saga-{digest}@{domain}>"


def _outcome_so_far(step: StepContext) -> str:
    """One line per step the ledger has seen in this saga before this one."""
    lines = []
    for s in step.ledger.steps(step.saga_id):
        if s.step_id == step.step_id:
            continue
        ref = f" ({s.external_id})" if s.external_id else ""
        lines.append(f"  - {s.step_id}: {s.action} {s.status}{ref}")
    if not lines:
        return "No earlier steps."
    return "Steps so far:\n" + "\n".join(lines)


def compose(settings: Settings, step: StepContext, inp: EmailInput) -> EmailMessage:
    """The email for one step; deterministic apart from the Date header."""
    msg = EmailMessage()
    msg["From"] = settings.mail_from
    msg["To"] = inp.to
    msg["Subject"] = inp.subject
    msg["Date"] = formatdate(localtime=False)
    msg["Message-ID"] = message_id(step.idempotency_key, settings.mail_from)
    msg["X-Saga-Id"] = step.saga_id
    msg["X-Saga-Step"] = step.step_id
    parts = [inp.body.rstrip()] if inp.body else []
    parts += [f"Saga {step.saga_id}", _outcome_so_far(step)]
    msg.set_content("\n\n".join(parts) + "\n")
    return msg


class NotifyActivities:
    """The notify system: an SMTP server named in settings."""

    def __init__(self, settings: Settings) -> None:
        self.host = settings.smtp_host
        self.port = settings.smtp_port
        self.settings = settings

    @pivot()
    @activity.defn
    async def email_notify(self, inp: EmailInput) -> EmailResult:
        """Email someone about the saga (irreversible: goes after every undoable step)."""
        step = current_step()
        msg = await asyncio.to_thread(compose, self.settings, step, inp)
        await asyncio.to_thread(self._send, msg)
        # The Message-ID, not the address: logs hold no personal data.
        activity.logger.info("sent %s for saga %s", msg["Message-ID"], step.saga_id)
        return EmailResult(external_id=str(msg["Message-ID"]), to=inp.to)

    def _send(self, msg: EmailMessage) -> None:
        """Deliver; a permanent (5xx) refusal is a business failure, the rest retries."""
        try:
            with smtplib.SMTP(self.host, self.port, timeout=SMTP_TIMEOUT) as smtp:
                refused = smtp.send_message(msg)
        except smtplib.SMTPRecipientsRefused as exc:
            codes = [code for code, _ in exc.recipients.values()]
            if codes and all(code >= 500 for code in codes):
                raise _rejected(f"recipient refused: {_reasons(exc.recipients)}") from None
            raise
        except smtplib.SMTPResponseException as exc:
            if exc.smtp_code >= 500:
                raise _rejected(f"{exc.smtp_code} {_text(exc.smtp_error)}") from None
            raise  # 4xx: try again later
        if refused:  # some recipients refused (one recipient here, so not reached)
            raise _rejected(f"recipient refused: {_reasons(refused)}")


def _text(value: bytes | str) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else value


def _reasons(recipients: dict[str, tuple[int, bytes]]) -> str:
    return ", ".join(f"{r} ({c} {_text(m)})" for r, (c, m) in recipients.items())


def _rejected(message: str) -> ApplicationError:
    return ApplicationError(
        f"email rejected by the SMTP server: {message}", type="EmailRejected", non_retryable=True
    )


def build(settings: Settings) -> list[Callable[..., Any]]:
    """The notify system's activity (a pivot: no compensation)."""
    return [NotifyActivities(settings).email_notify]
