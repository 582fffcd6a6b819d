"""transfers awaiting a request

Revision ID: 0021
Revises: 0020
Create Date: 2026-12-07 17:10:00

The retriever claimed Preset transfers in queue order and skipped, one by one, those of files
registered without retrieval that nobody asked for yet: with many such files each poll read them
all. They are marked, and the retriever's queue index keeps them apart.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0021"
down_revision: str | None = "0020"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("data_transfer", schema=None) as batch_op:
        batch_op.add_column(sa.Column("awaiting_request", sa.Boolean(), nullable=False, server_default=sa.false()))
    op.execute(
        "UPDATE data_transfer SET awaiting_request = true WHERE status = 'Preset' AND data_file_id IN"
        " (SELECT data_file_id FROM source_file WHERE on_demand AND requested_at IS NULL)"
    )
    op.create_index(
        "ix_data_transfer_retrieval", "data_transfer", ["status", "awaiting_request", "priority", "queued_at", "id"]
    )


def downgrade() -> None:
    op.drop_index("ix_data_transfer_retrieval", table_name="data_transfer")
    with op.batch_alter_table("data_transfer", schema=None) as batch_op:
        batch_op.drop_column("awaiting_request")
