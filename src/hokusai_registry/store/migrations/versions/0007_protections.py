"""Protected aliases and promotion approvals: rules, promotion requests, approvals, alias history.

Revision ID: 0007
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "protection_rules",
        sa.Column("id", sa.String(16), primary_key=True),
        sa.Column("model_pattern", sa.String(250), nullable=False),
        sa.Column("alias_pattern", sa.String(250), nullable=True),
        sa.Column("stage_pattern", sa.String(250), nullable=True),
        sa.Column("approvers", sa.String(200), nullable=True),
        sa.Column("approvals", sa.Integer, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(250), nullable=False),
    )
    op.create_table(
        "promotion_requests",
        sa.Column("id", sa.String(16), primary_key=True),
        sa.Column("model", sa.String(500), nullable=False),
        sa.Column("version", sa.String(32), nullable=False),
        sa.Column("alias", sa.String(256), nullable=True),
        sa.Column("stage", sa.String(32), nullable=True),
        sa.Column("rule_id", sa.String(16), nullable=False),
        sa.Column("approvers", sa.String(200), nullable=True),
        sa.Column("approvals", sa.Integer, nullable=False),
        sa.Column("requester", sa.String(250), nullable=False),
        sa.Column("requester_key_id", sa.String(64), nullable=False),
        sa.Column("reason", sa.Text, nullable=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("closed_by", sa.String(250), nullable=True),
        sa.Column("note", sa.Text, nullable=True),
        sa.Column("target_before", sa.String(32), nullable=False),
        sa.Column("version_stage", sa.String(32), nullable=False),
        sa.Column("version_status", sa.String(32), nullable=False),
    )
    op.create_index("ix_promotion_requests_model", "promotion_requests", ["model"])
    op.create_index("ix_promotion_requests_state", "promotion_requests", ["state"])
    op.create_table(
        "promotion_approvals",
        sa.Column("request_id", sa.String(16), nullable=False),
        sa.Column("approver", sa.String(250), nullable=False),
        sa.Column("key_id", sa.String(64), nullable=False),
        sa.Column("comment", sa.Text, nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("request_id", "approver"),
    )
    op.create_table(
        "alias_history",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("model", sa.String(500), nullable=False),
        sa.Column("alias", sa.String(256), nullable=True),
        sa.Column("stage", sa.String(32), nullable=True),
        sa.Column("version", sa.String(32), nullable=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("actor", sa.String(250), nullable=False),
        sa.Column("key_id", sa.String(64), nullable=False),
        sa.Column("requester", sa.String(250), nullable=True),
        sa.Column("approvers", sa.Text, nullable=True),
        sa.Column("request_id", sa.String(16), nullable=True),
        sa.Column("rule_id", sa.String(16), nullable=True),
    )
    op.create_index("ix_alias_history_model", "alias_history", ["model"])


def downgrade() -> None:
    op.drop_index("ix_alias_history_model", "alias_history")
    op.drop_table("alias_history")
    op.drop_table("promotion_approvals")
    op.drop_index("ix_promotion_requests_state", "promotion_requests")
    op.drop_index("ix_promotion_requests_model", "promotion_requests")
    op.drop_table("promotion_requests")
    op.drop_table("protection_rules")
