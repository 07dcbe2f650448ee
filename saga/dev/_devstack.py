"""Local stand-ins for the external systems, for `saga dev`, the demo and the tests.

```python
async with MailServer(port, folder) as mail:
    ...                      # notify.email delivers to 127.0.0.1:port
    mail.messages            # every email received, also saved as folder/NNNN.eml
prepare_inventory(settings)  # inventory schema + sample products
```
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import socket
import threading
from collections.abc import AsyncIterator, Iterable
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from types import TracebackType
from typing import Any

from aiosmtpd.controller import Controller

from saga._settings import Settings

log = logging.getLogger(__name__)


class _Handler:
    """aiosmtpd handler: refuse the configured domains, keep and save everything else."""

    def __init__(self, server: MailServer) -> None:
        self._server = server

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: list[str]
    ) -> str:
        domain = address.rpartition("@")[2].lower()
        if domain in self._server.refuse_domains:
            return f"550 5.1.1 <{address}>: mailbox unavailable"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        content = envelope.original_content or envelope.content
        if isinstance(content, str):
            content = content.encode()
        self._server._received(bytes(content))
        return "250 Message accepted for delivery"


class MailServer:
    """An SMTP server (aiosmtpd) that keeps each message in memory and as a `.eml` file.

    ``refuse_domains`` makes it answer 550 to recipients at those domains, to show a
    permanent rejection.
    """

    def __init__(
        self,
        port: int,
        folder: Path,
        *,
        host: str = "127.0.0.1",
        refuse_domains: Iterable[str] = (),
    ) -> None:
        self.host = host
        self.port = port
        self.folder = folder
        self.refuse_domains = frozenset(d.lower() for d in refuse_domains)
        self._messages: list[EmailMessage] = []
        self._lock = threading.Lock()
        self._controller: Controller | None = None

    @property
    def messages(self) -> list[EmailMessage]:
        """Every message received so far, oldest first (a copy)."""
        with self._lock:
            return list(self._messages)

    def messages_to(self, address: str) -> list[EmailMessage]:
        return [m for m in self.messages if address.lower() in str(m["To"] or "").lower()]

    def _received(self, content: bytes) -> None:
        msg = message_from_bytes(content, policy=policy.default)
        with self._lock:
            self._messages.append(msg)
            n = len(self._messages)
        ident = re.sub(r"[^A-Za-z0-9@._-]", "", str(msg["Message-ID"] or ""))[:80]
        (self.folder / f"{n:04d}-{ident or 'message'}.eml").write_bytes(content)

    def _handler(self) -> _Handler:
        return _Handler(self)

    def start(self) -> None:
        """Listen on host:port (returns once the server answers)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        self._controller = Controller(
            self._handler(), hostname=self.host, port=self.port, enable_SMTPUTF8=True
        )
        self._controller.start()

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    async def __aenter__(self) -> MailServer:
        await asyncio.to_thread(self.start)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await asyncio.to_thread(self.stop)


def prepare_inventory(settings: Settings) -> None:
    """Prepare the configured systems for the dev stack (the inventory: its schema and
    sample products), through the seeding each system registers; idempotent."""
    from saga._catalog import catalog

    catalog.prepare_systems(settings)


@contextlib.asynccontextmanager
async def dev_stack(settings: Settings) -> AsyncIterator[Settings]:
    """localstripe, an SMTP server and a seeded inventory, for `saga dev` and the demo.

    Yields the settings pointed at them. Redmine is not started here (it is a Rails
    application): set SAGA_REDMINE_URL and SAGA_REDMINE_API_KEY to use tickets.
    """
    from saga.dev._devserver import free_port
    from saga.dev._localstripe import LocalStripe, publish_url, unpublish_url

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    stripe = None
    updates: dict[str, object] = {}
    if settings.stripe_api_base is None and settings.stripe_api_key.startswith("sk_test_local"):
        stripe = LocalStripe(free_port(), log_file=settings.data_dir / "localstripe.log")
        await stripe.start()
        updates["stripe_api_base"] = stripe.url
    try:
        if stripe is not None:
            publish_url(settings.data_dir, stripe.url)
        smtp_port = settings.smtp_port if _port_free(settings.smtp_port) else free_port()
        updates["smtp_port"] = smtp_port
        async with MailServer(smtp_port, mail_folder(settings)) as mail:
            dev = settings.model_copy(update=updates)
            await asyncio.to_thread(prepare_inventory, dev)
            log.info(
                "dev stack: localstripe %s, smtp 127.0.0.1:%s (mail saved in %s)",
                updates.get("stripe_api_base", settings.stripe_api_base),
                smtp_port,
                mail.folder,
            )
            yield dev
    finally:
        if stripe is not None:
            unpublish_url(settings.data_dir, stripe.url)
            stripe.stop()


def mail_folder(settings: Settings) -> Path:
    """Where the dev stack's SMTP server saves each message it receives (`.eml` files)."""
    return settings.data_dir / "mail"


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True
