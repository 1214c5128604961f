"""Endpoint metric samples for the dashboard's charts: the worker writes one row per endpoint per pass and prunes
rows older than the retention, so the table stays bounded.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "endpoint_metric_samples",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("endpoint_id", sa.Integer(), sa.ForeignKey("endpoints.id", ondelete="CASCADE"), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ready_replicas", sa.Integer(), nullable=False),
        sa.Column("target_replicas", sa.Integer(), nullable=False),
        sa.Column("requests_per_second", sa.Float(), nullable=True),
        sa.Column("output_tokens_per_second", sa.Float(), nullable=True),
        sa.Column("ttft_p50", sa.Float(), nullable=True),
        sa.Column("ttft_p95", sa.Float(), nullable=True),
        sa.Column("latency_p50", sa.Float(), nullable=True),
        sa.Column("latency_p95", sa.Float(), nullable=True),
        sa.Column("pending_requests", sa.Float(), nullable=True),
        sa.Column("counters", sa.JSON(), nullable=False),
    )
    op.create_index("ix_endpoint_metric_samples_endpoint_id_at", "endpoint_metric_samples", ["endpoint_id", "at"])


def downgrade() -> None:
    op.drop_index("ix_endpoint_metric_samples_endpoint_id_at", table_name="endpoint_metric_samples")
    op.drop_table("endpoint_metric_samples")
