"""Data transfers in the database: status changes with history, claiming, outcomes, recovery.

The database is the queue. Every change is a compare-and-set on the current status
(`UPDATE … WHERE id = ? AND status = ?`), so two processes can never both move the same transfer,
on SQLite (one writer at a time) as on PostgreSQL (where claiming also uses `FOR UPDATE SKIP LOCKED`
so movers on several machines do not wait for each other).
"""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Session, col, select

from catalog import attempts, destination_history, reports
from catalog.continental import claimable_by, live_proxy_hosts, proxy_hosts
from catalog.errors import Conflict, NotFound, TransferError
from catalog.models import (
    DataFile,
    DataTransfer,
    DataTransferPublic,
    Destination,
    DestinationHost,
    DestinationState,
    HistoryPublic,
    Host,
    HostKind,
    Mover,
    TransferHistory,
    UTCDateTime,
    utcnow,
)
from catalog.scheduling import QUEUE_ORDER, HostRetry, after_failure, first_host, in_window, window_open
from catalog.statuses import READY, TransferStatus, allowed


def get_transfer(session: Session, transfer_id: int) -> DataTransfer:
    transfer = session.get(DataTransfer, transfer_id, populate_existing=True)
    if transfer is None:
        raise NotFound(f"no data transfer {transfer_id}")
    return transfer


def record_history(
    session: Session,
    transfer_id: int,
    action: str,
    source: TransferStatus | None,
    target: TransferStatus,
    *,
    by: str,
    reason: str = "",
    at: datetime | None = None,
) -> None:
    session.add(
        TransferHistory(
            transfer_id=transfer_id,
            action=action,
            from_status=source.value if source else None,
            to_status=target.value,
            at=at or utcnow(),
            by=by,
            reason=reason,
        )
    )


def _history_row(
    transfer_id: int,
    action: str,
    source: TransferStatus | None,
    target: TransferStatus,
    *,
    by: str,
    at: datetime,
    reason: str = "",
) -> dict[str, Any]:
    """A history row as plain values, for `_insert_history` (many rows in one statement)."""
    return {
        "transfer_id": transfer_id,
        "action": action,
        "from_status": source.value if source else None,
        "to_status": target.value,
        "at": at,
        "by": by,
        "reason": reason,
    }


def _insert_history(connection: sa.Connection, rows: list[dict[str, Any]]) -> None:
    if rows:
        table: sa.Table = TransferHistory.__table__  # type: ignore[attr-defined]
        connection.execute(sa.insert(table), rows)


def _transfer_table() -> sa.Table:
    table: sa.Table = DataTransfer.__table__  # type: ignore[attr-defined]
    return table


def _compare_and_set(
    session: Session, transfer_id: int, source: TransferStatus, values: dict[str, Any], attempt: int | None = None
) -> bool:
    table = _transfer_table()
    fence = table.c.attempt == attempt if attempt is not None else sa.true()
    result = session.connection().execute(
        sa.update(table).where(table.c.id == transfer_id, table.c.status == source.value, fence).values(**values)
    )
    return bool(result.rowcount == 1)


def change_status(
    session: Session,
    transfer_id: int,
    action: str,
    target: TransferStatus,
    *,
    by: str,
    reason: str = "",
    attempt: int | None = None,
    **fields: Any,
) -> DataTransfer:
    """Move a transfer along an allowed edge, set `fields`, and write the history row; with `attempt`,
    only while that is still the transfer's current attempt (a mover's fencing token).

    Raises Conflict when the edge is not in the status table or another process changed the
    transfer first.
    """
    transfer = get_transfer(session, transfer_id)
    source = TransferStatus(transfer.status)
    if not allowed(action, source, target):
        raise Conflict(f"transfer {transfer_id} is {source.value}: '{action}' cannot make it {target.value}")
    if attempt is not None and transfer.attempt != attempt:
        raise Conflict(f"transfer {transfer_id} is at attempt {transfer.attempt}: attempt {attempt} is over")
    now = utcnow()
    values = {"status": target.value, "updated_at": now, **fields}
    if not _compare_and_set(session, transfer_id, source, values, attempt):
        raise Conflict(f"transfer {transfer_id} changed while '{action}' was applied; try again")
    record_history(session, transfer_id, action, source, target, by=by, reason=reason, at=now)
    session.flush()
    return get_transfer(session, transfer_id)


# --- Claiming ----------------------------------------------------------------------------------


