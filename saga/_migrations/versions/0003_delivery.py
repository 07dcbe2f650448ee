"""Remember which attempt of a step may have delivered, so an at-most-once step is not
repeated when that attempt's outcome was lost.

``delivering_attempt`` is the attempt of the current round that passed the point of no
return (``StepContext.delivering``), with when, on which worker and what an operator needs
to check (``delivery_evidence``); ``delivery_round`` counts the operator's "send it
again" decisions, each of which starts a round with a fresh retry budget.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("saga_step") as batch:
        batch.add_column(
            sa.Column("delivery_round", sa.Integer(), nullable=False, server_default="0")
        )
        batch.add_column(sa.Column("delivering_attempt", sa.Integer()))
        batch.add_column(sa.Column("delivering_since", sa.DateTime(timezone=True)))
        batch.add_column(sa.Column("delivery_evidence", sa.JSON()))


def downgrade() -> None:
    with op.batch_alter_table("saga_step") as batch:
        for column in (
            "delivery_evidence",
            "delivering_since",
            "delivering_attempt",
            "delivery_round",
        ):
            batch.drop_column(column)
