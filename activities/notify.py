"""`notify.email`: send an email over SMTP; a pivot, since a sent email cannot be unsent.

The message names the saga and what it has done so far (read from the ledger), and
carries a Message-ID derived from the step's idempotency key, the same on every attempt.

At most once: SMTP has no idempotency, and nothing asks a server whether it has a
message. Failures up to the DATA command (server down, sender or recipient refused)
delivered nothing and are retried; so is a refusal of the message itself. Past that point
an attempt whose outcome is lost (its worker died, the connection dropped before the
server's reply) may have delivered: the retry does not send again but parks the step
for an operator with the evidence (attempt, time, worker, Message-ID, server).
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import smtplib
from collections.abc import Callable
from email import policy
from email.message import EmailMessage
from email.utils import formatdate, parseaddr
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator
from temporalio import activity
from temporalio.exceptions import ApplicationError

from saga import Delivery, Settings, StepContext, current_step, pivot

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
    for s in step.saga_steps():
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

    @pivot(delivery=Delivery.AT_MOST_ONCE, summary="email")
    @activity.defn
    async def email_notify(self, inp: EmailInput) -> EmailResult:
        """Email someone about the saga (irreversible: goes after every undoable step)."""
        step = current_step()
        msg = await asyncio.to_thread(compose, self.settings, step, inp)
        mid = str(msg["Message-ID"])
        smtp = await asyncio.to_thread(self._envelope, msg)
        try:
            # From the DATA command on the server may keep the email whatever we hear
            # back: a retry after this point is an operator's call, not ours.
            await step.delivering(mid, message_id=mid, smtp_server=f"{self.host}:{self.port}")
            try:
                await asyncio.to_thread(_data, smtp, msg)
            except smtplib.SMTPDataError as exc:  # the server answered: it did not take it
                await step.nothing_delivered()
                raise _failure(exc) from None
        finally:
            await asyncio.to_thread(_quit, smtp)
        # The Message-ID, not the address: logs hold no personal data.
        activity.logger.info("sent %s for saga %s", mid, step.saga_id)
        return EmailResult(external_id=mid, to=inp.to)

    def _envelope(self, msg: EmailMessage) -> smtplib.SMTP:
        """Connect and name sender and recipient: nothing is delivered yet, so every
        failure here may be retried. A permanent (5xx) refusal is a business failure."""
        sender, to = parseaddr(str(msg["From"]))[1], parseaddr(str(msg["To"]))[1]
        smtp = smtplib.SMTP(self.host, self.port, timeout=SMTP_TIMEOUT)
        try:
            smtp.ehlo_or_helo_if_needed()
            options = [] if (sender + to).isascii() else ["SMTPUTF8", "BODY=8BITMIME"]
            code, reply = smtp.mail(sender, options)
            if code != 250:
                raise smtplib.SMTPSenderRefused(code, reply, sender)
            code, reply = smtp.rcpt(to)
            if code not in (250, 251):
                raise smtplib.SMTPRecipientsRefused({to: (code, reply)})
        except smtplib.SMTPException as exc:
            smtp.close()
            raise _failure(exc) from None
        except BaseException:
            smtp.close()
            raise
        return smtp


def _data(smtp: smtplib.SMTP, msg: EmailMessage) -> None:
    """Send the message as ``send_message`` would; any answer but 250 means the server
    did not take it (``SMTPDataError``)."""
    international = not str(msg["From"]).isascii() or not str(msg["To"]).isascii()
    code, reply = smtp.data(msg.as_bytes(policy=policy.SMTPUTF8 if international else policy.SMTP))
    if code != 250:
        raise smtplib.SMTPDataError(code, reply)


def _quit(smtp: smtplib.SMTP) -> None:
    """End the session; the outcome is known by now, so a failing QUIT changes nothing."""
    try:
        smtp.quit()
    except (smtplib.SMTPException, OSError):
        smtp.close()


def _failure(exc: smtplib.SMTPException) -> Exception:
    """A permanent (5xx) refusal is a business failure; a 4xx one is retried."""
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        codes = [code for code, _ in exc.recipients.values()]
        if codes and all(code >= 500 for code in codes):
            return _rejected(f"recipient refused: {_reasons(exc.recipients)}")
    elif isinstance(exc, smtplib.SMTPResponseException) and exc.smtp_code >= 500:
        return _rejected(f"{exc.smtp_code} {_text(exc.smtp_error)}")
    return exc


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
