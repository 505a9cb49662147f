"""Single sign-on: users known by (issuer, subject), keys that belong to them, ID tokens of sessions.

Revision ID: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("issuer", sa.String(1000), nullable=True),
        sa.Column("subject", sa.String(255), nullable=True),
        sa.Column("name", sa.String(200), nullable=False, unique=True),
        sa.Column("email", sa.String(320), nullable=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("scopes", sa.String(64), nullable=False),
        sa.Column("groups", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("disabled_at", sa.DateTime(timezone=True), nullable=True),
        sa.UniqueConstraint("issuer", "subject", name="uq_users_issuer_subject"),
    )
    with op.batch_alter_table("api_keys") as batch:
        batch.add_column(sa.Column("sso_user_id", sa.String(32), nullable=True))
        batch.add_column(sa.Column("purpose", sa.String(16), nullable=True))
        batch.create_index("ix_api_keys_sso_user_id", ["sso_user_id"])
    with op.batch_alter_table("ui_sessions") as batch:
        batch.add_column(sa.Column("sealed_id_token", sa.Text, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("ui_sessions") as batch:
        batch.drop_column("sealed_id_token")
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_index("ix_api_keys_sso_user_id")
        batch.drop_column("purpose")
        batch.drop_column("sso_user_id")
    op.drop_table("users")
