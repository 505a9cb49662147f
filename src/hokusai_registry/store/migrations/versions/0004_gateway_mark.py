"""A random mark shared by every gateway on this key store, sent upstream to recognise loops.

Revision ID: 0004
"""

import secrets

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("key_store_state") as batch:
        batch.add_column(sa.Column("gateway_mark", sa.String(32), nullable=True))
    state = sa.table("key_store_state", sa.column("id", sa.Integer), sa.column("gateway_mark", sa.String))
    op.execute(state.update().where(state.c.id == 1).values(gateway_mark=secrets.token_hex(12)))


def downgrade() -> None:
    with op.batch_alter_table("key_store_state") as batch:
        batch.drop_column("gateway_mark")
