"""localstripe, the local Stripe API, started once per session on a free port."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from saga import free_port
from saga.dev._localstripe import LocalStripe


@pytest.fixture(scope="session")
async def localstripe(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[LocalStripe]:
    """A running localstripe; give ``localstripe.url`` to ``Settings(stripe_api_base=...)``."""
    server = LocalStripe(free_port(), log_file=tmp_path_factory.mktemp("localstripe") / "log")
    await server.start()
    try:
        yield server
    finally:
        server.stop()
