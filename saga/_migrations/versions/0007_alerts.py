"""Alerts sent: one row per event (a saga needing a person, an approval waiting too long),
claimed by the worker that sends it, so several workers send each alert once.

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "saga_alert",
        sa.Column("key", sa.String(400), primary_key=True),
        sa.Column("saga_id", sa.String(200), nullable=False, index=True),
        sa.Column("event", sa.String(40), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("outcome", sa.Text()),
    )


def downgrade() -> None:
    op.drop_table("saga_alert")
