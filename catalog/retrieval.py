"""Retrieval in the database: claiming registered files to fetch, and recording how each fetch ended.

The same pattern as dissemination: the database is the queue. A retriever claims data files whose
transfers are Preset (Preset → Fetching, compare-and-set, so two retrievers never fetch the same
file; an on-demand file only once a read asked for it), at most `max_connections` (else
`default_per_host`) files in retrieval at a time from one source host, counted in data files (a file
queued to several aliases is one fetch) over every retriever: claims are serialised, so two
retrievers never both see the last free slot. A fetched file's transfers become
Queued (or StandBy); a failed one's become Failed with the reason, or Preset again when its source
says "requeue on failure" and starts are left. A retriever that restarts, or that stopped beating,
has its Fetching files put back to Preset.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlmodel import Session, col, select

from catalog.acquisition import SourceFile
from catalog.errors import Conflict
from catalog.models import DataFile, DataTransfer, Destination, Host, Mover, TransferHistory, utcnow
from catalog.scheduling import QUEUE_ORDER
from catalog.statuses import TransferStatus
from catalog.store import StoredObject
from catalog.submission import AliasPlan
from catalog.transfers import change_status

S = TransferStatus
RETRY_REASON = "retrieval failed, retried later"


@dataclass(frozen=True)
class Fetch:
    """One claimed data file: where to fetch it from."""

    data_file_id: int
    host: str
    path: str
    size: int | None
    transfer_ids: tuple[int, ...]


def _transfers(session: Session, data_file_id: int, status: TransferStatus) -> list[DataTransfer]:
    return list(
        session.exec(
            select(DataTransfer).where(DataTransfer.data_file_id == data_file_id, DataTransfer.status == status.value)
        )
    )


def host_connections(host: Host | None, default_per_host: int) -> int:
    """Fetches a source host takes at once: its `max_connections` option, else the default."""
    if host is None or not host.active:
        return 0
    return int(host.options.get("max_connections", 0) or 0) or default_per_host


#: The key of the PostgreSQL advisory lock that serialises retrieval claims (one per database; any
#: constant no other user of the database takes; the movers' host locks use 0x70647301).
_CLAIM_LOCK = 0x7064_7302


def _serialise_claims(session: Session) -> None:
    """On PostgreSQL, hold the claim lock until this transaction commits: a second retriever counts a
    host's files in retrieval after the first one's claims are committed, so together they never
    exceed its bound. Taken before any row lock, so it never closes a cycle with one (a claim is a
    few milliseconds). SQLite's BEGIN IMMEDIATE already makes claims one at a time."""
    if session.get_bind().dialect.name == "postgresql":
        session.connection().execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _CLAIM_LOCK})


def files_in_retrieval(session: Session) -> Counter[str]:
    """Source host → data files Fetching from it now (a file's alias transfers count once)."""
    rows = session.exec(
        select(SourceFile.host_name, sa.func.count(sa.distinct(col(DataTransfer.data_file_id))))
        .join(DataTransfer, col(DataTransfer.data_file_id) == col(SourceFile.data_file_id))
        .where(DataTransfer.status == S.FETCHING.value)
        .group_by(col(SourceFile.host_name))
    ).all()
    return Counter({host: int(count) for host, count in rows})


def claim_fetches(
    session: Session,
    retriever: str,
    limit: int,
    *,
    default_per_host: int,
    now: datetime | None = None,
) -> list[Fetch]:
    """Take up to `limit` data files waiting for retrieval, in queue order, so that no source host has
    more files in retrieval (Fetching, by any retriever) than its `max_connections` (else
    `default_per_host`). Call inside a transaction and commit right after."""
    now = now or utcnow()
    _serialise_claims(session)
    running = files_in_retrieval(session)
    caps = {host: host_connections(session.get(Host, host), default_per_host) for host in running}
    # Hosts at their bound are left out of the query, so a long queue of one host's files never
    # hides the files of the others behind it.
    full = [host for host, files in running.items() if files >= caps[host]]
    candidates = session.exec(
        select(DataTransfer, SourceFile)
        .join(SourceFile, col(SourceFile.data_file_id) == col(DataTransfer.data_file_id))
        .where(
            DataTransfer.status == S.PRESET.value,
            col(DataTransfer.awaiting_request) == sa.false(),  # through `ix_data_transfer_retrieval`
            col(DataTransfer.scheduled_at) <= now,
            col(SourceFile.host_name).not_in(full),
            # An on-demand file waits for a read through the portal to ask for it (`catalog.on_demand`).
            sa.or_(col(SourceFile.on_demand).is_(False), col(SourceFile.requested_at).is_not(None)),
        )
        .order_by(*QUEUE_ORDER)
        .limit(limit * 4 + 16)
        .with_for_update(skip_locked=True, of=DataTransfer)
    ).all()
    if not candidates:
        return []
    claimed: list[Fetch] = []
    seen: set[int] = set()
    for transfer, source in candidates:
        if len(claimed) >= limit or transfer.data_file_id in seen:
            continue
        seen.add(transfer.data_file_id)
        if source.host_name not in caps:
            caps[source.host_name] = host_connections(session.get(Host, source.host_name), default_per_host)
        if running[source.host_name] >= caps[source.host_name]:
            continue
        ids = []
        for waiting in _transfers(session, transfer.data_file_id, S.PRESET):
            assert waiting.id is not None
            try:
                change_status(
                    session,
                    waiting.id,
                    "fetch",
                    S.FETCHING,
                    by=retriever,
                    reason=f"from host {source.host_name}",
                    mover=retriever,
                )
                ids.append(waiting.id)
            except Conflict:
                continue  # another retriever took it first
        if ids:
            running[source.host_name] += 1
            claimed.append(Fetch(transfer.data_file_id, source.host_name, source.path, source.size, tuple(ids)))
    return claimed