def _dispatchable_destinations() -> Any:
    """Active destinations with at least one dissemination host (the others are portal buckets)."""
    return (
        select(Destination.name)
        .join(DestinationHost, col(DestinationHost.destination_name) == col(Destination.name))
        .where(col(Destination.active).is_(True), DestinationHost.kind == HostKind.DISSEMINATION)
    )


def active_hosts(session: Session, destination: str) -> list[Host]:
    """The destination's active dissemination hosts in failover order (primary first)."""
    links = session.exec(
        select(DestinationHost)
        .where(DestinationHost.destination_name == destination, DestinationHost.kind == HostKind.DISSEMINATION)
        .order_by(col(DestinationHost.rank), col(DestinationHost.host_name))
    )
    hosts = [session.get(Host, link.host_name) for link in links]
    return [h for h in hosts if h is not None and h.active]


def destination_state(session: Session, name: str) -> DestinationState:
    state = session.get(DestinationState, name, populate_existing=True)
    if state is None:
        # Two movers recording outcomes of one destination at once would both create its row, and
        # the second commit — with its transfers' Done — would fail: create it if nobody did.
        table: sa.Table = DestinationState.__table__  # type: ignore[attr-defined]
        insert = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
        session.connection().execute(insert(table).values(name=name, failed_passes=0).on_conflict_do_nothing())
        state = session.get(DestinationState, name, populate_existing=True)
        assert state is not None
    return state


def claim(
    session: Session,
    mover: str,
    limit: int,
    *,
    max_bytes: int | None = None,
    now: datetime | None = None,
    proxy_host: str | None = None,
    stale_after: timedelta | None = None,
) -> list[DataTransfer]:
    """The transfers `claim_ids` claims, loaded."""
    ids = claim_ids(session, mover, limit, max_bytes=max_bytes, now=now, proxy_host=proxy_host, stale_after=stale_after)
    return _transfers(session, ids)


