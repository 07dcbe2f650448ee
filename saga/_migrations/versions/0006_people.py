"""People who operate sagas, each with a role and a token of their own; their logins.

``saga_person``: a name, a role (viewer, operator, approver, admin), the SHA-256 of their
token (the token itself is shown once and never stored), when it was made, rotated or
revoked. ``saga_web_session``: one row per login to the web app, by the SHA-256 of the
session id its cookie holds, until it expires, its person logs out or is revoked.

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    ts = sa.DateTime(timezone=True)
    op.create_table(
        "saga_person",
        sa.Column("name", sa.String(100), primary_key=True),
        sa.Column("role", sa.String(20), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("created_at", ts, nullable=False),
        sa.Column("rotated_at", ts),
        sa.Column("revoked_at", ts),
    )
    op.create_table(
        "saga_web_session",
        sa.Column("id_hash", sa.String(64), primary_key=True),
        sa.Column("person", sa.String(100), nullable=False, index=True),
        sa.Column("created_at", ts, nullable=False),
        sa.Column("expires_at", ts, nullable=False),
        sa.Column("ended_at", ts),
    )


def downgrade() -> None:
    op.drop_table("saga_web_session")
    op.drop_table("saga_person")
