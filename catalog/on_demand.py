"""Files registered without retrieval ("no retrieval" rules), fetched on first use.

Such a file is a data file with no content yet, a `SourceFile` marked `on_demand`, and transfers
left Preset: the retriever does not claim it. The Data Portal shows it all the same (with the size
its source listed), and the first read of it through the portal (HTTPS GET or HEAD, S3, FTP, SFTP)
requests it: `requested_at` is set on its source, once, and from then on the retriever's ordinary
claim takes it (Preset → Fetching is a compare-and-set, so however many reads ask at once, the file
is fetched once). The read is answered "retry later" until the content is in the Data Store; then
the file is served, and expires, like any other.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlmodel import Session, col, select

from catalog.acquisition import SourceFile
from catalog.models import DataTransfer, utcnow
from catalog.statuses import TransferStatus
from catalog.transfers import record_history

S = TransferStatus

#: Statuses of an on-demand file's transfers before its content is in the Data Store.
PENDING: frozenset[TransferStatus] = frozenset({S.PRESET, S.FETCHING})

#: Seconds a client is told to wait before it asks again for a file being fetched.
RETRY_AFTER_SECONDS = 5


def pending_on_demand() -> Any:
    """SQL condition on `DataTransfer`: a transfer of an on-demand file whose content is not fetched yet."""
    on_demand = (
        select(SourceFile.data_file_id)
        .where(col(SourceFile.data_file_id) == col(DataTransfer.data_file_id), col(SourceFile.on_demand).is_(True))
        .exists()
    )
    return sa.and_(col(DataTransfer.status).in_([s.value for s in PENDING]), on_demand)


def visible(statuses: frozenset[TransferStatus]) -> Any:
    """SQL condition on `DataTransfer`: in one of `statuses`, or an on-demand file not fetched yet."""
    return sa.or_(col(DataTransfer.status).in_([s.value for s in statuses]), pending_on_demand())


def is_pending(session: Session, transfer: DataTransfer) -> bool:
    """Whether `transfer` is one of an on-demand file whose content is still to be fetched."""
    if transfer.status not in PENDING:
        return False
    source = session.get(SourceFile, transfer.data_file_id)
    return source is not None and source.on_demand


def request_fetch(session: Session, data_file_id: int, *, by: str, reason: str) -> bool:
    """Ask for the on-demand file's retrieval; True when this call asked first (the others find it
    asked already and change nothing). The request is one conditional update, so concurrent readers
    record it once, and the retriever claims the file once."""
    source = session.get(SourceFile, data_file_id)
    if source is None or not source.on_demand or source.requested_at is not None:
        return False
    table: Any = SourceFile.__table__  # type: ignore[attr-defined]
    changed = session.connection().execute(
        sa.update(table)
        .where(table.c.data_file_id == data_file_id, table.c.requested_at.is_(None))
        .values(requested_at=utcnow())
    )
    if not changed.rowcount:
        return False
    waiting = session.exec(
        select(DataTransfer).where(DataTransfer.data_file_id == data_file_id, DataTransfer.status == S.PRESET.value)
    )
    for transfer in waiting:
        assert transfer.id is not None
        record_history(session, transfer.id, "request", S.PRESET, S.PRESET, by=by, reason=reason)
    return True
