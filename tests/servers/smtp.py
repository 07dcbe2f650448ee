"""The SMTP server `notify.email` delivers to: aiosmtpd, once per session."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from typing import Any

import pytest

from saga import free_port
from saga.dev._devstack import MailServer, _Handler

REFUSED_DOMAIN = "refused.invalid"
"""Recipients at this domain get a permanent 550 rejection."""


@pytest.fixture(scope="session")
async def smtp_server(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[MailServer]:
    """A real SMTP server on a free port; received mail in `.messages` and as files."""
    folder = tmp_path_factory.mktemp("mail")
    async with MailServer(free_port(), folder, refuse_domains=[REFUSED_DOMAIN]) as server:
        yield server


class ControlledMailServer(MailServer):
    """A MailServer a test steers.

    Between :meth:`hold` and :meth:`release` it stores each message and then keeps the
    sender waiting for the reply to its DATA: the email is delivered and the sender does
    not know it yet (as when a worker dies right after the server took the email).
    ``deferrals = n`` answers the next n messages with a temporary 451 and keeps none.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.released = threading.Event()
        self.released.set()
        self.deferrals = 0

    def hold(self) -> None:
        self.released.clear()

    def release(self) -> None:
        self.released.set()

    def _handler(self) -> _Handler:
        return _ControlledHandler(self)


class _ControlledHandler(_Handler):
    def __init__(self, server: ControlledMailServer) -> None:
        super().__init__(server)
        self._holder = server

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self._holder.deferrals > 0:
            self._holder.deferrals -= 1
            return "451 4.3.0 try again later"
        reply = await super().handle_DATA(server, session, envelope)
        await asyncio.to_thread(self._holder.released.wait)
        return reply