def claim_ids(
    session: Session,
    mover: str,
    limit: int,
    *,
    max_bytes: int | None = None,
    now: datetime | None = None,
    proxy_host: str | None = None,
    stale_after: timedelta | None = None,
) -> list[int]:
    """Take up to `limit` ready transfers in queue order for `mover`, within each destination's cap
    and each host's `max_connections`, inside the destinations' active time windows.

    Each claimed transfer is assigned the host of this attempt (a retry's or failover's host, else
    the destination's first host). With `max_bytes`, stop once the claimed files add up to that many
    bytes (always at least one), so a claim is about the same amount of work whether the files are
    small or large. Call inside a transaction and commit right after: the claimed rows are
    Transferring from then on.

    A continental mover names its `proxy_host` and takes only the transfers it pre-replicated; a main
    mover leaves those alone while a mover of their proxy host beat within `stale_after` (see
    `catalog.continental`).
    """
    now = now or utcnow()
    live = live_proxy_hosts(session, stale_after=stale_after, now=now) if stale_after is not None else set()
    window = limit * 4 + 16
    found = _queue_heads(session, now, window)
    if found is None:
        return []
    heads, heads_params = found
    # Plain rows, not ORM objects, joined with their files' sizes: a claim reads up to four times
    # `limit` candidates, and building an object per row was a third of the mover's CPU on small files.
    candidates: list[Any] = list(  # rows with the attributes named below
        session.execute(
            sa.select(
                *(
                    col(c)
                    for c in (
                        DataTransfer.id,
                        DataTransfer.status,
                        DataTransfer.destination_name,
                        DataTransfer.next_host,
                        DataTransfer.pass_hosts_tried,
                        DataTransfer.host_attempts,
                        DataTransfer.start_count,
                        DataTransfer.attempt,
                        DataFile.size,
                    )
                )
            )
            .outerjoin(DataFile, col(DataFile.id) == DataTransfer.data_file_id)
            .where(
                col(DataTransfer.id).in_(heads),  # ready and due: the heads are (and read from here)
                claimable_by(proxy_host, live),
            )
            .order_by(*QUEUE_ORDER)
            .limit(window)
            .with_for_update(skip_locked=True, of=DataTransfer),
            heads_params,
        )
    )
    if not candidates:
        return []
    names = sorted({t.destination_name for t in candidates})
    # Locking the destination rows (in name order, so movers never deadlock) makes the counts of
    # running transfers below exact across movers on PostgreSQL; SQLite has one writer anyway.
    destinations = {
        d.name: d
        for d in session.exec(
            select(Destination).where(col(Destination.name).in_(names)).order_by(Destination.name).with_for_update()
        )
        if in_window(d, now)
    }
    hosts = {name: active_hosts(session, name) for name in destinations}
    _lock_capped_hosts(session, hosts)
    states = {name: session.get(DestinationState, name) for name in destinations}
    running, connections = _transfers_running(session)
    host_caps = {h.name: int(h.options.get("max_connections", 0) or 0) for hs in hosts.values() for h in hs}
    proxied = proxy_hosts(session, list(destinations))
    claimed: list[int] = []
    claimed_bytes = 0
    connection, take, history, opened = session.connection(), _claim_statement(), [], []
    for transfer in candidates:
        if len(claimed) >= limit or (max_bytes is not None and claimed and claimed_bytes >= max_bytes):
            break
        destination = destinations.get(transfer.destination_name)
        if destination is None or running[destination.name] >= destination.max_parallel_transfers:
            continue
        names_in_order = [h.name for h in hosts[destination.name]]
        host = transfer.next_host if transfer.next_host in names_in_order else None
        host = host or first_host(names_in_order, destination, states[destination.name], now)
        if host is not None and host_caps.get(host) and connections[host] >= host_caps[host]:
            continue  # the host has all the connections it accepts; a later claim takes it
        assert transfer.id is not None
        new_start = transfer.pass_hosts_tried == 0 and transfer.host_attempts == 0
        values = {
            "b_id": transfer.id,
            "b_source": transfer.status,
            "b_mover": mover,
            "b_host": host,
            "b_start_count": transfer.start_count + (1 if new_start else 0),
            "b_now": now,
            "b_proxy": proxy_host,
            "b_attempt": transfer.attempt + 1,
        }
        if connection.execute(take, values).rowcount != 1:
            continue  # another mover took it first
        reason = f"to host {host}" if host else ""
        if proxy_host is not None:
            reason += f" from the store of proxy host {proxy_host}"
        elif destination.name in proxied:
            reason += f" from the Data Store: takeover from proxy host {proxied[destination.name]} " + (
                "(its continental mover is silent)"
                if proxied[destination.name] not in live
                else "(its pre-replication of the file failed)"
            )
        history.append(
            _history_row(
                transfer.id,
                "claim",
                TransferStatus(transfer.status),
                TransferStatus.TRANSFERRING,
                by=mover,
                at=now,
                reason=reason.strip(),
            )
        )
        opened.append(
            {
                "transfer_id": transfer.id,
                "number": transfer.attempt + 1,
                "mover": mover,
                "host": host,
                "started_at": now,
            }
        )
        running[destination.name] += 1
        if host:
            connections[host] += 1
        claimed.append(transfer.id)
        claimed_bytes += transfer.size or 0
    _insert_history(connection, history)
    attempts.start(connection, opened)
    return claimed


#: The first key of the PostgreSQL advisory locks that serialise claims per host (the second is the
#: hash of the host's name); any constant that no other user of the database takes.
_HOST_LOCK_SPACE = 0x7064_7301


# The columns `_queue_heads` reads, as plain table clauses: aliases of the mapped tables build a
# proxy of every column each time (milliseconds a claim).
_QUEUE = sa.table(
    "data_transfer",
    *(sa.column(c) for c in ("id", "destination_name", "status", "priority", "queued_at")),
    sa.column("scheduled_at", UTCDateTime()),
)
_DESTINATIONS = sa.table("destination", sa.column("name"))


def _transfers_running(session: Session) -> tuple[Counter[str], Counter[str]]:
    """Transfers under way: how many per destination, and how many per host (its connections)."""
    rows = session.exec(
        select(DataTransfer.destination_name, DataTransfer.host_name).where(
            DataTransfer.status == TransferStatus.TRANSFERRING.value
        )
    ).all()
    return Counter(d for d, _ in rows), Counter(h for _, h in rows if h)


