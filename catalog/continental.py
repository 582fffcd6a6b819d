"""Continental data movers in the database: which destination each serves, what it pre-replicated,
and who may claim a proxied transfer.

A continental mover is configured as OpenECPDS configures it: a **proxy host** (a host of kind
`proxy`: a directory or a bucket reached through the transfer layer) attached to a destination. The
proxy host's location is the continental mover's own store. A mover started for that proxy host
(`--proxy-host NAME`) copies the destination's data files there before their scheduled time
(pre-replication, `lead_seconds` ahead), verified by MD5, and then disseminates them from that copy.

The main movers leave a proxied destination's transfers alone while a mover of its proxy host beats,
and take them over — sending from the Data Store — when none has beaten for `mover_stale_seconds`,
or when the pre-replication of that file failed. A claim is a compare-and-set, so however the two
sides race, a transfer is sent by one mover at a time.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlmodel import Column, Field, Session, SQLModel, col, select

from catalog.errors import InvalidInput
from catalog.models import DataFile, DataTransfer, DestinationHost, Host, HostKind, Mover, UTCDateTime, utcnow
from catalog.statuses import FINAL, READY, TransferStatus

#: Pre-replication starts this long before a transfer's scheduled time unless the proxy host's
#: `lead_seconds` option says otherwise.
DEFAULT_LEAD_SECONDS = 3600.0

#: A failed pre-replication is tried again this long after it failed, unless the proxy host's
#: `retry_seconds` option says otherwise: a passing fault (the location unreachable for a minute) must
#: not send every file of the lead time from the Data Store. Meanwhile the main movers may send it.
DEFAULT_RETRY_SECONDS = 600.0

#: Statuses whose content is in the Data Store and that will be sent: worth pre-replicating.
WAITING: frozenset[TransferStatus] = READY | {TransferStatus.STANDBY}


class ProxyReplica(SQLModel, table=True):
    """A data file's copy in a proxy host's store location, or the failed attempt to make it.

    `ok` is true only once the copy was read back from the location with the data file's MD5; a false
    row says the pre-replication failed (and why), so the main movers send the file instead.
    """

    __tablename__ = "proxy_replica"
    data_file_id: int = Field(foreign_key="data_file.id", primary_key=True, ondelete="CASCADE")
    host_name: str = Field(foreign_key="host.name", primary_key=True, ondelete="CASCADE")
    ok: bool
    md5: str | None = None
    message: str | None = None
    mover: str = ""
    replicated_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))


def _seconds_option(host: Host, option: str, default: float) -> timedelta:
    value = (host.options or {}).get(option, default)
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        raise InvalidInput(f"proxy host {host.name}: {option} must be a number of seconds, not {value!r}") from None
    if not seconds >= 0:  # also refuses NaN
        raise InvalidInput(f"proxy host {host.name}: {option} must not be negative")
    return timedelta(seconds=seconds)


def lead_time(host: Host) -> timedelta:
    """How long before their scheduled time the files of `host`'s destinations are pre-replicated."""
    return _seconds_option(host, "lead_seconds", DEFAULT_LEAD_SECONDS)


def retry_time(host: Host) -> timedelta:
    """How long after a failed pre-replication to `host` the file is copied again (if still waiting)."""
    return _seconds_option(host, "retry_seconds", DEFAULT_RETRY_SECONDS)


def check_proxy_options(host: Host) -> None:
    """Refuse a proxy host whose timing options could never be used, when it is created."""
    lead_time(host)
    retry_time(host)


def proxy_host(session: Session, name: str) -> Host:
    host = session.get(Host, name)
    if host is None or not host.active:
        raise InvalidInput(f"no active host {name!r} to serve as a continental mover's proxy host")
    return host


def proxy_hosts(session: Session, destinations: list[str]) -> dict[str, str]:
    """The proxy host of each of `destinations` that has an active one."""
    if not destinations:
        return {}
    rows = session.exec(
        select(DestinationHost.destination_name, DestinationHost.host_name)
        .join(Host, col(Host.name) == col(DestinationHost.host_name))
        .where(
            DestinationHost.kind == HostKind.PROXY,
            col(Host.active).is_(True),
            col(DestinationHost.destination_name).in_(destinations),
        )
    ).all()
    return dict(rows)


def live_proxy_hosts(session: Session, *, stale_after: timedelta, now: datetime | None = None) -> set[str]:
    """Proxy hosts with at least one continental mover that beat within `stale_after`."""
    cutoff = (now or utcnow()) - stale_after
    rows = session.exec(
        select(Mover.proxy_host)
        .join(Host, col(Host.name) == col(Mover.proxy_host))
        .where(col(Host.active).is_(True), col(Mover.heartbeat_at) >= cutoff)
    ).all()
    return {r for r in rows if r}


def _proxy_link(host: str | None = None) -> Any:
    """The transfer's destination has proxy host `host` (None: any proxy host)."""
    link = select(DestinationHost.host_name).where(
        col(DestinationHost.destination_name) == col(DataTransfer.destination_name),
        DestinationHost.kind == HostKind.PROXY,
    )
    return link if host is None else link.where(col(DestinationHost.host_name) == host)


def _replica(ok: bool) -> Any:
    return select(ProxyReplica.host_name).where(
        col(ProxyReplica.data_file_id) == col(DataTransfer.data_file_id), col(ProxyReplica.ok).is_(ok)
    )


