"""What an installation asks of the database as it starts, runs and stops: uploads that a dead API
process or a silent client left Arriving, and the transfers a stopping mover still has in flight."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlmodel import Session, col, select, update

from catalog.models import DataFile, DataTransfer, utcnow
from catalog.statuses import TransferStatus
from catalog.submission import abort_push


def abort_broken_uploads(session: Session, reason: str, *, by: str) -> list[int]:
    """Fail the transfers of every data file still being uploaded, and return their ids.

    Only for a moment when no upload can be under way — `pds up` calls it before its API and portal
    servers start — so each of them is an upload whose process died before the content was whole (an
    upload whose client went away is failed by the API itself).
    """
    arriving = select(DataTransfer.data_file_id, DataTransfer.id).where(
        DataTransfer.status == TransferStatus.ARRIVING.value
    )
    rows = session.exec(arriving).all()
    for data_file_id in sorted({data_file_id for data_file_id, _ in rows}):
        abort_push(session, data_file_id, reason, by=by)
    return sorted(transfer_id for _, transfer_id in rows if transfer_id is not None)


def record_upload_progress(session: Session, data_file_id: int, received: int) -> bool:
    """Note that an upload is alive and how many bytes it has received; False if its transfers are no
    longer Arriving (failed as idle, say), so the upload must stop."""
    alive = session.exec(
        update(DataTransfer)
        .where(
            col(DataTransfer.data_file_id) == data_file_id,
            col(DataTransfer.status) == TransferStatus.ARRIVING.value,
        )
        .values(bytes_sent=received, updated_at=utcnow())
    )
    return bool(alive.rowcount)


def fail_idle_uploads(session: Session, idle: timedelta, *, by: str, now: datetime | None = None) -> list[int]:
    """Fail the uploads that received nothing for `idle` (their client went silent, or the process
    receiving them died), and return their data files' ids. An upload records its progress every few
    seconds (`record_upload_progress`), so a live one is never taken for idle."""
    cutoff = (now or utcnow()) - idle
    silent = select(DataTransfer.data_file_id).where(
        DataTransfer.status == TransferStatus.ARRIVING.value, col(DataTransfer.updated_at) < cutoff
    )
    data_file_ids = sorted(set(session.exec(silent).all()))
    reason = f"upload broke off: nothing arrived for {idle.total_seconds():.0f} s"
    for data_file_id in data_file_ids:
        abort_push(session, data_file_id, reason, by=by)
    return data_file_ids


@dataclass(frozen=True)
class InFlight:
    id: int
    destination: str
    target: str
    bytes_sent: int
    size: int | None


def in_flight(session: Session, mover: str) -> list[InFlight]:
    """The transfers `mover` is sending now, with how far each has got (progress is recorded every few
    seconds while a file is sent)."""
    query = (
        select(DataTransfer, DataFile.size)
        .join(DataFile, col(DataFile.id) == DataTransfer.data_file_id)
        .where(DataTransfer.status == TransferStatus.TRANSFERRING.value, DataTransfer.mover == mover)
        .order_by(col(DataTransfer.id))
    )
    return [
        InFlight(t.id or 0, t.destination_name, t.target, t.bytes_sent or 0, size)
        for t, size in session.exec(query).all()
    ]
