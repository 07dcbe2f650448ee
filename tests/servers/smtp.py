"""The SMTP server `notify.email` delivers to: aiosmtpd, once per session."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from saga import free_port
from saga._devstack import MailServer

REFUSED_DOMAIN = "refused.invalid"
"""Recipients at this domain get a permanent 550 rejection."""


@pytest.fixture(scope="session")
async def smtp_server(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[MailServer]:
    """A real SMTP server on a free port; received mail in `.messages` and as files."""
    folder = tmp_path_factory.mktemp("mail")
    async with MailServer(free_port(), folder, refuse_domains=[REFUSED_DOMAIN]) as server:
        yield server
