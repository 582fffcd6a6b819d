"""attempt task run

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-07 04:00:00

A dispatch flow run now takes claim after claim from its mover, so a retried transfer may run its
next attempt in the same flow run: each attempt also names its Prefect task run.
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0019"
down_revision: str | None = "0018"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("transfer_attempt", schema=None) as batch_op:
        batch_op.add_column(sa.Column("task_run_id", sqlmodel.sql.sqltypes.AutoString(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("transfer_attempt", schema=None) as batch_op:
        batch_op.drop_column("task_run_id")
