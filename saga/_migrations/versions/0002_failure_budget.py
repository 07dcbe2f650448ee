"""Count real failures apart from attempts lost with a worker.

Temporal retries a step or compensation without a cap on attempts; the ledger counts
the failures that spend its retry budget (an exception, or a start-to-close time-out),
so an attempt whose worker died (a heartbeat time-out) costs nothing.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    ts = sa.DateTime(timezone=True)
    with op.batch_alter_table("saga_step") as batch:
        batch.add_column(sa.Column("failures", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("attempt_started_at", ts))
        batch.add_column(
            sa.Column("compensation_failures", sa.Integer(), nullable=False, server_default="0")
        )
        batch.add_column(
            sa.Column("compensation_round", sa.Integer(), nullable=False, server_default="0")
        )
        batch.add_column(sa.Column("compensation_started_at", ts))


def downgrade() -> None:
    with op.batch_alter_table("saga_step") as batch:
        for column in (
            "compensation_started_at",
            "compensation_round",
            "compensation_failures",
            "attempt_started_at",
            "failures",
        ):
            batch.drop_column(column)
