"""Acquisition: listing rules of acquisition hosts, the sources of registered data files, and the
registration of what a discovery pass found.

An acquisition host is a `Host` of kind `acquisition` attached to a destination. Each of its
`ListingRule`s says which directory to list (with `$date{format,delta}` templates), which entries
to keep (name regex, wildcard, size, age, depth) and how to register them. A registered file is a
`DataFile` with no `store_key` yet (nothing in the Data Store) plus a `SourceFile` row saying where
its content is; its transfer waits in Preset until the retrieval flow fetches it. With
`no_retrieval` the source is marked `on_demand`: the retrieval flow leaves it until a read through
the Data Portal asks for it (`catalog.on_demand`), then fetches it like any other.

Discovery dedupes on destination + target (+ the file's modification time when the rule says so),
in `Discovered`; a file listed again with another size or time is registered again when the rule
has `requeue_on_update`, and the older registration is stopped if it is still waiting (Preset).
"""

from __future__ import annotations

import contextlib
import posixpath
import re
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl

import sqlalchemy as sa
from sqlmodel import Column, Field, Session, SQLModel, col, select

from catalog.bulk import BulkInsert, StagedRows
from catalog.errors import Conflict, InvalidInput, NotFound
from catalog.models import (
    BYTES,
    DataFile,
    DataTransfer,
    Destination,
    DestinationHost,
    Host,
    HostKind,
    TransferHistory,
    UTCDateTime,
    utcnow,
)
from catalog.paths import clean_target, inside
from catalog.selection import Listed as Listed  # re-exported: what registration takes
from catalog.selection import Selection
from catalog.statuses import TransferStatus
from catalog.submission import AliasPlan, alias_target
from catalog.transfers import change_status


def _time(*, nullable: bool = True) -> Any:
    return Field(default=None, sa_column=Column(UTCDateTime(), nullable=nullable))


# --- Tables ------------------------------------------------------------------------------------


class ListingRuleBase(SQLModel):
    directory: str = ""
    """Directory to list, relative to the host's directory; `$date{%Y%m%d,-1d}` expands to
    yesterday's date (delta units s, m, h, d; no delta: today, UTC)."""
    pattern: str | None = None
    """Regular expression the entry's name must match (searched, so anchor it if needed)."""
    wildcard: str | None = None
    """Shell wildcard on the name (`*.grib`)."""
    min_size: int | None = Field(default=None, ge=0, sa_type=BYTES)
    max_size: int | None = Field(default=None, ge=0, sa_type=BYTES)
    min_age_seconds: int | None = Field(default=None, ge=0)
    """Only files not modified for this long (a file still being written is left for the next pass)."""
    max_age_seconds: int | None = Field(default=None, ge=0)
    """Only files modified at most this long ago."""
    max_depth: int = Field(default=0, ge=0, le=32)
    """Sub-directory levels to descend into (0: the directory only)."""
    target_prefix: str = ""
    """Prepended to the path relative to the listed directory to make the target."""
    dedupe_by_time: bool = False
    """Files with the same target but another modification time are different files."""
    requeue_on_update: bool = True
    """Register the file again when its size or modification time changed."""
    no_retrieval: bool = False
    """Register the metadata only; the content is fetched on first use."""
    requeue_on_failure: bool = False
    """A failed retrieval goes back to Preset (until the destination's max_starts) instead of Failed."""
    standby: bool = False
    """Fetched files wait in StandBy instead of being queued."""
    priority: int = Field(default=99, ge=0, le=99)
    lifetime_seconds: int | None = Field(default=None, ge=1)
    listing_format: str = Field(default="", max_length=8)
    """How the source lists its files: empty for the protocol's own listing; on an HTTP(S) host
    `html` (the directory's index page), `json` or `csv` (a file list; `directory` names the
    document), `stac` (a static STAC catalog; `directory` names its catalog.json) or `stac-api` (a STAC
    API search; `directory` is the search endpoint with its parameters, e.g.
    `stac/search?collections=s2&datetime=$date{%Y-%m-%d}T00:00:00Z/..&bbox=5,45,10,48`); `mqtt` subscribes to the topic
    in `directory` on the broker of the host's `mqtt_url` option, each message naming a file."""
    active: bool = True