def _queue_heads(session: Session, now: datetime, window: int) -> tuple[sa.CompoundSelect[Any], dict[str, Any]] | None:
    """The ids a claim may consider: the first ready transfers, in queue order, of each destination
    that can take one now (active, with a dissemination host, inside its time window, under its cap
    of transfers at once, a host of it under its `max_connections`), about as many of each as it
    could take; None when no destination can take any.

    Taken destination by destination, through `ix_data_transfer_destination_queue`: a destination's
    backlog, however long, costs a claim no more than the transfers it could take, and never hides
    the transfers of the destinations queued behind it (with the first few thousand ready transfers
    of the whole queue, a destination at its cap with a longer backlog held up every other). Counted
    without locks: the claim counts again under its locks before it takes anything."""
    running, connections = _transfers_running(session)
    # Plain columns, not objects: read at every poll, for every destination.
    room = {
        name: most - running[name]
        for name, most, start, end in session.exec(
            select(
                Destination.name, Destination.max_parallel_transfers, Destination.window_start, Destination.window_end
            ).where(col(Destination.name).in_(_dispatchable_destinations()))
        )
        if running[name] < most and window_open(start, end, now)
    }
    # A destination whose hosts all have every connection they accept can take nothing either.
    free: dict[str, int] = {}
    links = session.exec(
        select(DestinationHost.destination_name, Host.name, Host.options)
        .join(Host, col(Host.name) == col(DestinationHost.host_name))
        .where(col(DestinationHost.kind) == HostKind.DISSEMINATION, col(Host.active).is_(True))
    )
    for name, host, options in links:
        if name in room:
            cap = int((options or {}).get("max_connections", 0) or 0)
            free[name] = max(free.get(name, 0), cap - connections[host] if cap else room[name])
    room = {name: min(left, free.get(name, 0)) for name, left in room.items() if free.get(name, 0) > 0}
    if not room:
        return None
    # One range per destination and status, LIMITed to what the destination could take and a margin
    # (transfers another mover takes first, or bound to a host at its cap); destinations with about
    # the same room share one statement arm.
    arms: dict[int, list[str]] = {}
    for name, left in room.items():
        arms.setdefault(min(window, 1 << (left + 8).bit_length()), []).append(name)
    params: dict[str, Any] = {f"names_{take}": sorted(names) for take, names in arms.items()}
    return _heads_statement(tuple(sorted(arms))), params | {"heads_now": now}


@functools.lru_cache(maxsize=128)
def _heads_statement(takes: tuple[int, ...]) -> sa.CompoundSelect[Any]:
    """The statement of `_queue_heads` for arms of these sizes, built once (a claim is made several
    times a second; building it took longer than running it)."""
    heads = []
    for take in takes:
        for status in sorted(s.value for s in READY):  # one range per status keeps each in queue order
            ready = _QUEUE.alias(f"ready_{status.lower()}_{take}")
            first = (
                sa.select(ready.c.id)
                .where(ready.c.destination_name == _DESTINATIONS.c.name, ready.c.status == status)
                .where(ready.c.scheduled_at <= sa.bindparam("heads_now", type_=UTCDateTime()))
                .order_by(ready.c.priority, ready.c.queued_at, ready.c.id)
                .limit(take)
                .correlate(_DESTINATIONS)
                # Rows another mover's claim holds are passed over here (PostgreSQL), not after the
                # LIMIT: the next ones come in their place.
                .with_for_update(skip_locked=True)
            )
            of_each = _QUEUE.alias(f"head_{status.lower()}_{take}")
            heads.append(
                sa.select(of_each.c.id)
                .select_from(_DESTINATIONS)
                .join(of_each, of_each.c.id.in_(first))
                .where(_DESTINATIONS.c.name.in_(sa.bindparam(f"names_{take}", expanding=True)))
            )
    return sa.union_all(*heads)


def _lock_capped_hosts(session: Session, hosts: dict[str, list[Host]]) -> None:
    """On PostgreSQL, hold a lock on each host with `max_connections` until this claim commits.

    The destination locks make the per-destination counts exact, but one host can serve several
    destinations: two movers claiming for two of them would each count the host's running transfers
    before the other committed, and together exceed its cap. With the host locked (in name order, so
    movers never deadlock) the second claim counts after the first committed. Transaction-scoped
    advisory locks, not row locks, so editing a host never waits for a mover. SQLite has one writer.
    """
    if session.get_bind().dialect.name != "postgresql":
        return
    capped = sorted({h.name for hs in hosts.values() for h in hs if int(h.options.get("max_connections", 0) or 0)})
    for name in capped:
        session.connection().execute(
            sa.text("SELECT pg_advisory_xact_lock(:space, hashtext(:name))"), {"space": _HOST_LOCK_SPACE, "name": name}
        )


