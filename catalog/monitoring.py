"""Read-only views of the dissemination for the monitor pages and `/metrics`: per destination its
state, queue and recent rate; its transfers; the hosts; totals by status.

Every query here is an aggregate or a bounded page, so a database of millions of transfers answers
in one round trip per view.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlmodel import Session, col, func, select

from catalog.models import (
    DataFile,
    DataTransfer,
    Destination,
    DestinationHost,
    DestinationState,
    Host,
    HostKind,
    Mover,
    utcnow,
)
from catalog.statuses import TransferStatus

#: Statuses of transfers waiting their turn in a destination's queue.
WAITING = (TransferStatus.QUEUED.value, TransferStatus.REQUEUED.value)
#: The window over which a destination's recent rate is measured.
RATE_WINDOW = timedelta(minutes=10)


@dataclass
class DestinationView:
    name: str
    active: bool
    hold_reason: str | None
    current_host: str | None
    hosts: list[str]
    counts: dict[str, int] = field(default_factory=dict)
    """Transfers by status."""
    recent_bytes: int = 0
    """Bytes of transfers finished Done within RATE_WINDOW."""
    recent_done: int = 0
    sending_seconds: float = 0.0
    """How long, in all, at least one of those transfers was being sent (overlaps counted once)."""
    timed_bytes: int = 0
    """The bytes of those transfers whose start time is known (the ones `sending_seconds` covers)."""

    @property
    def queued(self) -> int:
        return sum(self.counts.get(s, 0) for s in WAITING)

    @property
    def rate(self) -> float:
        """Bytes per second while sending, over the transfers finished within RATE_WINDOW.

        Dividing by the whole window instead would show a site that took 200 MiB at 20 MiB/s ten
        seconds ago as receiving 0.3 MiB/s."""
        return self.timed_bytes / self.sending_seconds if self.sending_seconds > 0 else 0.0


@dataclass
class TransferRow:
    id: int
    data_file_id: int
    target: str
    status: str
    priority: int
    host: str | None
    size: int | None
    bytes_sent: int
    queued_at: datetime
    finished_at: datetime | None
    error: str | None
    flow_run_id: str | None


@dataclass
class HostView:
    name: str
    kind: str
    protocol: str
    address: str
    active: bool
    destinations: list[str]
    done: int
    failed_attempts: int
    """Transfers whose last attempt on this host left an error and that are not Done."""


def _hosts_by_destination(session: Session) -> dict[str, list[str]]:
    rows = session.exec(
        select(DestinationHost.destination_name, DestinationHost.host_name)
        .where(DestinationHost.kind == HostKind.DISSEMINATION)
        .order_by(col(DestinationHost.destination_name), col(DestinationHost.rank))
    )
    hosts: dict[str, list[str]] = {}
    for destination, host in rows:
        hosts.setdefault(destination, []).append(host)
    return hosts


def destination_names(session: Session) -> list[str]:
    return list(session.exec(select(Destination.name).order_by(col(Destination.name))))


def counts_by_destination(session: Session) -> dict[str, dict[str, int]]:
    """{destination: {status: number of transfers}}."""
    rows = session.exec(
        select(DataTransfer.destination_name, DataTransfer.status, func.count()).group_by(
            col(DataTransfer.destination_name), col(DataTransfer.status)
        )
    )
    counts: dict[str, dict[str, int]] = {}
    for destination, status, number in rows:
        counts.setdefault(destination, {})[str(status)] = int(number)
    return counts


def bytes_sent_by_destination(session: Session) -> dict[str, int]:
    """Bytes delivered (transfers Done) per destination, over the transfers the database still holds."""
    rows = session.exec(
        select(DataTransfer.destination_name, func.coalesce(func.sum(DataTransfer.bytes_sent), 0))
        .where(DataTransfer.status == TransferStatus.DONE.value)
        .group_by(col(DataTransfer.destination_name))
    )
    return {destination: int(total) for destination, total in rows}


def destinations_overview(session: Session, now: datetime | None = None) -> list[DestinationView]:
    now = now or utcnow()
    states = {s.name: s for s in session.exec(select(DestinationState))}
    hosts = _hosts_by_destination(session)
    counts = counts_by_destination(session)
    recent = {
        destination: (int(total), int(number))
        for destination, total, number in session.exec(
            select(DataTransfer.destination_name, func.coalesce(func.sum(DataTransfer.bytes_sent), 0), func.count())
            .where(DataTransfer.status == TransferStatus.DONE.value)
            .where(col(DataTransfer.finished_at) >= now - RATE_WINDOW)
            .group_by(col(DataTransfer.destination_name))
        )
    }
    sending = _sending_by_destination(session, now - RATE_WINDOW)
    views = []
    for destination in session.exec(select(Destination).order_by(col(Destination.name))):
        state = states.get(destination.name)
        recent_bytes, recent_done = recent.get(destination.name, (0, 0))
        sending_seconds, timed_bytes = sending.get(destination.name, (0.0, 0))
        views.append(
            DestinationView(
                name=destination.name,
                active=destination.active,
                hold_reason=state.hold_reason if state else None,
                current_host=state.current_host if state else None,
                hosts=hosts.get(destination.name, []),
                counts=counts.get(destination.name, {}),
                recent_bytes=recent_bytes,
                recent_done=recent_done,
                sending_seconds=sending_seconds,
                timed_bytes=timed_bytes,
            )
        )
    return views


def _sending_by_destination(session: Session, since: datetime) -> dict[str, tuple[float, int]]:
    """{destination: (seconds during which at least one transfer finished since `since` was being sent,
    the bytes of those transfers)}: the union of their [started, finished] intervals, so transfers
    running in parallel are not counted twice."""
    t = DataTransfer
    rows = session.exec(
        select(t.destination_name, t.started_at, t.finished_at, t.bytes_sent)
        .where(DataTransfer.status == TransferStatus.DONE.value)
        .where(col(DataTransfer.finished_at) >= since)
        .where(col(DataTransfer.started_at).is_not(None))
        .order_by(col(DataTransfer.destination_name), col(DataTransfer.started_at))
    )
    sending: dict[str, tuple[float, int]] = {}
    end: dict[str, datetime] = {}
    for destination, started, finished, sent in rows:
        if started is None or finished is None:
            continue
        seconds, total = sending.get(destination, (0.0, 0))
        last = end.get(destination)
        begin = max(started, last) if last else started  # only the part not covered yet
        if finished > begin:
            seconds += (finished - begin).total_seconds()
        end[destination] = max(finished, last) if last else finished
        sending[destination] = (seconds, total + int(sent or 0))
    return sending


def destination_view(session: Session, name: str) -> DestinationView | None:
    return next((v for v in destinations_overview(session) if v.name == name), None)


def destination_transfers(
    session: Session, destination: str, *, status: str | None = None, limit: int = 200
) -> list[TransferRow]:
    """The destination's transfers, newest first (a bounded page)."""
    query = (
        select(DataTransfer, DataFile.size)
        .join(DataFile, col(DataFile.id) == col(DataTransfer.data_file_id))
        .where(DataTransfer.destination_name == destination)
        .order_by(col(DataTransfer.id).desc())
        .limit(limit)
    )
    if status:
        query = query.where(DataTransfer.status == status)
    return [
        TransferRow(
            id=t.id or 0,
            data_file_id=t.data_file_id,
            target=t.target,
            status=str(t.status),
            priority=t.priority,
            host=t.host_name,
            size=size,
            bytes_sent=t.bytes_sent,
            queued_at=t.queued_at,
            finished_at=t.finished_at,
            error=t.error,
            flow_run_id=t.flow_run_id,
        )
        for t, size in session.exec(query)
    ]


