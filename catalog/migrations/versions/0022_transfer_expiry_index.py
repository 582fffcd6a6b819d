"""transfer expiry index

Revision ID: 0022
Revises: 0021
Create Date: 2026-12-07 17:30:00

Movers fail the waiting transfers whose lifetime ended before each claim: by status and expiry
time, that reads the expired ones only, not every waiting transfer.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0022"
down_revision: str | None = "0021"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_data_transfer_expiry", "data_transfer", ["status", "expires_at"])


def downgrade() -> None:
    op.drop_index("ix_data_transfer_expiry", table_name="data_transfer")