def _claim_statement() -> sa.Update:
    """A ready transfer → Transferring for a mover, as a compare-and-set (one compiled statement)."""
    table = _transfer_table()
    return (
        sa.update(table)
        .where(table.c.id == sa.bindparam("b_id"), table.c.status == sa.bindparam("b_source"))
        .values(
            status=TransferStatus.TRANSFERRING.value,
            mover=sa.bindparam("b_mover"),
            proxy_host=sa.bindparam("b_proxy"),
            host_name=sa.bindparam("b_host"),
            start_count=sa.bindparam("b_start_count"),
            started_at=sa.bindparam("b_now"),
            finished_at=None,
            bytes_sent=0,
            updated_at=sa.bindparam("b_now"),
            attempt=sa.bindparam("b_attempt"),
        )
    )


def expire_due(session: Session, by: str, now: datetime | None = None) -> list[int]:
    """Fail queued transfers whose lifetime ended: "not transferred before expiration"."""
    now = now or utcnow()
    waiting = [TransferStatus.QUEUED, TransferStatus.REQUEUED, TransferStatus.STANDBY, TransferStatus.PRESET]
    ids = list(
        session.exec(
            select(DataTransfer.id).where(
                col(DataTransfer.status).in_([s.value for s in waiting]),
                col(DataTransfer.expires_at).is_not(None),
                col(DataTransfer.expires_at) < now,
            )
        )
    )
    expired = []
    for transfer_id in ids:
        assert transfer_id is not None
        try:
            change_status(
                session,
                transfer_id,
                "expire",
                TransferStatus.FAILED,
                by=by,
                reason="not transferred before expiration",
                error="not transferred before expiration",
            )
            expired.append(transfer_id)
        except Conflict:
            continue
    return expired


def set_flow_run(session: Session, transfer_ids: list[int], flow_run_id: str) -> None:
    """Link transfers to the Prefect flow run dispatching them (for the monitor's links)."""
    table = _transfer_table()
    session.connection().execute(sa.update(table).where(table.c.id.in_(transfer_ids)).values(flow_run_id=flow_run_id))
    attempts.link_flow_run(session, transfer_ids, flow_run_id)


# --- Outcomes ----------------------------------------------------------------------------------


def record_progress(session: Session, transfer_id: int, bytes_sent: int, attempt: int | None = None) -> bool:
    """The bytes an attempt has sent so far; False when the attempt is no longer the transfer's
    current one, Transferring (stopped, or taken over): its writer should stop."""
    table = _transfer_table()
    fence = table.c.attempt == attempt if attempt is not None else sa.true()
    result = session.connection().execute(
        sa.update(table)
        .where(table.c.id == transfer_id, table.c.status == TransferStatus.TRANSFERRING.value, fence)
        .values(bytes_sent=bytes_sent, updated_at=utcnow())
    )
    return bool(result.rowcount == 1)


@dataclass(frozen=True)
class Success:
    """A file that reached its site whole: what `record_successes` records for its transfer."""

    transfer_id: int
    host: str
    bytes_sent: int
    sent_md5: str | None = None
    compression: str | None = None
    note: str = ""
    attempt: int | None = None
    """The attempt that delivered it: Done is recorded only while that is still the current one."""

    def reason(self) -> str:
        how = f" ({self.compression})" if self.compression else ""
        return f"{self.bytes_sent} bytes{how} to host {self.host}" + (f" ({self.note})" if self.note else "")


@dataclass
class Recorded:
    """What `record_successes` did: the transfers now Done (in the order given) and, by id, the
    error of each one it left alone because it was no longer Transferring (an operator stopped it)."""

    done: list[DataTransfer]
    refused: dict[int, Conflict | NotFound]


def _complete_statement() -> sa.Update:
    """Transferring → Done for one transfer, as a compare-and-set; one compiled statement that a
    batch executes once per file (building a statement per file costs more than executing it)."""
    table = _transfer_table()
    return (
        sa.update(table)
        .where(
            table.c.id == sa.bindparam("b_id"),
            table.c.status == TransferStatus.TRANSFERRING.value,
            sa.or_(sa.bindparam("b_attempt", type_=sa.Integer).is_(None), table.c.attempt == sa.bindparam("b_attempt")),
        )
        .values(
            status=TransferStatus.DONE.value,
            updated_at=sa.bindparam("b_now"),
            finished_at=sa.bindparam("b_now"),
            host_name=sa.bindparam("b_host"),
            bytes_sent=sa.bindparam("b_bytes"),
            sent_md5=sa.bindparam("b_md5"),
            compression=sa.bindparam("b_compression"),
            error=None,
            next_host=None,
            host_attempts=0,
            pass_hosts_tried=0,
        )
    )


