"""discovery pass lease

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-07 02:00:00

Two discovery passes of one host could run at once (two schedulers, or a pass run by hand during a
scheduled one) and collide on the dedupe key. A pass now holds its host by a lease in the host's
`acquisition_state` row: who holds it, and until when.
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

import catalog.models

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("acquisition_state", schema=None) as batch_op:
        batch_op.add_column(sa.Column("pass_holder", sqlmodel.sql.sqltypes.AutoString(), nullable=True))
        batch_op.add_column(sa.Column("pass_lease_until", catalog.models.UTCDateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("acquisition_state", schema=None) as batch_op:
        batch_op.drop_column("pass_lease_until")
        batch_op.drop_column("pass_holder")
