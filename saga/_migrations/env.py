"""Alembic environment for the ledger; run through saga._ledger.migrate()."""

from alembic import context
from sqlalchemy import create_engine

from saga._ledger_schema import Base

config = context.config
target_metadata = Base.metadata


def run() -> None:
    connection = config.attributes.get("connection")
    if connection is None:
        url = config.get_main_option("sqlalchemy.url")
        assert url, "set sqlalchemy.url or pass a connection"
        with create_engine(url).connect() as conn:
            context.configure(connection=conn, target_metadata=target_metadata)
            with context.begin_transaction():
                context.run_migrations()
        return
    context.configure(connection=connection, target_metadata=target_metadata)
    with context.begin_transaction():
        context.run_migrations()


run()
