"""transfer attempts, and the attempt number as a fencing token

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-06 22:30:00

A retry is a new Prefect flow run, but a transfer kept only the last run's id and its history rows
named none. Each attempt is now a row (mover, flow run, host, start, end, bytes, outcome, error), and
the transfer counts its attempts: a mover's writes about an attempt carry its number, so a late writer
(a stopped attempt still running, a mover taken over) changes nothing.
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

import catalog.models

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("data_transfer", schema=None) as batch_op:
        batch_op.add_column(sa.Column("attempt", sa.Integer(), nullable=False, server_default="0"))
    op.create_table(
        "transfer_attempt",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("transfer_id", sa.Integer(), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("mover", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("host", sqlmodel.sql.sqltypes.AutoString(), nullable=True),
        sa.Column("flow_run_id", sqlmodel.sql.sqltypes.AutoString(), nullable=True),
        sa.Column("started_at", catalog.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("ended_at", catalog.models.UTCDateTime(timezone=True), nullable=True),
        sa.Column("bytes_sent", sa.Integer(), nullable=False),
        sa.Column("outcome", sqlmodel.sql.sqltypes.AutoString(), nullable=True),
        sa.Column("error", sqlmodel.sql.sqltypes.AutoString(), nullable=True),
        sa.ForeignKeyConstraint(["transfer_id"], ["data_transfer.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("transfer_id", "number", name="uq_transfer_attempt"),
    )
    with op.batch_alter_table("transfer_attempt", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_transfer_attempt_transfer_id"), ["transfer_id"], unique=False)


def downgrade() -> None:
    op.drop_table("transfer_attempt")
    with op.batch_alter_table("data_transfer", schema=None) as batch_op:
        batch_op.drop_column("attempt")
