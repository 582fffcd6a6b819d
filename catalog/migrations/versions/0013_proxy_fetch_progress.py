"""proxy fetch progress times

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-06 22:30:00

A pending proxy answer's Retry-After is estimated from the fetch's rate: measured from when the
upstream began to answer to the last recorded progress, so both times are kept with the bytes.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import catalog.models

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("proxy_asset", schema=None) as batch_op:
        batch_op.add_column(sa.Column("fetch_answered_at", catalog.models.UTCDateTime(), nullable=True))
        batch_op.add_column(sa.Column("fetch_progress_at", catalog.models.UTCDateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("proxy_asset", schema=None) as batch_op:
        batch_op.drop_column("fetch_progress_at")
        batch_op.drop_column("fetch_answered_at")
