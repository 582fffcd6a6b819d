"""Files registered without retrieval ("no retrieval" rules), fetched on first use.

Such a file is a data file with no content yet, a `SourceFile` marked `on_demand`, and transfers
left Preset: the retriever does not claim it. The Data Portal shows it all the same (with the size
its source listed), and the first read of it through the portal (HTTPS GET or HEAD, S3, FTP, SFTP)
requests it: `requested_at` is set on its source, once, and from then on the retriever's ordinary
claim takes it (Preset → Fetching is a compare-and-set, so however many reads ask at once, the file
is fetched once). The read is answered "retry later" until the content is in the Data Store; then
the file is served, and expires, like any other.

The federated proxy and the movers go the same way: a proxied asset whose upstream is such a file's
source, and a dissemination transfer of such a file, request its retrieval here and wait for it, so
the source sees one fetch whoever asks (`tasks.proxy_fetch`, `catalog.dispatching`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session, col, select

from catalog import attempts
from catalog.acquisition import SourceFile
from catalog.models import DataFile, DataTransfer, utcnow
from catalog.statuses import FINAL, TransferStatus
from catalog.transfers import change_status, record_history

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
    session.execute(  # the retriever's claims see them from now on
        sa.update(DataTransfer).where(col(DataTransfer.data_file_id) == data_file_id).values(awaiting_request=False)
    )
    waiting = session.exec(
        select(DataTransfer).where(DataTransfer.data_file_id == data_file_id, DataTransfer.status == S.PRESET.value)
    )
    for transfer in waiting:
        assert transfer.id is not None
        record_history(session, transfer.id, "request", S.PRESET, S.PRESET, by=by, reason=reason)
    return True


def file_at_source(session: Session, host_name: str | None, path: str) -> int | None:
    """The on-demand data file registered from `path` on `host_name` (a proxied asset's upstream), the
    newest when the source changed and was registered again; None when there is none."""
    if host_name is None:
        return None
    return session.exec(
        select(SourceFile.data_file_id)
        .where(SourceFile.host_name == host_name, SourceFile.path == path, col(SourceFile.on_demand).is_(True))
        .order_by(col(SourceFile.data_file_id).desc())
        .limit(1)
    ).first()


@dataclass(frozen=True)
class Retrieval:
    """Where the retrieval of an on-demand file stands."""

    store_key: str | None
    """The content's key in the Data Store once fetched."""
    failed: str | None
    """Why it will not come: the file is gone, or every transfer of it ended without the content."""


def retrieval_of(session: Session, data_file_id: int) -> Retrieval:
    data_file = session.get(DataFile, data_file_id)
    if data_file is None:
        return Retrieval(None, f"data file {data_file_id} was removed")
    if data_file.store_key:
        return Retrieval(data_file.store_key, None)
    transfers = session.exec(select(DataTransfer).where(DataTransfer.data_file_id == data_file_id)).all()
    if transfers and all(t.status in FINAL for t in transfers):
        errors = sorted({t.error or t.status for t in transfers})
        return Retrieval(None, f"the retrieval of {data_file.name} ended without its content: {'; '.join(errors)}")
    return Retrieval(None, None)


def await_retrieval(session: Session, transfer_id: int, *, by: str) -> DataTransfer:
    """A mover claimed a transfer whose data file is not in the Data Store yet: the attempt ends, the
    transfer goes back to Preset and the file's retrieval is asked for, so the retriever fetches it
    (once, with every transfer of the file) and the transfer is queued again when it is whole."""
    reason = "its data file is not in the Data Store yet: waiting for its retrieval"
    changed = change_status(
        session, transfer_id, "await_retrieval", S.PRESET, by=by, reason=reason, mover=None, scheduled_at=utcnow()
    )
    attempts.end(session.connection(), transfer_id, changed.attempt, S.PRESET.value, error=reason)
    request_fetch(session, changed.data_file_id, by=by, reason=f"mover {by} has to send it")
    return changed
