"""Purge: which data files have expired, and their removal from the database.

A data file has expired when the last thing that happened to it (its arrival, a transfer's finish
or last change) is older than the retention, whatever its transfers' state: a file left in the
portal that nobody pulled, or registered without retrieval and never asked for, expires like a
delivered one. Its unfinished transfers are first stopped, with the reason "expired before it was
sent" in their history (keeping their last-change time, so the stop does not start the retention
again), and the file is removed by the next purge run, so the monitor shows why it went. A transfer
moving bytes right now (Transferring, Fetching, Arriving) is never cut off: its file waits until
the move ends or its mover's recovery puts it back.

The rows go first (one transaction per batch), then the objects: a crash between the two leaves an
object no data file points at, never a data file whose object is gone. The discovery dedupe keys
stay, so a purged file is not registered again by the next discovery pass.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlmodel import Session, col, select

from catalog.acquisition import SourceFile
from catalog.config import MOVING
from catalog.errors import Conflict
from catalog.models import DataFile, DataTransfer, TransferHistory, utcnow
from catalog.statuses import FINAL, TransferStatus
from catalog.transfers import change_status

#: The reason recorded in the history of a transfer stopped because its data file expired.
EXPIRED_UNSENT = "expired before it was sent"


@dataclass(frozen=True)
class Expired:
    data_file_id: int
    store_key: str | None


def _past_retention(cutoff: datetime) -> list[sa.ColumnElement[bool]]:
    """Conditions on `DataFile`: nothing happened to it since `cutoff` and no transfer of it moves bytes."""
    recent = select(DataTransfer.data_file_id).where(col(DataTransfer.updated_at) >= cutoff)
    moving = select(DataTransfer.data_file_id).where(col(DataTransfer.status).in_([s.value for s in MOVING]))
    return [
        col(DataFile.id).not_in(recent),
        col(DataFile.id).not_in(moving),
        col(DataFile.created_at) < cutoff,
        sa.or_(col(DataFile.arrived_at).is_(None), col(DataFile.arrived_at) < cutoff),
    ]


def expired_data_files(
    session: Session, retention: timedelta, *, now: datetime | None = None, limit: int = 500
) -> list[Expired]:
    """Up to `limit` expired data files whose transfers have all ended, oldest first."""
    cutoff = (now or utcnow()) - retention
    unfinished = select(DataTransfer.data_file_id).where(col(DataTransfer.status).not_in([s.value for s in FINAL]))
    rows = session.exec(
        select(DataFile.id, DataFile.store_key)
        .where(col(DataFile.id).not_in(unfinished), *_past_retention(cutoff))
        .order_by(col(DataFile.id))
        .limit(limit)
    ).all()
    return [Expired(data_file_id, store_key) for data_file_id, store_key in rows if data_file_id is not None]


def stop_expired_unsent(
    session: Session, retention: timedelta, *, by: str, now: datetime | None = None, limit: int = 500
) -> list[int]:
    """Stop up to `limit` unfinished transfers of expired data files (queued, held, waiting to be
    pulled, or waiting for a retrieval nobody asked for), "expired before it was sent"; returns their ids."""
    cutoff = (now or utcnow()) - retention
    expired = select(DataFile.id).where(*_past_retention(cutoff))
    rows = session.exec(
        select(DataTransfer.id, DataTransfer.updated_at)
        .where(
            col(DataTransfer.data_file_id).in_(expired),
            col(DataTransfer.status).not_in([s.value for s in FINAL]),
        )
        .order_by(col(DataTransfer.id))
        .limit(limit)
    ).all()
    days = retention.total_seconds() / 86400
    reason = f"{EXPIRED_UNSENT}: nothing happened to its data file for the retention ({days:g} days)"
    stopped = []
    for transfer_id, updated_at in rows:
        assert transfer_id is not None
        try:
            # The last-change time stays: the next purge run removes the file, not one retention later.
            change_status(
                session, transfer_id, "stop", TransferStatus.STOPPED, by=by, reason=reason, updated_at=updated_at
            )
        except Conflict:
            continue  # it moved meanwhile (a mover claimed it): not expired any more
        stopped.append(transfer_id)
    return stopped


def remove_data_files(session: Session, ids: list[int]) -> int:
    """Delete the data files with their transfers, histories and sources; return the transfers removed."""
    if not ids:
        return 0
    transfer_ids = select(DataTransfer.id).where(col(DataTransfer.data_file_id).in_(ids))
    connection = session.connection()
    connection.execute(sa.delete(TransferHistory).where(col(TransferHistory.transfer_id).in_(transfer_ids)))
    transfers = connection.execute(sa.delete(DataTransfer).where(col(DataTransfer.data_file_id).in_(ids))).rowcount
    connection.execute(sa.delete(SourceFile).where(col(SourceFile.data_file_id).in_(ids)))
    connection.execute(sa.delete(DataFile).where(col(DataFile.id).in_(ids)))
    return int(transfers or 0)
