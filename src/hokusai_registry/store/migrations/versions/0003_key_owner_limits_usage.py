"""Owner, allowed service ids, per-key rate limits and last use per key.

Revision ID: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("api_keys") as batch:
        batch.add_column(sa.Column("owner", sa.String(200), nullable=True))
        batch.add_column(sa.Column("service_ids", sa.String(1000), nullable=True))
        batch.add_column(sa.Column("rate_limit_per_minute", sa.Integer, nullable=True))
        batch.add_column(sa.Column("rate_limit_per_hour", sa.Integer, nullable=True))
        batch.add_column(sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("api_keys") as batch:
        for column in (
            "last_used_at",
            "rate_limit_per_hour",
            "rate_limit_per_minute",
            "service_ids",
            "owner",
        ):
            batch.drop_column(column)
