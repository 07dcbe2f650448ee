"""Create the ledger: saga and saga_step.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    ts = sa.DateTime(timezone=True)
    op.create_table(
        "saga",
        sa.Column("saga_id", sa.String(200), primary_key=True),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("request", sa.Text()),
        sa.Column("plan", sa.JSON()),
        sa.Column("error", sa.Text()),
        sa.Column("created_at", ts, nullable=False),
        sa.Column("updated_at", ts, nullable=False),
    )
    op.create_table(
        "saga_step",
        sa.Column("idempotency_key", sa.String(300), primary_key=True),
        sa.Column("saga_id", sa.String(200), nullable=False, index=True),
        sa.Column("step_id", sa.String(64), nullable=False),
        sa.Column("action", sa.String(100), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("external_id", sa.String(300), index=True),
        sa.Column("result", sa.JSON()),
        sa.Column("error", sa.Text()),
        sa.Column("compensation_status", sa.String(32), nullable=False),
        sa.Column("compensation_attempts", sa.Integer(), nullable=False),
        sa.Column("compensation_result", sa.JSON()),
        sa.Column("compensation_error", sa.Text()),
        sa.Column("started_at", ts, nullable=False),
        sa.Column("finished_at", ts),
        sa.Column("compensated_at", ts),
    )


def downgrade() -> None:
    op.drop_table("saga_step")
    op.drop_table("saga")
