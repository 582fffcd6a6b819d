"""Purge: which data files have expired, and their removal from the database.

A data file has expired when nothing more will happen to it — every transfer is Done, Failed or
Stopped (or it has none) — and the last thing that happened to it (its arrival, a transfer's
finish or last change) is older than the retention. A file still queued, held, being fetched or
sent is never expired, whatever its age: a transfer whose lifetime ends is first failed "not
transferred before expiration" by the movers, and purged once the retention has passed after that.

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
from catalog.models import DataFile, DataTransfer, TransferHistory, utcnow
from catalog.statuses import FINAL


@dataclass(frozen=True)
class Expired:
    data_file_id: int
    store_key: str | None


def expired_data_files(
    session: Session, retention: timedelta, *, now: datetime | None = None, limit: int = 500
) -> list[Expired]:
    """Up to `limit` expired data files, oldest first."""
    cutoff = (now or utcnow()) - retention
    unfinished = select(DataTransfer.data_file_id).where(col(DataTransfer.status).not_in([s.value for s in FINAL]))
    recent = select(DataTransfer.data_file_id).where(col(DataTransfer.updated_at) >= cutoff)
    rows = session.exec(
        select(DataFile.id, DataFile.store_key)
        .where(
            col(DataFile.id).not_in(unfinished),
            col(DataFile.id).not_in(recent),
            col(DataFile.created_at) < cutoff,
            sa.or_(col(DataFile.arrived_at).is_(None), col(DataFile.arrived_at) < cutoff),
        )
        .order_by(col(DataFile.id))
        .limit(limit)
    ).all()
    return [Expired(data_file_id, store_key) for data_file_id, store_key in rows if data_file_id is not None]


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
