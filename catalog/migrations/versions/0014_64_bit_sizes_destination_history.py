"""64-bit sizes and byte counts on PostgreSQL; destination history

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-07 01:00:00

A transfer of more than 2 GiB overflowed INTEGER on PostgreSQL as its bytes were recorded: sizes and
byte counts become BIGINT there (the table is rewritten, once). SQLite's INTEGER holds 64 bits
already, and rebuilding its tables would run the cascades of their foreign keys: it is left as it is.

Nobody could see who held or restarted a destination: each hold, restart and change of its settings,
hosts and aliases is now a row of `destination_history`, with the user and the time.
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

import catalog.models

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: (table, column, nullable) of every size and byte count still INTEGER.
BYTE_COLUMNS = [
    ("data_file", "size", True),
    ("data_transfer", "bytes_sent", False),
    ("transfer_attempt", "bytes_sent", False),
    ("source_file", "size", True),
    ("discovered", "size", True),
    ("listing_rule", "min_size", True),
    ("listing_rule", "max_size", True),
]


def _widen(to: type[sa.types.TypeEngine[int]], existing: type[sa.types.TypeEngine[int]]) -> None:
    if op.get_bind().dialect.name == "sqlite":
        return
    for table, column, nullable in BYTE_COLUMNS:
        op.alter_column(table, column, type_=to(), existing_type=existing(), existing_nullable=nullable)


def upgrade() -> None:
    _widen(sa.BigInteger, sa.Integer)
    op.create_table(
        "destination_history",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("destination_name", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("action", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column("at", catalog.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("by", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("reason", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.ForeignKeyConstraint(["destination_name"], ["destination.name"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("destination_history", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_destination_history_destination_name"), ["destination_name"], unique=False)


def downgrade() -> None:
    op.drop_table("destination_history")
    _widen(sa.Integer, sa.BigInteger)
