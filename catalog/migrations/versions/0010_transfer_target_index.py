"""transfers indexed by destination and target

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-24 00:10:00

The portal looks a file up by destination and target, and lists a bucket in key order; the index
on the destination alone made both read every transfer of the destination. The new index leads with
the destination, so it replaces the old one.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("data_transfer", schema=None) as batch_op:
        batch_op.create_index("ix_data_transfer_destination_target", ["destination_name", "target"], unique=False)
        batch_op.drop_index("ix_data_transfer_destination_name")


def downgrade() -> None:
    with op.batch_alter_table("data_transfer", schema=None) as batch_op:
        batch_op.create_index("ix_data_transfer_destination_name", ["destination_name"], unique=False)
        batch_op.drop_index("ix_data_transfer_destination_target")
