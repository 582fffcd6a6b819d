"""state shared by API replicas

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-07 04:20:00

Several API replicas behind a load balancer must share what one process used to keep to itself: the
key that signs log-in sessions (`shared_key`) and the proxy's QoS counters (`qos_usage`, one row per
subject, usage and window).
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0018"
down_revision: str | None = "0017"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "shared_key",
        sa.Column("name", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("value", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )
    op.create_table(
        "qos_usage",
        sa.Column("subject", sqlmodel.sql.sqltypes.AutoString(length=120), nullable=False),
        sa.Column("usage", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column("window_end", sa.BigInteger(), nullable=False),
        sa.Column("used", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("subject", "usage", "window_end"),
    )


def downgrade() -> None:
    op.drop_table("qos_usage")
    op.drop_table("shared_key")
