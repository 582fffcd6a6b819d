"""destination queue index

Revision ID: 0023
Revises: 0022
Create Date: 2026-12-07 18:00:00

A mover's claim takes the first ready transfers of each destination that can take one: by
destination, status and queue order, each destination's share is one short index range.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0023"
down_revision: str | None = "0022"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_data_transfer_destination_queue",
        "data_transfer",
        ["destination_name", "status", "priority", "queued_at", "id"],
    )


def downgrade() -> None:
    op.drop_index("ix_data_transfer_destination_queue", table_name="data_transfer")