def claimable_by(proxy: str | None, live: set[str]) -> Any:
    """Which transfers a mover may claim, as a condition on DataTransfer.

    A continental mover (`proxy` named) takes only its destinations' transfers whose file it holds a
    good copy of. A main mover takes everything else: destinations without a proxy host, those whose
    proxy host has no live mover (`live`), and files whose pre-replication there failed.
    """
    if proxy is not None:
        return sa.and_(
            _proxy_link(proxy).exists(),
            _replica(ok=True).where(col(ProxyReplica.host_name) == proxy).exists(),
        )
    if not live:
        return sa.true()
    failed_there = (
        _replica(ok=False)
        .where(col(ProxyReplica.host_name) == col(DestinationHost.host_name))
        .correlate(DataTransfer, DestinationHost)
    )
    served = _proxy_link().where(col(DestinationHost.host_name).in_(sorted(live)), sa.not_(failed_there.exists()))
    return sa.not_(served.exists())


@dataclass(frozen=True)
class PreReplication:
    """A data file a continental mover must copy to its store, and the first transfer that needs it."""

    data_file_id: int
    transfer_id: int
    store_key: str
    md5: str
    size: int


def due_for_pre_replication(
    session: Session,
    proxy: str,
    *,
    lead: timedelta,
    retry_after: timedelta = timedelta(seconds=DEFAULT_RETRY_SECONDS),
    now: datetime | None = None,
    limit: int = 100,
) -> list[PreReplication]:
    """Data files of `proxy`'s destinations that are due within `lead` (or overdue) and not copied
    yet, nor failed within `retry_after`, the soonest due first."""
    now = now or utcnow()
    horizon = now + lead
    attempted = select(ProxyReplica.data_file_id).where(
        ProxyReplica.host_name == proxy,
        sa.or_(col(ProxyReplica.ok).is_(True), col(ProxyReplica.replicated_at) > now - retry_after),
    )
    query = (
        select(DataTransfer, DataFile)
        .join(DataFile, col(DataFile.id) == col(DataTransfer.data_file_id))
        .where(
            col(DataTransfer.status).in_([s.value for s in WAITING]),
            col(DataTransfer.scheduled_at) <= horizon,
            _proxy_link(proxy).exists(),
            col(DataFile.store_key).is_not(None),
            col(DataFile.md5).is_not(None),
            col(DataFile.id).not_in(attempted),
        )
        .order_by(col(DataTransfer.scheduled_at), col(DataTransfer.id))
        .limit(limit * 4)
    )
    rows = session.exec(query).all()
    due: dict[int, PreReplication] = {}
    for transfer, data_file in rows:
        file_id, key, md5 = data_file.id, data_file.store_key, data_file.md5
        if file_id is not None and transfer.id is not None and key and md5 and file_id not in due:
            due[file_id] = PreReplication(file_id, transfer.id, key, md5, data_file.size or 0)
    return list(due.values())[:limit]


def record_pre_replication(
    session: Session, item: PreReplication, proxy: str, *, error: str | None, mover: str
) -> None:
    """Remember the copy (`error` None: verified) or why it could not be made."""
    if session.get(DataFile, item.data_file_id) is None:
        return  # purged meanwhile
    session.merge(
        ProxyReplica(
            data_file_id=item.data_file_id,
            host_name=proxy,
            ok=error is None,
            md5=item.md5 if error is None else None,
            message=error,
            mover=mover,
            replicated_at=utcnow(),
        )
    )
    session.flush()


def finished_copies(session: Session, proxy: str, *, limit: int = 100, after: int = 0) -> list[tuple[int, str]]:
    """(data file id, store key) of copies in `proxy`'s location that no transfer needs any more:
    every transfer of the file to `proxy`'s destinations is Done, Failed or Stopped. In data file
    order, from after the id `after`."""
    unfinished = select(DataTransfer.data_file_id).where(
        col(DataTransfer.status).not_in([s.value for s in FINAL]), _proxy_link(proxy).exists()
    )
    rows = session.exec(
        select(ProxyReplica.data_file_id, DataFile.store_key)
        .join(DataFile, col(DataFile.id) == col(ProxyReplica.data_file_id))
        .where(
            ProxyReplica.host_name == proxy,
            col(ProxyReplica.ok).is_(True),
            col(ProxyReplica.data_file_id).not_in(unfinished),
            col(ProxyReplica.data_file_id) > after,
        )
        .order_by(col(ProxyReplica.data_file_id))
        .limit(limit)
    ).all()
    return [(file_id, key) for file_id, key in rows if key]


def forget_copy(session: Session, data_file_id: int, proxy: str) -> None:
    """The copy is gone from the location: a transfer of the file queued again is copied anew."""
    row = session.get(ProxyReplica, (data_file_id, proxy))
    if row is not None:
        session.delete(row)
        session.flush()


def proxy_host_names(session: Session) -> list[str]:
    """Every host attached to a destination as a proxy host, by name."""
    return sorted(
        set(session.exec(select(DestinationHost.host_name).where(DestinationHost.kind == HostKind.PROXY)).all())
    )


def proxy_replicas(session: Session, proxy: str) -> list[ProxyReplica]:
    return list(session.exec(select(ProxyReplica).where(ProxyReplica.host_name == proxy)))
