"""proxy fetch queue index

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-07 17:00:00

Fetchers poll the proxied assets for queued fetches many times a second: an index on the fetch
status (then the request time, the claim order) keeps each poll from reading every asset.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0020"
down_revision: str | None = "0019"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_proxy_asset_fetch", "proxy_asset", ["fetch_status", "fetch_requested_at"])


def downgrade() -> None:
    op.drop_index("ix_proxy_asset_fetch", table_name="proxy_asset")
