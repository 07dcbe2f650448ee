"""The audit trail: every decision people and programs take on sagas, append-only.

One row per mutation (start, approve, reject, edit, cancel, retry, resolve, people
changes, failed logins): when, who (their identity, not a typed name), by which way in
(cli, web, api), what, the saga and step, and the outcome. Rows are only ever inserted:
a trigger refuses UPDATE and DELETE on both SQLite and PostgreSQL.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

REFUSE = "the audit trail is append-only"


def upgrade() -> None:
    op.create_table(
        "saga_audit",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False, index=True),
        sa.Column("who", sa.String(200), nullable=False),
        sa.Column("via", sa.String(20), nullable=False),
        sa.Column("action", sa.String(40), nullable=False),
        sa.Column("saga_id", sa.String(200), index=True),
        sa.Column("step_id", sa.String(64)),
        sa.Column("outcome", sa.String(20), nullable=False),
        sa.Column("detail", sa.Text()),
    )
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "CREATE FUNCTION saga_audit_append_only() RETURNS trigger AS $$ "
            f"BEGIN RAISE EXCEPTION '{REFUSE}'; END; $$ LANGUAGE plpgsql"
        )
        op.execute(
            "CREATE TRIGGER saga_audit_append_only BEFORE UPDATE OR DELETE ON saga_audit "
            "FOR EACH ROW EXECUTE FUNCTION saga_audit_append_only()"
        )
    else:
        for event in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER saga_audit_no_{event.lower()} BEFORE {event} ON saga_audit "
                f"BEGIN SELECT RAISE(ABORT, '{REFUSE}'); END"
            )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER saga_audit_append_only ON saga_audit")
        op.execute("DROP FUNCTION saga_audit_append_only()")
    op.drop_table("saga_audit")