def record_successes(session: Session, successes: Sequence[Success], *, by: str) -> Recorded:
    """Done for each file that reached its site, with its history row; each destination remembers
    the host that worked (next_and_stay) and that its hosts work.

    A whole batch of small files costs a few statements, not a round of ORM work per file, so a
    mover spends its time on the network. Each transfer still changes by compare-and-set: one that
    another process changed first is left alone and reported in `refused`.
    """
    now = utcnow()
    ids = [s.transfer_id for s in successes]
    statuses: dict[int | None, str] = {}
    for chunk in _chunks(ids):
        query = select(DataTransfer.id, DataTransfer.status).where(col(DataTransfer.id).in_(chunk))
        statuses.update((tid, status) for tid, status in session.exec(query))
    connection, complete = session.connection(), _complete_statement()
    refused: dict[int, Conflict | NotFound] = {}
    recorded: list[Success] = []
    for success in successes:
        tid, status = success.transfer_id, statuses.get(success.transfer_id)
        if status is None:
            refused[tid] = NotFound(f"no data transfer {tid}")
            continue
        if not allowed("complete", TransferStatus(status), TransferStatus.DONE):
            refused[tid] = Conflict(f"transfer {tid} is {status}: 'complete' cannot make it Done")
            continue
        values = {
            "b_id": tid,
            "b_now": now,
            "b_host": success.host,
            "b_bytes": success.bytes_sent,
            "b_md5": success.sent_md5,
            "b_compression": success.compression,
            "b_attempt": success.attempt,
        }
        if connection.execute(complete, values).rowcount != 1:
            refused[tid] = Conflict(f"transfer {tid} changed while 'complete' was applied; try again")
            continue
        recorded.append(success)
    _insert_history(
        connection,
        [
            _history_row(
                s.transfer_id,
                "complete",
                TransferStatus.TRANSFERRING,
                TransferStatus.DONE,
                by=by,
                at=now,
                reason=s.reason(),
            )
            for s in recorded
        ],
    )
    done = _transfers(session, [s.transfer_id for s in recorded])
    numbered = []
    for transfer in done:
        assert transfer.id is not None
        if transfer.attempt is None or transfer.bytes_sent is None:
            attempts.end(connection, transfer.id, transfer.attempt, "Done", bytes_sent=transfer.bytes_sent, at=now)
        else:
            numbered.append((transfer.id, transfer.attempt, transfer.bytes_sent))
    attempts.end_many(connection, numbered, "Done", at=now)
    reports.add_uph_lines(session, done)  # in this transaction: a Done transfer always has its line
    _remember_working_hosts(session, [(t.destination_name, s.host) for t, s in zip(done, recorded, strict=True)], now)
    return Recorded(done=done, refused=refused)


def _remember_working_hosts(session: Session, outcomes: list[tuple[str, str]], now: datetime) -> None:
    """After successes (destination, host) in order: each destination's failed passes start again
    from zero and it stays on a fallback host that worked (next_and_stay), or goes back to its primary."""
    by_destination: dict[str, list[str]] = {}
    for destination, host in outcomes:
        by_destination.setdefault(destination, []).append(host)
    for destination, used in by_destination.items():
        state = destination_state(session, destination)
        hosts = [h.name for h in active_hosts(session, destination)]
        state.failed_passes = 0
        for host in used:  # the last success decides; the time is that of the first switch to it
            if hosts and host != hosts[0]:
                if state.current_host != host:
                    state.current_host, state.current_host_since = host, now
            elif hosts:
                state.current_host, state.current_host_since = None, None
        session.add(state)
    session.flush()


def _chunks(ids: Sequence[int], size: int = 500) -> list[Sequence[int]]:
    """`ids` in pieces small enough for one `IN (...)` on any database."""
    return [ids[i : i + size] for i in range(0, len(ids), size)]