class ListingRule(ListingRuleBase, table=True):
    """One source line of an acquisition host: what to list and what to register."""

    __tablename__ = "listing_rule"
    id: int | None = Field(default=None, primary_key=True)
    host_name: str = Field(foreign_key="host.name", index=True, ondelete="CASCADE")
    destination_name: str = Field(foreign_key="destination.name", index=True, ondelete="CASCADE")


class ListingRuleCreate(ListingRuleBase):
    destination: str


class AcquisitionState(SQLModel, table=True):
    """When an acquisition host is discovered: its schedule and the last pass."""

    __tablename__ = "acquisition_state"
    host_name: str = Field(foreign_key="host.name", primary_key=True, ondelete="CASCADE")
    interval_seconds: int = 600
    """Seconds between discovery passes (0: only when run by hand)."""
    next_run_at: datetime | None = _time()
    """When the next pass is due; "run now" sets it to now."""
    last_started_at: datetime | None = _time()
    last_finished_at: datetime | None = _time()
    last_registered: int = 0
    last_error: str | None = None
    pass_holder: str | None = None
    """Who runs a pass of the host now (machine, process and pass), or None: see `take_pass`."""
    pass_lease_until: datetime | None = _time()
    """The holder's lease ends then unless renewed: a pass whose process died frees its host then."""


class SourceFile(SQLModel, table=True):
    """Where the content of a registered data file comes from (discovery or `pds register`)."""

    __tablename__ = "source_file"
    data_file_id: int = Field(foreign_key="data_file.id", primary_key=True, ondelete="CASCADE")
    host_name: str = Field(foreign_key="host.name", index=True)
    path: str
    """The path on the host's filesystem, as its listing gave it."""
    size: int | None = Field(default=None, sa_type=BYTES)
    modified: datetime | None = _time()
    rule_id: int | None = None
    group_name: str | None = Field(default=None, index=True)
    on_demand: bool = False
    """Registered without retrieval: fetched on first use only (`catalog.on_demand`)."""
    standby: bool = False
    requeue_on_failure: bool = False
    registered_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))
    retrieved_at: datetime | None = _time()
    requested_at: datetime | None = _time()
    """When a read through the portal first asked for an on-demand file: the retriever claims it from then."""


class Discovered(SQLModel, table=True):
    """The dedupe key of discovery: one row per destination + target (+ time) ever registered."""

    __tablename__ = "discovered"
    destination_name: str = Field(foreign_key="destination.name", primary_key=True, ondelete="CASCADE")
    target: str = Field(primary_key=True)
    version: str = Field(default="", primary_key=True)
    """The modification time for rules that dedupe by time, else empty."""
    data_file_id: int
    size: int | None = Field(default=None, sa_type=BYTES)
    modified: datetime | None = _time()


#: "" is the protocol's own listing; the others are documents on an HTTP(S) host.
LISTING_FORMATS = ("", "html", "json", "csv", "stac", "stac-api", "mqtt")


#: Search parameters a `stac-api` rule may give after `?`; any other is refused (a typo would widen it).
SEARCH_PARAMETERS = ("collections", "ids", "bbox", "datetime", "filter", "filter-lang", "limit", "max_items", "method")


def search_request(document: str) -> tuple[str, dict[str, Any]]:
    """`search?collections=a,b&datetime=…` → (the endpoint's path, pystac-client's search arguments)."""
    endpoint, _, query = document.partition("?")
    arguments: dict[str, Any] = {}
    for name, value in parse_qsl(query, keep_blank_values=False, strict_parsing=False):
        if name not in SEARCH_PARAMETERS:
            raise ValueError(f"unknown STAC search parameter {name!r}; known: {', '.join(SEARCH_PARAMETERS)}")
        try:
            if name in ("collections", "ids"):
                arguments[name] = [v for v in value.split(",") if v]
            elif name in ("limit", "max_items"):
                arguments[name] = int(value)
            elif name == "bbox":
                arguments[name] = [float(v) for v in value.split(",")]
                if len(arguments[name]) not in (4, 6):
                    raise ValueError("4 or 6 numbers")
            else:
                arguments[name.replace("-", "_")] = value
        except ValueError as exc:
            raise ValueError(f"bad STAC search parameter {name}={value!r}: {exc}") from None
    arguments["method"] = str(arguments.get("method", "POST")).upper()
    if arguments["method"] not in ("GET", "POST"):
        raise ValueError(f"a STAC search is a GET or a POST, not {arguments['method']}")
    return endpoint, arguments