def hosts_overview(session: Session) -> list[HostView]:
    destinations: dict[str, list[str]] = {}
    for destination, host in session.exec(select(DestinationHost.destination_name, DestinationHost.host_name)):
        destinations.setdefault(host, []).append(destination)
    done = dict(
        session.exec(
            select(DataTransfer.host_name, func.count())
            .where(DataTransfer.status == TransferStatus.DONE.value)
            .group_by(col(DataTransfer.host_name))
        ).all()
    )
    failing = dict(
        session.exec(
            select(DataTransfer.host_name, func.count())
            .where(DataTransfer.status != TransferStatus.DONE.value)
            .where(sa.and_(col(DataTransfer.error).is_not(None), col(DataTransfer.error) != ""))
            .group_by(col(DataTransfer.host_name))
        ).all()
    )
    return [
        HostView(
            name=h.name,
            kind=str(h.kind),
            protocol=h.protocol,
            address=h.address,
            active=h.active,
            destinations=sorted(destinations.get(h.name, [])),
            done=int(done.get(h.name, 0)),
            failed_attempts=int(failing.get(h.name, 0)),
        )
        for h in session.exec(select(Host).order_by(col(Host.name)))
    ]


def movers(session: Session) -> list[Mover]:
    return list(session.exec(select(Mover).order_by(col(Mover.name))))
