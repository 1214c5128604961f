"""Cluster capacity per instance type, written by the worker for the hardware catalog.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "cluster_capacity",
        sa.Column("instance_type", sa.String(length=64), primary_key=True),
        sa.Column("allocatable", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("used", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("max_allocatable_per_node", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("max_free_per_node", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("observed_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("cluster_capacity")