def record_fetched(session: Session, data_file_id: int, stored: StoredObject, *, by: str) -> list[DataTransfer]:
    """The content is whole in the Data Store: the transfers are queued (or held in StandBy)."""
    data_file = session.get(DataFile, data_file_id)
    source = session.get(SourceFile, data_file_id)
    if data_file is None or source is None:
        raise Conflict(f"data file {data_file_id} was removed during its retrieval")
    now = utcnow()
    data_file.store_key, data_file.size = stored.key, stored.size
    data_file.adler32, data_file.md5, data_file.arrived_at = stored.adler32, stored.md5, now
    data_file.sha512 = stored.sha512
    source.retrieved_at = now
    session.add(data_file)
    session.add(source)
    target = S.STANDBY if source.standby else S.QUEUED
    done = []
    reason = f"{stored.size} bytes fetched from host {source.host_name}, adler32 {stored.adler32}"
    for transfer in _transfers(session, data_file_id, S.PRESET):  # aliases registered meanwhile
        assert transfer.id is not None
        change_status(session, transfer.id, "fetch", S.FETCHING, by=by, reason="fetched with its data file")
    fetching = _transfers(session, data_file_id, S.FETCHING)
    delays = _alias_delays(session, data_file_id)
    for transfer in fetching:
        assert transfer.id is not None
        start = now + timedelta(seconds=delays.get(transfer.destination_name, 0))
        done.append(
            change_status(
                session, transfer.id, "fetched", target, by=by, reason=reason, queued_at=now, scheduled_at=start
            )
        )
    return done


def _alias_delays(session: Session, data_file_id: int) -> dict[str, int]:
    """Each alias's delay for the data file's transfers: the first transfer registered is the
    destination's own; the others were queued to its aliases."""
    first = session.exec(
        select(DataTransfer).where(DataTransfer.data_file_id == data_file_id).order_by(col(DataTransfer.id)).limit(1)
    ).first()
    if first is None:
        return {}
    return {a.alias_name: a.delay_seconds for a in AliasPlan(session).aliases(first.destination_name, first.target)}


def _failed_fetches(session: Session, transfer_id: int) -> int:
    count = session.exec(
        select(sa.func.count()).where(
            TransferHistory.transfer_id == transfer_id,
            TransferHistory.action == "fetch_failed",
            col(TransferHistory.reason).startswith(RETRY_REASON),  # not the recoveries after a crash
        )
    ).one()
    return int(count)


def record_fetch_failure(session: Session, data_file_id: int, error: str, *, by: str) -> list[DataTransfer]:
    """Failed with the reason; back to Preset (after the destination's start frequency) when the
    source says "requeue on failure" and the destination's max_starts are not used up."""
    source = session.get(SourceFile, data_file_id)
    changed = []
    for transfer in _transfers(session, data_file_id, S.FETCHING):
        assert transfer.id is not None
        destination = session.get(Destination, transfer.destination_name)
        max_starts = destination.max_starts if destination else 1
        delay = destination.start_frequency_seconds if destination else 0
        if source is not None and source.requeue_on_failure and _failed_fetches(session, transfer.id) + 1 < max_starts:
            changed.append(
                change_status(
                    session,
                    transfer.id,
                    "fetch_failed",
                    S.PRESET,
                    by=by,
                    reason=f"{RETRY_REASON}: {error}",
                    error=error,
                    mover=None,
                    scheduled_at=utcnow() + timedelta(seconds=delay),
                )
            )
        else:
            changed.append(
                change_status(
                    session, transfer.id, "fetch_failed", S.FAILED, by=by, reason=error, error=error, mover=None
                )
            )
    return changed


def recover_fetches(session: Session, retriever: str, *, stale_after: timedelta, now: datetime | None = None) -> int:
    """Put Fetching transfers of `retriever` (restarting) or of silent retrievers back to Preset; the
    partial object never reached a key (the store writes under tmp/), so the file is fetched whole again.
    """
    now = now or utcnow()
    stale = select(Mover.name).where(Mover.heartbeat_at < now - stale_after)
    rows = session.exec(
        select(DataTransfer.id, DataTransfer.mover).where(
            DataTransfer.status == S.FETCHING.value,
            (col(DataTransfer.mover) == retriever)
            | col(DataTransfer.mover).is_(None)
            | col(DataTransfer.mover).in_(stale),
        )
    ).all()
    recovered = 0
    for transfer_id, previous in rows:
        assert transfer_id is not None
        try:
            change_status(
                session,
                transfer_id,
                "fetch_failed",
                S.PRESET,
                by=retriever,
                reason=f"retriever {previous} stopped during the retrieval; fetched again",
                mover=None,
                scheduled_at=now,
            )
            recovered += 1
        except Conflict:
            continue
    return recovered