# --- Date templates ----------------------------------------------------------------------------

_DATE = re.compile(r"\$date(?:\{([^}]*)\})?")
_DELTA = re.compile(r"^\s*([+-]?\d+)\s*([smhd]?)\s*$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "": 86400}


def render_dates(template: str, now: datetime) -> str:
    """Expand `$date`, `$date{FORMAT}` and `$date{FORMAT,DELTA}` (DELTA like `-1d`, `+6h`)."""

    def expand(match: re.Match[str]) -> str:
        spec = match.group(1) or "%Y%m%d"
        fmt, _, delta = spec.partition(",")
        when = now
        if delta:
            parsed = _DELTA.match(delta)
            if parsed is None:
                raise InvalidInput(f"bad date delta {delta!r} in {template!r}; write it like -1d, +6h, -30m")
            when = now + timedelta(seconds=int(parsed.group(1)) * _UNITS[parsed.group(2)])
        return when.strftime(fmt or "%Y%m%d")

    return _DATE.sub(expand, template)


# --- Configuration -----------------------------------------------------------------------------


def check_rule(rule: ListingRuleBase) -> None:
    if rule.pattern:
        try:
            re.compile(rule.pattern)
        except re.error as exc:
            raise InvalidInput(f"the name pattern {rule.pattern!r} is not a regular expression: {exc}") from None
    if rule.listing_format != "mqtt":
        render_dates(rule.directory, utcnow())
    if rule.min_size is not None and rule.max_size is not None and rule.min_size > rule.max_size:
        raise InvalidInput("min_size is larger than max_size")
    if rule.target_prefix:
        clean_target(rule.target_prefix)
    if rule.listing_format not in LISTING_FORMATS:
        raise InvalidInput(
            f"unknown listing format {rule.listing_format!r}; use one of {', '.join(f for f in LISTING_FORMATS if f)}"
        )
    if rule.listing_format == "stac-api":
        try:
            search_request(rule.directory)
        except ValueError as exc:
            raise InvalidInput(f"listing rule of a STAC API search: {exc}") from None


def acquisition_host(session: Session, name: str) -> Host:
    host = session.get(Host, name)
    if host is None:
        raise NotFound(f"no host {name!r}")
    if host.kind not in (HostKind.ACQUISITION, HostKind.SOURCE):
        raise InvalidInput(f"host {name} is a {host.kind.value} host; listing rules need an acquisition host")
    return host


def add_rule(session: Session, host_name: str, data: ListingRuleCreate) -> ListingRule:
    """Add a listing rule; the host is attached to the destination as an acquisition host."""
    acquisition_host(session, host_name)
    if session.get(Destination, data.destination) is None:
        raise NotFound(f"no destination {data.destination!r}")
    check_rule(data)
    rule = ListingRule(
        host_name=host_name, destination_name=data.destination, **data.model_dump(exclude={"destination"})
    )
    session.add(rule)
    link = session.get(DestinationHost, (data.destination, host_name, HostKind.ACQUISITION))
    if link is None:
        session.add(
            DestinationHost(destination_name=data.destination, host_name=host_name, kind=HostKind.ACQUISITION, rank=0)
        )
    acquisition_state(session, host_name)
    session.flush()
    return rule


def list_rules(session: Session, host_name: str, *, active_only: bool = False) -> list[ListingRule]:
    query = select(ListingRule).where(ListingRule.host_name == host_name).order_by(col(ListingRule.id))
    if active_only:
        query = query.where(col(ListingRule.active).is_(True))
    return list(session.exec(query))


def delete_rule(session: Session, host_name: str, rule_id: int) -> None:
    rule = session.get(ListingRule, rule_id)
    if rule is None or rule.host_name != host_name:
        raise NotFound(f"no listing rule {rule_id} on host {host_name}")
    session.delete(rule)
    session.flush()


def acquisition_state(session: Session, host_name: str) -> AcquisitionState:
    state = session.get(AcquisitionState, host_name, populate_existing=True)
    if state is None:
        state = AcquisitionState(host_name=host_name, next_run_at=utcnow())
        session.add(state)
        session.flush()
    return state


def set_schedule(session: Session, host_name: str, interval_seconds: int) -> AcquisitionState:
    if interval_seconds < 0:
        raise InvalidInput("the discovery interval must not be negative")
    acquisition_host(session, host_name)
    state = acquisition_state(session, host_name)
    state.interval_seconds = interval_seconds
    state.next_run_at = utcnow() if interval_seconds else None
    session.add(state)
    session.flush()
    return state


def request_run(session: Session, host_name: str) -> AcquisitionState:
    """Run now: the acquisition scheduler starts a discovery pass at its next look."""
    acquisition_host(session, host_name)
    state = acquisition_state(session, host_name)
    state.next_run_at = utcnow()
    session.add(state)
    session.flush()
    return state


def due_hosts(session: Session, now: datetime | None = None) -> list[str]:
    """Active hosts whose pass is due and that no pass holds now (see `take_pass`): a host being
    discovered elsewhere is left to that pass, not retried at every look."""
    now = now or utcnow()
    rows = session.exec(
        select(AcquisitionState.host_name)
        .join(Host, col(Host.name) == col(AcquisitionState.host_name))
        .where(col(Host.active).is_(True), col(AcquisitionState.next_run_at).is_not(None))
        .where(col(AcquisitionState.next_run_at) <= now)
        .where(sa.or_(col(AcquisitionState.pass_holder).is_(None), col(AcquisitionState.pass_lease_until) < now))
    )
    return list(rows)


def pass_started(session: Session, host_name: str) -> None:
    state = acquisition_state(session, host_name)
    now = utcnow()
    state.last_started_at = now
    state.next_run_at = now + timedelta(seconds=state.interval_seconds) if state.interval_seconds else None
    session.add(state)
    session.flush()


def pass_finished(session: Session, host_name: str, registered: int, error: str | None) -> None:
    state = acquisition_state(session, host_name)
    state.last_finished_at, state.last_registered, state.last_error = utcnow(), registered, error
    session.add(state)
    session.flush()


# --- One pass per host at a time ---------------------------------------------------------------
#
# A pass holds its host by a lease in its `acquisition_state` row, taken by a compare-and-set (held
# by nobody, or the lease ran out) and renewed while the pass runs. The row is the lock, so it holds
# across processes and machines on PostgreSQL and SQLite alike: on PostgreSQL the second of two
# concurrent takes waits for the first to commit, then finds the row held; SQLite has one writer.
# A lease rather than a lock held on a connection: a pass needs no connection open while it lists,
# and a pass whose process died frees its host when its lease runs out.


def take_pass(session: Session, host_name: str, holder: str, lease_seconds: float) -> str | None:
    """Hold `host_name` for a discovery pass of `holder`; None when taken, else who holds it, in words."""
    acquisition_state(session, host_name)  # the row to hold
    state, now = _table(AcquisitionState), utcnow()
    taken = session.connection().execute(
        sa.update(state)
        .where(
            state.c.host_name == host_name,
            sa.or_(state.c.pass_holder.is_(None), state.c.pass_lease_until < now),
        )
        .values(pass_holder=holder, pass_lease_until=now + timedelta(seconds=lease_seconds))
    )
    if taken.rowcount == 1:
        return None
    row = (
        session.connection()
        .execute(sa.select(state.c.pass_holder, state.c.pass_lease_until).where(state.c.host_name == host_name))
        .one()
    )
    left = (row.pass_lease_until - now).total_seconds() if row.pass_lease_until else 0.0
    return f"{row.pass_holder}, its lease good for {left:.0f} s more"


def keep_pass(session: Session, host_name: str, holder: str, lease_seconds: float) -> bool:
    """Renew `holder`'s lease on `host_name`; False if it no longer holds it (its lease ran out and
    another pass took the host)."""
    state = _table(AcquisitionState)
    kept = session.connection().execute(
        sa.update(state)
        .where(state.c.host_name == host_name, state.c.pass_holder == holder)
        .values(pass_lease_until=utcnow() + timedelta(seconds=lease_seconds))
    )
    return bool(kept.rowcount == 1)


def release_pass(session: Session, host_name: str, holder: str) -> None:
    """Let `host_name` go at the end of `holder`'s pass (nothing if another holds it now)."""
    state = _table(AcquisitionState)
    session.connection().execute(
        sa.update(state)
        .where(state.c.host_name == host_name, state.c.pass_holder == holder)
        .values(pass_holder=None, pass_lease_until=None)
    )


# --- Selecting entries -------------------------------------------------------------------------


def entry_filter(rule: ListingRuleBase, now: datetime) -> Callable[[str, int | None, datetime | None], bool]:
    """The rule's filters as one function of (name, size, modified) (see `catalog.selection`)."""
    return Selection.of(rule, now).filter()


def keeps(rule: ListingRuleBase, name: str, size: int | None, modified: datetime | None, now: datetime) -> bool:
    """Whether a listed file passes the rule's filters (a file of unknown size or age passes those)."""
    return entry_filter(rule, now)(name, size, modified)


def target_for(rule: ListingRuleBase, relative: str) -> str:
    return Selection(target_prefix=rule.target_prefix).target(relative)


# --- Registering -------------------------------------------------------------------------------


def _table(model: type[SQLModel]) -> sa.Table:
    table: sa.Table = model.__table__  # type: ignore[attr-defined]
    return table


def _new_ids(connection: sa.Connection, table: sa.Table, count: int) -> list[int]:
    """Primary keys for `count` rows about to be inserted into `table`.

    Taking the ids first lets every table of a registration go in with one plain multi-row insert:
    an `INSERT ... RETURNING` whose ids must come back in the order of the rows is run one row at
    a time on SQLite, which made registering 100,000 files take seconds per thousand.
    """
    if connection.dialect.name == "postgresql":
        sequence = sa.text("SELECT nextval(pg_get_serial_sequence(:table, 'id')) FROM generate_series(1, :count)")
        return list(connection.execute(sequence, {"table": table.name, "count": count}).scalars())
    # SQLite: the transaction took the write lock at BEGIN IMMEDIATE (catalog.database), so no one
    # else inserts before it commits, and an id column without AUTOINCREMENT is max(id) + 1 anyway.
    last = connection.execute(sa.select(sa.func.max(table.c.id))).scalar() or 0
    return list(range(last + 1, last + count + 1))


def _version(rule: ListingRule, modified: datetime | None) -> str:
    return modified.isoformat() if rule.dedupe_by_time and modified else ""


def register_listed(
    session: Session, rule: ListingRule, entries: Sequence[Listed], *, by: str, touched: list[int] | None = None
) -> int:
    """Register the entries of one page of a listing that are new (or updated); return how many.

    One query finds what was seen before, then the new data files, transfers, sources, history and
    dedupe keys go in with one `executemany` per table (`catalog.bulk`), so a pass over 100,000
    entries costs a few hundred statements, not a few hundred thousand.

    Entries with metadata (a STAC listing's item) record it on their data file; an entry seen before
    whose metadata changed (the provider edited its item) gets the new metadata on the same data
    file. `touched` receives the ids of the data files registered or whose metadata changed (what
    the STAC inventory publishes again).
    """
    assert rule.id is not None
    if not entries:
        return 0
    by_time = rule.dedupe_by_time
    unique = {(e.target, e.modified.isoformat() if by_time and e.modified else ""): e for e in entries}
    connection = session.connection()
    keys = BulkInsert(
        connection, _table(Discovered), ("destination_name", "target", "version", "data_file_id", "size", "modified")
    )
    seen = _seen(connection, rule.destination_name, {t for t, _ in unique})
    fresh: list[tuple[str, Listed]] = []
    updated: list[tuple[str, Listed]] = []
    requeue_on_update = rule.requeue_on_update
    # In target order: the dedupe keys and the transfers' target index take the new rows in key order
    # (a listing's own order may be a hash order, which scatters them over the indexes' pages).
    for (target, version), entry in sorted(unique.items()):
        before = seen.get((target, version))
        if before is None:
            fresh.append((version, entry))
        # Compared as the driver holds them (SQLite: text), as they were stored.
        elif requeue_on_update and (before[1] != entry.size or before[2] != keys.convert("modified", entry.modified)):
            updated.append((version, entry))
    todo = fresh + updated
    registered = {id(e) for _, e in todo}
    changed = _update_meta(
        session,
        [(seen[(t, v)][0], e) for (t, v), e in unique.items() if e.meta is not None and id(e) not in registered],
    )
    if touched is not None:
        touched.extend(changed)
    if not todo:
        return 0
    ids = _register(
        session,
        rule.destination_name,
        rule.host_name,
        [e for _, e in todo],
        by=by,
        reason=f"discovered by rule {rule.id} on host {rule.host_name}",
        rule=rule,
        dedupe_versions=[version for version, _ in fresh] + [None] * len(updated),  # new keys for fresh ones
    )
    if updated:
        discovered, key = _table(Discovered), _table(Discovered).c
        connection.execute(
            sa.update(discovered)
            .where(
                key.destination_name == rule.destination_name,
                key.target == sa.bindparam("b_target"),
                key.version == sa.bindparam("b_version"),
            )
            .values(
                data_file_id=sa.bindparam("b_id"), size=sa.bindparam("b_size"), modified=sa.bindparam("b_modified")
            ),
            [
                {
                    "b_target": e.target,
                    "b_version": version,
                    "b_id": data_file_id,
                    "b_size": e.size,
                    "b_modified": e.modified,
                }
                for (version, e), data_file_id in zip(updated, ids[len(fresh) :], strict=True)
            ],
        )
        replaced = {seen[(e.target, version)][0]: e.target for version, e in updated}
        _stop_waiting(session, replaced, by=by)
    _update_meta(session, [(i, e) for (_, e), i in zip(todo, ids, strict=True) if e.meta is not None])
    if touched is not None:
        touched.extend(ids)
    return len(todo)


def _update_meta(session: Session, pairs: Sequence[tuple[int, Listed]]) -> list[int]:
    """Record each listed entry's metadata on its data file where it differs; the ids changed."""
    if not pairs:
        return []
    current = dict(
        session.exec(select(DataFile.id, DataFile.meta).where(col(DataFile.id).in_([i for i, _ in pairs]))).all()
    )
    changed = [(i, e.meta) for i, e in pairs if i in current and current[i] != e.meta]
    if changed:
        table = _table(DataFile)
        session.connection().execute(
            sa.update(table).where(table.c.id == sa.bindparam("b_id")).values(meta=sa.bindparam("b_meta")),
            [{"b_id": i, "b_meta": meta} for i, meta in changed],
        )
        session.expire_all()
    return [i for i, _ in changed]


def _seen(connection: sa.Connection, destination: str, targets: set[str]) -> dict[tuple[str, str], tuple[Any, ...]]:
    """(target, version) → (data file id, size, modified as the driver gives it) of the dedupe keys
    of `destination` among `targets`: one query per page, read straight from the driver (the
    second pass over a large listing reads a key for every entry)."""
    mark = "?" if connection.dialect.paramstyle == "qmark" else "%s"
    marks = ", ".join([mark] * len(targets))  # only placeholders go into the text; values are parameters
    sql = f"SELECT target, version, data_file_id, size, modified FROM discovered WHERE destination_name = {mark} AND target IN ({marks})"  # noqa: E501, S608
    rows = connection.exec_driver_sql(sql, (destination, *targets)).all()
    return {(row[0], row[1]): (row[2], row[3], row[4]) for row in rows}


def _stop_waiting(session: Session, replaced: dict[int, str], *, by: str) -> None:
    """Stop the transfers of older registrations (data file id → target) still waiting to be
    fetched: their source changed, so what they would fetch is the newer file, registered anew."""
    waiting = session.exec(
        select(DataTransfer.id, DataTransfer.data_file_id).where(
            col(DataTransfer.data_file_id).in_(replaced), DataTransfer.status == TransferStatus.PRESET.value
        )
    ).all()
    for transfer_id, data_file_id in waiting:
        assert transfer_id is not None
        reason = f"{replaced[data_file_id]} changed at the source and was registered again"
        with contextlib.suppress(Conflict):  # a retriever took it meanwhile: it is no longer waiting
            change_status(session, transfer_id, "stop", TransferStatus.STOPPED, by=by, reason=reason)


def _register(
    session: Session,
    destination: str,
    host: str,
    entries: Sequence[Listed],
    *,
    by: str,
    reason: str,
    rule: ListingRuleBase | None = None,
    group: str | None = None,
    priority: int = 99,
    dedupe_versions: Sequence[str | None] | None = None,
) -> list[int]:
    """Insert a data file, a Preset transfer (and one for each alias of the destination that applies
    to its target, as a push does), their history rows and its source for each entry.

    `dedupe_versions`: for each entry, the version of the discovery dedupe key to record for it
    (see `Discovered`), or None for none."""
    rule = rule or ListingRuleBase(priority=priority)
    now = utcnow()
    dest = session.get(Destination, destination)
    lifetime = rule.lifetime_seconds or (dest.lifetime_seconds if dest else None)
    expires = now + timedelta(seconds=lifetime) if lifetime else None
    connection = session.connection()
    ids = _new_ids(connection, _table(DataFile), len(entries))
    # (data file id, destination, target, priority) of each transfer: the destination's, then aliases'.
    planned = [(i, destination, e.target, rule.priority) for e, i in zip(entries, ids, strict=True)]
    plan = AliasPlan(session)
    for e, i in zip(entries, ids, strict=True):
        for alias in plan.aliases(destination, e.target):
            priority = alias.priority if alias.priority is not None else rule.priority
            planned.append((i, alias.alias_name, alias_target(alias, e.target), priority))
    transfer_ids = _new_ids(connection, _table(DataTransfer), len(planned))  # one call: SQLite's come from max(id)

    # Each entry is staged once; its data file, transfer, history row and source are copied from there.
    staged = StagedRows(connection, _REGISTERING)
    versions = dedupe_versions or [None] * len(entries)
    modified = staged.converter("modified")
    staged.load(
        ("data_file_id", "transfer_id", "name", "path", "target", "size", "modified", "version"),
        (
            (i, tid, posixpath.basename(e.target), e.path, e.target, e.size, modified(e.modified), v)
            for e, i, tid, v in zip(entries, ids, transfer_ids[: len(entries)], versions, strict=True)
        ),
    )
    row, preset = _REGISTERING.c, TransferStatus.PRESET.value
    staged.copy_into(
        _table(DataFile), {"id": row.data_file_id, "name": row.name, "size": row.size, "meta": {}, "created_at": now}
    )
    staged.copy_into(
        _table(DataTransfer),
        {
            "id": row.transfer_id,
            "data_file_id": row.data_file_id,
            "destination_name": destination,
            "target": row.target,
            "status": preset,
            "priority": rule.priority,
            "queued_at": now,
            "scheduled_at": now,
            "expires_at": expires,
            "updated_at": now,
            "awaiting_request": rule.no_retrieval,
        },
    )
    staged.copy_into(
        _table(TransferHistory),
        {
            "transfer_id": row.transfer_id,
            "action": "create",
            "from_status": None,
            "to_status": preset,
            "at": now,
            "by": by,
            "reason": reason,
        },
    )
    staged.copy_into(
        _table(SourceFile),
        {
            "data_file_id": row.data_file_id,
            "host_name": host,
            "path": row.path,
            "size": row.size,
            "modified": row.modified,
            "rule_id": getattr(rule, "id", None),
            "group_name": group,
            "on_demand": rule.no_retrieval,
            "standby": rule.standby,
            "requeue_on_failure": rule.requeue_on_failure,
            "registered_at": now,
        },
    )
    if dedupe_versions is not None:
        staged.copy_into(
            _table(Discovered),
            {
                "destination_name": destination,
                "target": row.target,
                "version": row.version,
                "data_file_id": row.data_file_id,
                "size": row.size,
                "modified": row.modified,
            },
            where=row.version.is_not(None),
        )
    if len(planned) > len(entries):  # transfers to aliases: fewer, and each with its own values
        transfers = BulkInsert(
            connection,
            _table(DataTransfer),
            ("id", "data_file_id", "destination_name", "target", "status", "priority")
            + ("queued_at", "scheduled_at", "expires_at", "updated_at", "awaiting_request"),
        )
        at, until = transfers.convert("queued_at", now), transfers.convert("expires_at", expires)
        to_aliases = list(zip(planned[len(entries) :], transfer_ids[len(entries) :], strict=True))
        transfers.run(
            (tid, i, to, target, preset, priority, at, at, until, at, rule.no_retrieval)
            for (i, to, target, priority), tid in to_aliases
        )
        _history_of_created(connection, [tid for _, tid in to_aliases], now, by=by, reason=reason)
    return ids


#: Where `_register` stages the entries of a page: one row per entry, its ids already taken.
_REGISTERING = sa.Table(
    "pds_registering",
    sa.MetaData(),
    sa.Column("data_file_id", sa.Integer),
    sa.Column("transfer_id", sa.Integer),
    sa.Column("name", sa.String),
    sa.Column("path", sa.String),
    sa.Column("target", sa.String),
    sa.Column("size", BYTES),
    sa.Column("modified", UTCDateTime()),
    sa.Column("version", sa.String),
    prefixes=["TEMPORARY"],
)


def _history_of_created(
    connection: sa.Connection, transfer_ids: list[int], now: datetime, *, by: str, reason: str
) -> None:
    """The `create` history row of each transfer just inserted. Ids taken in one run (as they are
    on SQLite, whose writer holds the lock) are written by one INSERT … SELECT over that id range:
    no value per row goes through Python, half the cost of sending the rows."""
    history = BulkInsert(
        connection, _table(TransferHistory), ("transfer_id", "action", "from_status", "to_status", "at", "by", "reason")
    )
    at, preset = history.convert("at", now), TransferStatus.PRESET.value
    first, last = (transfer_ids[0], transfer_ids[-1]) if transfer_ids else (0, -1)
    if last - first + 1 != len(transfer_ids) or transfer_ids != sorted(transfer_ids):
        history.run((tid, "create", None, preset, at, by, reason) for tid in transfer_ids)
        return
    transfers, rows = _table(DataTransfer), _table(TransferHistory)
    connection.execute(
        rows.insert().from_select(
            ["transfer_id", "action", "from_status", "to_status", "at", "by", "reason"],
            sa.select(
                transfers.c.id,
                sa.literal("create"),
                sa.null(),
                sa.literal(preset),
                sa.literal(now, UTCDateTime()),
                sa.literal(by),
                sa.literal(reason),
            ).where(transfers.c.id.between(first, last)),
        )
    )


# --- Registration by group (`pds register`) ----------------------------------------------------


@dataclass
class RegisteredFile:
    path: str
    target: str | None = None
    size: int | None = None


def register_files(
    session: Session,
    *,
    destination: str,
    host: str,
    source_root: str,
    group: str,
    files: Iterable[RegisteredFile],
    priority: int = 99,
    standby: bool = False,
    requeue_on_failure: bool = False,
    by: str,
) -> list[int]:
    """Register files for the movers to fetch from `host` (asynchronous push); return data file ids.

    Every path must lie inside `source_root`, the host's directory as its filesystem names it
    (`catalog.paths.inside`): a registration never reads what the host's login can reach elsewhere."""
    if session.get(Destination, destination) is None:
        raise NotFound(f"no destination {destination!r}")
    if session.get(Host, host) is None:
        raise NotFound(f"no host {host!r}")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}", group):
        raise InvalidInput(f"group {group!r}: use letters, digits, '_', '.', ':' and '-' (at most 128)")
    if not 0 <= priority <= 99:
        raise InvalidInput(f"priority must be from 0 (first) to 99 (last), not {priority}")
    entries: list[Listed] = []
    for f in files:
        if not f.path:
            raise InvalidInput("a registered file needs the path of its source")
        path = inside(source_root, f.path, what=f"source path on host {host}")
        entries.append(Listed(path, clean_target(f.target or posixpath.basename(path)), f.size, None))
    if not entries:
        raise InvalidInput("no file to register")
    rule = ListingRuleBase(priority=priority, standby=standby, requeue_on_failure=requeue_on_failure)
    return _register(
        session, destination, host, entries, by=by, reason=f"registered in group {group}", rule=rule, group=group
    )


