"""arrival notifications and SHA-512 of data files

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-07 04:00:00

A destination may announce each file that arrives on it (`mqtt_on_arrival`), not only each transfer
that is Done. Data files keep the SHA-512 of their content, taken while it streams into the Data Store:
WIS2 notifications accept only SHA-2/SHA-3 digests as integrity, and MD5/ADLER32 are not that. Files
stored before this revision have none, and their WIS2 messages carry no integrity.
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0017"
down_revision: str | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("destination", schema=None) as batch_op:
        batch_op.add_column(sa.Column("mqtt_on_arrival", sa.Boolean(), nullable=False, server_default=sa.false()))
    with op.batch_alter_table("data_file", schema=None) as batch_op:
        batch_op.add_column(sa.Column("sha512", sqlmodel.sql.sqltypes.AutoString(length=128), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("data_file", schema=None) as batch_op:
        batch_op.drop_column("sha512")
    with op.batch_alter_table("destination", schema=None) as batch_op:
        batch_op.drop_column("mqtt_on_arrival")
