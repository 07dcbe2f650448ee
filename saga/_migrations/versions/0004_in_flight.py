"""Remember a request that may still land, so an undo does not look for its effect too soon.

``in_flight_attempt`` is the attempt that sent a request whose effect the receiver may
apply even though the attempt never heard back (``StepContext.sending``), and
``in_flight_until`` how long its effect may still land; the step's compensation waits
until then, or until the attempt says it was answered. ``0`` means requests of several
attempts may be on their way: only time clears them.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("saga_step") as batch:
        batch.add_column(sa.Column("in_flight_attempt", sa.Integer()))
        batch.add_column(sa.Column("in_flight_until", sa.DateTime(timezone=True)))


def downgrade() -> None:
    with op.batch_alter_table("saga_step") as batch:
        batch.drop_column("in_flight_until")
        batch.drop_column("in_flight_attempt")