def group_progress(session: Session, group: str, *, within: Collection[str] | None = None) -> dict[str, Any]:
    """How far the retrieval of a group is: files retrieved, waiting (Preset or Fetching), failed;
    `within`: counting only transfers to these destinations (None: all)."""
    query = (
        select(SourceFile.data_file_id, DataFile.store_key, DataTransfer.status)
        .join(DataFile, col(DataFile.id) == col(SourceFile.data_file_id))
        .join(DataTransfer, col(DataTransfer.data_file_id) == col(SourceFile.data_file_id))
        .where(SourceFile.group_name == group)
    )
    if within is not None:
        query = query.where(col(DataTransfer.destination_name).in_(sorted(within)))
    rows = session.exec(query).all()
    if not rows:
        raise NotFound(f"no group {group!r}")
    pending = {TransferStatus.PRESET.value, TransferStatus.FETCHING.value}
    files: dict[int, str] = {}
    for data_file_id, store_key, status in rows:
        if store_key is not None:
            files[data_file_id] = "retrieved"
        elif status in pending:
            files[data_file_id] = "waiting"
        else:
            files.setdefault(data_file_id, "failed")
    counts = {k: sum(1 for v in files.values() if v == k) for k in ("retrieved", "waiting", "failed")}
    return {"group": group, "total": len(files), **counts, "complete": counts["waiting"] == 0}