def _transfers(session: Session, ids: Sequence[int]) -> list[DataTransfer]:
    """The transfers `ids` as the database holds them now, in that order."""
    rows: dict[int | None, DataTransfer] = {}
    for chunk in _chunks(ids):
        query = select(DataTransfer).where(col(DataTransfer.id).in_(chunk)).execution_options(populate_existing=True)
        rows.update((t.id, t) for t in session.exec(query))
    return [rows[i] for i in ids]


def record_success(
    session: Session,
    transfer_id: int,
    *,
    host: str,
    bytes_sent: int,
    by: str,
    sent_md5: str | None = None,
    compression: str | None = None,
    note: str = "",
) -> DataTransfer:
    """Done for one transfer (`record_successes` for a batch); Conflict or NotFound when it cannot be."""
    success = Success(transfer_id, host, bytes_sent, sent_md5, compression, note)
    recorded = record_successes(session, [success], by=by)
    if transfer_id in recorded.refused:
        raise recorded.refused[transfer_id]
    return recorded.done[0]


def record_failure(
    session: Session,
    transfer_id: int,
    error: TransferError,
    *,
    host: str | None,
    by: str,
    attempt: int | None = None,
) -> DataTransfer:
    """Apply the scheduling decision for a failed attempt: retry on the host, fail over to the next,
    requeue, fail or stop (`scheduling.after_failure`). After `max_failed_passes` passes in a row in
    which every host failed, the destination is put on hold. With `attempt`, Conflict unless that is
    still the transfer's current attempt."""
    transfer = get_transfer(session, transfer_id)
    destination = session.get(Destination, transfer.destination_name)
    if destination is None:
        raise NotFound(f"no destination {transfer.destination_name}")
    now = utcnow()
    hosts = active_hosts(session, destination.name)
    used = next((h for h in hosts if h.name == host), None)
    retry = HostRetry.from_options(used.options if used else {})
    decision = after_failure(transfer, destination, error, now, hosts=[h.name for h in hosts], host=host, retry=retry)
    fields: dict[str, Any] = {"error": decision.reason, "host_name": host, **decision.fields}
    changed = change_status(
        session, transfer_id, decision.action, decision.status, by=by, reason=decision.reason, attempt=attempt, **fields
    )
    attempts.end(
        session.connection(),
        transfer_id,
        changed.attempt,
        decision.status.value,
        error=str(error),
        bytes_sent=changed.bytes_sent,
        at=now,
    )
    reports.add_err_line(session, changed, str(error))
    if decision.pass_failed:
        state = destination_state(session, destination.name)
        state.failed_passes += 1
        if (
            destination.max_failed_passes
            and state.failed_passes >= destination.max_failed_passes
            and destination.active
        ):
            destination.active = False
            state.hold_reason = (
                f"put on hold by {by}: {state.failed_passes} passes over every host failed in a row "
                f"(last: {decision.reason})"
            )
            session.add(destination)
            destination_history.record(
                session,
                destination.name,
                "hold",
                by=by,
                reason=f"{state.failed_passes} passes over every host failed in a row (last: {decision.reason})",
            )
        session.add(state)
        session.flush()
    return changed


# --- Movers and recovery -----------------------------------------------------------------------


def heartbeat(
    session: Session,
    mover: str,
    *,
    machine: str = "",
    pid: int = 0,
    starting: bool = False,
    proxy_host: str | None = None,
) -> None:
    """Record that `mover` is alive; on `starting`, also where it runs and the proxy host it serves."""
    row = session.get(Mover, mover)
    now = utcnow()
    if row is None:
        row = Mover(name=mover, started_at=now, heartbeat_at=now, machine=machine, pid=pid, proxy_host=proxy_host)
    else:
        row.heartbeat_at = now
        if starting:
            row.started_at, row.machine, row.pid, row.proxy_host = now, machine, pid, proxy_host
    session.add(row)
    session.flush()


