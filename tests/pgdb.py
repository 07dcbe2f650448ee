"""Throwaway PostgreSQL databases for tests, the benchmark and the chaos soak."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import create_engine, text

if TYPE_CHECKING:
    from saga import Ledger

PG_ADMIN_URL = os.environ.get(
    "SAGA_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)


@contextlib.contextmanager
def pg_database(prefix: str) -> Iterator[str]:
    """A fresh PostgreSQL database named ``<prefix>_<random>``, dropped afterwards."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@contextlib.contextmanager
def ledger_on(backend: str, folder: Path, prefix: str) -> Iterator[Ledger]:
    """A fresh ledger on ``backend`` (sqlite: in ``folder``; postgresql: a throwaway
    database named after ``prefix``), closed afterwards."""
    from saga import Ledger

    with contextlib.ExitStack() as stack:
        if backend == "sqlite":
            url = f"sqlite:///{folder / 'ledger.db'}"
        else:
            url = stack.enter_context(pg_database(prefix))
        ledger = Ledger(url)
        try:
            yield ledger
        finally:
            ledger.close()
