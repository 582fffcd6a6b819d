"""on-demand requests

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-07 01:30:00

A file registered without retrieval is fetched once a read through the Data Portal asks for it: the
time of that first request is kept on its source, and the retriever claims it from then.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import catalog.models

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("source_file", schema=None) as batch_op:
        batch_op.add_column(sa.Column("requested_at", catalog.models.UTCDateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("source_file", schema=None) as batch_op:
        batch_op.drop_column("requested_at")