def recover(
    session: Session,
    mover: str,
    *,
    stale_after: timedelta,
    now: datetime | None = None,
    only_stale: bool = False,
    flow_runs: set[str] | None = None,
) -> list[int]:
    """Turn Transferring rows of `mover` (restarting) or of silent movers into Interrupted, then Queued.

    A mover calls this on start, and while it runs with `only_stale` (its own transfers are left
    alone) so the work of a mover that died is taken over without waiting for its restart.
    Transfers of movers that still beat are left alone, so several movers can start and stop
    independently. `flow_runs` collects the Prefect flow runs that were dispatching them (the next
    dispatch overwrites the link), so the caller can end them.
    """
    now = now or utcnow()
    stale = select(Mover.name).where(Mover.heartbeat_at < now - stale_after, Mover.name != mover)
    own = "" if only_stale else mover  # no transfer is claimed under an empty name
    ids = list(
        session.exec(
            select(DataTransfer.id).where(
                DataTransfer.status == TransferStatus.TRANSFERRING.value,
                sa.or_(
                    col(DataTransfer.mover) == own,
                    col(DataTransfer.mover).is_(None),
                    col(DataTransfer.mover).in_(stale),
                ),
            )
        )
    )
    recovered = []
    for transfer_id in ids:
        assert transfer_id is not None
        interrupted = get_transfer(session, transfer_id)
        if flow_runs is not None and interrupted.flow_run_id:
            flow_runs.add(interrupted.flow_run_id)
        if _queue_again(
            session, interrupted, by=mover, reason=f"mover {interrupted.mover} stopped during the transfer", now=now
        ):
            recovered.append(transfer_id)
    return recovered


def requeue_unsent(session: Session, mover: str, transfer_ids: list[int], reason: str) -> list[int]:
    """Queue again those of `transfer_ids` that `mover` claimed and still holds as Transferring.

    The mover calls this when a dispatch ended (it waited for all its sends, so any of its claim
    still Transferring was never sent: it died before sending it), and for the claims no dispatch
    took when it stops. Without this they would hold their destination's places until the mover
    restarts.
    """
    rows = session.exec(
        select(DataTransfer).where(
            col(DataTransfer.id).in_(transfer_ids),
            DataTransfer.status == TransferStatus.TRANSFERRING.value,
            DataTransfer.mover == mover,
        )
    ).all()
    return [row.id for row in rows if row.id is not None and _queue_again(session, row, by=mover, reason=reason)]


def _queue_again(
    session: Session, interrupted: DataTransfer, *, by: str, reason: str, now: datetime | None = None
) -> bool:
    """Interrupted, its attempt ended with `reason`, then Queued; False if it changed meanwhile."""
    now = now or utcnow()
    assert interrupted.id is not None
    transfer_id = interrupted.id
    try:
        change_status(session, transfer_id, "interrupt", TransferStatus.INTERRUPTED, by=by, reason=reason)
        # The interrupted attempt failed: its ERR line, from the row as the attempt left it.
        reports.add_err_line(session, interrupted, reason)
        attempts.end(
            session.connection(),
            transfer_id,
            interrupted.attempt,
            TransferStatus.INTERRUPTED.value,
            error=reason,
            bytes_sent=interrupted.bytes_sent,
            at=now,
        )
        change_status(
            session,
            transfer_id,
            "recover",
            TransferStatus.QUEUED,
            by=by,
            reason="queued again after the interruption",
            mover=None,
            scheduled_at=now,
        )
    except Conflict:
        return False
    return True


# --- Reading -----------------------------------------------------------------------------------


def transfer_public(session: Session, transfer_id: int, prefect_ui: str | None = None) -> DataTransferPublic:
    transfer = get_transfer(session, transfer_id)
    data_file = session.get(DataFile, transfer.data_file_id)
    history = session.exec(
        select(TransferHistory).where(TransferHistory.transfer_id == transfer_id).order_by(col(TransferHistory.id))
    )
    assert transfer.id is not None
    return DataTransferPublic(
        id=transfer.id,
        data_file_id=transfer.data_file_id,
        destination=transfer.destination_name,
        target=transfer.target,
        status=transfer.status,
        priority=transfer.priority,
        queued_at=transfer.queued_at,
        scheduled_at=transfer.scheduled_at,
        expires_at=transfer.expires_at,
        start_count=transfer.start_count,
        requeue_count=transfer.requeue_count,
        host=transfer.host_name,
        mover=transfer.mover,
        proxy_host=transfer.proxy_host,
        flow_run_id=transfer.flow_run_id,
        bytes_sent=transfer.bytes_sent,
        compression=transfer.compression,
        sent_md5=transfer.sent_md5,
        size=data_file.size if data_file else None,
        started_at=transfer.started_at,
        finished_at=transfer.finished_at,
        error=transfer.error,
        history=[
            HistoryPublic(
                action=h.action, from_status=h.from_status, to_status=h.to_status, at=h.at, by=h.by, reason=h.reason
            )
            for h in history
        ],
        attempts=attempts.of_transfer(session, transfer_id, prefect_ui),
    )
