"""The federated data proxy's registry: proxied assets, dataset policies, cache state, fetch requests.

An asset is known by (collection, item, asset) — the three parts of its proxy URL
`/proxy/{collection}/{item}/{asset}` — and remembers where it comes from upstream (a plain
http(s)/s3 URL, or a path on a `Host` of the transfer layer). The same row carries its cache state
(a file in the cache directory, written under a temporary name and renamed when whole) and its fetch
request: `fetch_status` is the single-flight key, so however many clients ask, one row is queued and
one fetcher claims it. A dataset policy per collection says how the proxy answers (cache, redirect,
presign), how long a request may be held, how long cached data stays and who may read.
"""

from __future__ import annotations

import logging
import os
import shutil
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any
from urllib.parse import quote
from weakref import WeakKeyDictionary

import sqlalchemy as sa
from sqlmodel import JSON, Column, Field, Session, SQLModel, col, select

from catalog.errors import InvalidInput, NotFound
from catalog.models import UTCDateTime, utcnow

log = logging.getLogger(__name__)


class ProxyMode(StrEnum):
    CACHE = "cache"
    """Serve from the online cache, fetching from the upstream on a miss."""
    REDIRECT = "redirect"
    """Answer 302 to the upstream href."""
    PRESIGN = "presign"
    """Answer 302 to a SigV4-presigned URL of the object in protected object storage."""


class Retention(StrEnum):
    PERMANENT = "permanent"
    ROLLING = "rolling"
    """Keep what was cached in the last `retention_days` days."""
    LRU = "lru"
    """Evict the least recently accessed files while the dataset uses more than `max_bytes`."""


class FetchStatus(StrEnum):
    NONE = "none"
    QUEUED = "queued"
    FETCHING = "fetching"
    FAILED = "failed"


def _utc(nullable: bool = True) -> Any:
    return Field(default=None, sa_column=Column(UTCDateTime(), nullable=nullable))


def _bytes(default: int | None = None) -> Any:
    # 64 bits: PostgreSQL's INTEGER stops at 2 GiB.
    return Field(default=default, sa_column=Column(sa.BigInteger(), nullable=default is None))


class ProxyDataset(SQLModel, table=True):
    """The policy of one collection (dataset) behind the proxy."""

    __tablename__ = "proxy_dataset"
    collection: str = Field(primary_key=True, max_length=200)
    mode: ProxyMode = ProxyMode.CACHE
    sync_wait_seconds: float = 2.0
    """How long a request on a cache miss is held while the fetch runs before it is answered pending."""
    retention: Retention = Retention.PERMANENT
    retention_days: float | None = None
    max_bytes: int | None = _bytes()
    public: bool = False
    """Anyone may read, without credentials."""
    readers: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    """Logins and `group:NAME` entries that may read; empty: every authenticated user."""
    presign_seconds: int = 3600


class ProxyAsset(SQLModel, table=True):
    """One proxied asset: where it comes from upstream, its cache state and its fetch request."""

    __tablename__ = "proxy_asset"
    __table_args__ = (
        # The fetch queue, read by every fetcher poll (oldest request first) and by recovery: without
        # it each poll scanned every proxied asset (42 ms at 300,000 harvested assets, 20 polls/s).
        sa.Index("ix_proxy_asset_fetch", "fetch_status", "fetch_requested_at"),
    )
    collection: str = Field(primary_key=True, max_length=200)
    item: str = Field(primary_key=True, max_length=300)
    asset: str = Field(primary_key=True, max_length=200)
    upstream_href: str
    """A URL (http, https, s3) or, with `upstream_host`, a path on that host."""
    upstream_host: str | None = None
    """Name of a `Host` of the transfer layer (credentials, protocol options); unset: a plain URL."""
    media_type: str = "application/octet-stream"
    size: int | None = _bytes()
    """Size announced at registration; the cached size wins once the file is here."""
    upstream_etag: str | None = None

    cache_file: str | None = None
    """Path of the cached copy, relative to the cache directory; unset: not cached."""
    cached_size: int | None = _bytes()
    cached_at: datetime | None = _utc()
    last_access_at: datetime | None = _utc()
    etag: str | None = None

    fetch_status: FetchStatus = FetchStatus.NONE
    fetch_requested_at: datetime | None = _utc()
    fetch_started_at: datetime | None = _utc()
    fetch_by: str | None = None
    fetch_bytes: int = _bytes(0)
    """Bytes written so far by the running fetch (for the Retry-After estimate)."""
    fetch_answered_at: datetime | None = _utc()
    """When the upstream began to answer the running fetch: its rate is measured from then on, not
    from its start (connecting to a far upstream, or waiting for a slot, says nothing of its rate)."""
    fetch_progress_at: datetime | None = _utc()
    """When `fetch_bytes` was recorded."""
    fetch_attempts: int = 0
    fetch_error: str | None = None
    fetch_count: int = 0
    """Upstream fetches ever started for this asset (single flight: one per cache miss)."""


class ProxyGroupMember(SQLModel, table=True):
    """Membership of the project's data users in proxy groups (OIDC users bring theirs in the token)."""

    __tablename__ = "proxy_group_member"
    group: str = Field(primary_key=True, max_length=100)
    login: str = Field(primary_key=True, max_length=64)


class ProxyQuota(SQLModel, table=True):
    """Usage limits of one user (`user:LOGIN`) or group (`group:NAME`) per period; unset: no limit."""

    __tablename__ = "proxy_quota"
    subject: str = Field(primary_key=True, max_length=120)
    period_seconds: int = 3600
    max_requests: int | None = None
    max_miss_requests: int | None = None
    max_bytes: int | None = _bytes()
    max_upstream_bytes: int | None = _bytes()


# --- registration and policies ------------------------------------------------------------------

_UPSTREAM_SCHEMES = ("http://", "https://", "s3://")


def _check_key(*parts: str) -> None:
    for part in parts:
        if not part or "/" in part or part in (".", ".."):
            raise InvalidInput(f"{part!r} is not a valid collection, item or asset name (no '/', not empty)")


def register_asset(
    session: Session,
    collection: str,
    item: str,
    asset: str,
    upstream_href: str,
    *,
    media_type: str = "application/octet-stream",
    upstream_host: str | None = None,
    size: int | None = None,
    etag: str | None = None,
) -> ProxyAsset:
    """Make `/proxy/{collection}/{item}/{asset}` serve `upstream_href` (re-registering updates the upstream)."""
    _check_key(collection, item, asset)
    if upstream_host is None and not upstream_href.startswith(_UPSTREAM_SCHEMES):
        raise InvalidInput(f"upstream {upstream_href!r} is no http(s) or s3 URL; name a host for other protocols")
    if upstream_host is not None:
        from catalog.models import Host

        if session.get(Host, upstream_host) is None:
            raise NotFound(f"no host {upstream_host!r}")
    return _save_asset(session, (collection, item, asset), upstream_href, upstream_host, media_type, size, etag)


def _save_asset(
    session: Session,
    key: tuple[str, str, str],
    upstream_href: str,
    upstream_host: str | None,
    media_type: str,
    size: int | None,
    etag: str | None,
) -> ProxyAsset:
    row = session.get(ProxyAsset, key)
    if row is None:
        row = ProxyAsset(collection=key[0], item=key[1], asset=key[2], upstream_href=upstream_href)
    elif row.cache_file and _stale(row, upstream_href, size, etag):
        # A new upstream (a new data file for the item), or the upstream changed (its size, checksum
        # or modification time): the cached copy is stale, the next request fetches it again.
        session.info.setdefault(STALE_CACHE_FILES, []).append(row.cache_file)
        row.cache_file, row.cached_size, row.cached_at, row.etag = None, None, None, None
    row.upstream_href, row.upstream_host, row.media_type = upstream_href, upstream_host, media_type
    row.size, row.upstream_etag = size, etag
    session.add(row)
    if session.get(ProxyDataset, key[0]) is None:
        session.add(ProxyDataset(collection=key[0]))
    session.flush()
    return row


STALE_CACHE_FILES = "pds.proxy.stale_cache_files"
"""`session.info` key: cache files (relative paths) of assets whose upstream changed in the session,
deleted once the session commits (see `delete_stale_copies_on_commit`)."""

_CACHE_DIRS: WeakKeyDictionary[sa.Engine, Path] = WeakKeyDictionary()


def delete_stale_copies_on_commit(engine: sa.Engine, cache_dir: Path) -> None:
    """From now on, every session on `engine` that changes an asset's upstream deletes the asset's
    cached copy under `cache_dir` once the change is committed, whoever made it (a STAC transaction,
    a harvest, a push to a published destination, a retrieval). A proxy checks its open copy's file
    at every request: a deleted file makes it fetch the new upstream instead of serving the old bytes."""
    _CACHE_DIRS[engine] = cache_dir


@sa.event.listens_for(Session, "after_commit")
def _delete_stale_copies(session: Session) -> None:
    stale = session.info.pop(STALE_CACHE_FILES, None)
    if not stale:
        return
    bind = session.get_bind()
    cache_dir = _CACHE_DIRS.get(bind.engine if isinstance(bind, sa.Connection) else bind)
    if cache_dir is None:
        log.warning("cached copies %s of changed assets kept: this process was not told the proxy cache", stale)
        return
    for relative in stale:
        try:
            (cache_dir / relative).unlink(missing_ok=True)
        except OSError as exc:  # the change is committed: say what was left, do not fail its writer
            log.warning("could not delete the stale cached copy %s: %s", relative, exc)


@sa.event.listens_for(Session, "after_rollback")
def _keep_copies_of_a_rolled_back_change(session: Session) -> None:
    session.info.pop(STALE_CACHE_FILES, None)  # the asset still names the upstream its copy holds


def _stale(row: ProxyAsset, upstream_href: str, size: int | None, etag: str | None) -> bool:
    """Whether a re-registration says the cached copy is no longer what the upstream holds."""
    if row.upstream_href != upstream_href:
        return True
    known_size = row.cached_size if row.cached_size is not None else row.size
    if size is not None and known_size is not None and size != known_size:
        return True
    return bool(etag and row.upstream_etag and etag != row.upstream_etag)


STORE_SCHEME = "pds-store:"
"""Upstream of an asset whose content is a data file in the Data Store: `pds-store:<store key>`."""


def register_stored_asset(
    session: Session,
    collection: str,
    item: str,
    asset: str,
    store_key: str,
    *,
    media_type: str = "application/octet-stream",
    size: int | None = None,
    etag: str | None = None,
) -> ProxyAsset:
    """Make `/proxy/{collection}/{item}/{asset}` serve a data file of the Data Store (STAC harvesting).

    Only pds itself registers these (the API's `register_asset` accepts URLs and hosts, never store keys);
    the first request copies the object from the store into the cache, as any upstream fetch does.
    """
    _check_key(collection, item, asset)
    return _save_asset(session, (collection, item, asset), STORE_SCHEME + store_key, None, media_type, size, etag)


def get_asset(session: Session, collection: str, item: str, asset: str) -> ProxyAsset | None:
    return session.get(ProxyAsset, (collection, item, asset))


def dataset_policy(session: Session, collection: str) -> ProxyDataset | None:
    return session.get(ProxyDataset, collection)


POLICY_FIELDS = frozenset(ProxyDataset.model_fields) - {"collection"}


def set_policy(session: Session, collection: str, **changes: Any) -> ProxyDataset:
    """Create or change a dataset's policy; unknown fields and impossible combinations are refused."""
    _check_key(collection)
    unknown = set(changes) - POLICY_FIELDS
    if unknown:
        raise InvalidInput(f"unknown policy field(s) {sorted(unknown)}; known: {sorted(POLICY_FIELDS)}")
    policy = session.get(ProxyDataset, collection) or ProxyDataset(collection=collection)
    data = policy.model_dump() | changes
    try:
        checked = ProxyDataset.model_validate(data)
        checked.mode, checked.retention = ProxyMode(data["mode"]), Retention(data["retention"])
    except ValueError as exc:
        raise InvalidInput(f"invalid policy for {collection}: {exc}") from None
    if checked.retention is Retention.ROLLING and not checked.retention_days:
        raise InvalidInput("rolling retention needs retention_days")
    if checked.retention is Retention.LRU and not checked.max_bytes:
        raise InvalidInput("lru retention needs max_bytes")
    if checked.sync_wait_seconds < 0:
        raise InvalidInput("sync_wait_seconds cannot be negative")
    for name in POLICY_FIELDS:
        setattr(policy, name, getattr(checked, name))
    session.add(policy)
    session.flush()
    return policy


def groups_of(session: Session, login: str) -> list[str]:
    return list(session.exec(select(ProxyGroupMember.group).where(ProxyGroupMember.login == login)))


# --- the cache directory ------------------------------------------------------------------------


def cache_relative_path(collection: str, item: str, asset: str) -> str:
    """Where an asset lives in the cache, one directory per collection and item (names quoted)."""
    return "/".join(quote(part, safe="") for part in (collection, item, asset))


def temporary_name(final: Path) -> Path:
    """A sibling that is never served: the file is renamed to `final` only when whole."""
    return final.with_name(f".{final.name}.{uuid.uuid4().hex}.part")


def etag_for(size: int, mtime_ns: int, upstream_etag: str | None) -> str:
    """A strong validator that changes whenever the cached copy is replaced."""
    if upstream_etag:
        return '"' + upstream_etag.strip('"').replace('"', "") + '"'
    return f'"{size:x}-{mtime_ns:x}"'


def record_cached(session: Session, row: ProxyAsset, cache_dir: Path, relative: str, *, now: datetime) -> ProxyAsset:
    """Mark the file at `relative` (already renamed into place) as the asset's cached copy."""
    stat = (cache_dir / relative).stat()
    row.cache_file, row.cached_size, row.cached_at = relative, stat.st_size, now
    row.etag = etag_for(stat.st_size, stat.st_mtime_ns, row.upstream_etag)
    row.fetch_status, row.fetch_error, row.fetch_by, row.fetch_attempts = FetchStatus.NONE, None, None, 0
    row.fetch_bytes = stat.st_size
    session.add(row)
    session.flush()
    return row


def inject(
    session: Session, cache_dir: Path, collection: str, item: str, asset: str, source: Path, *, now: datetime
) -> ProxyAsset:
    """Put harvested data into the cache directly (copied, then renamed into place)."""
    row = get_asset(session, collection, item, asset)
    if row is None:
        raise NotFound(f"no proxied asset {collection}/{item}/{asset}: register it first")
    relative = cache_relative_path(collection, item, asset)
    final = cache_dir / relative
    final.parent.mkdir(parents=True, exist_ok=True)
    temp = temporary_name(final)
    shutil.copyfile(source, temp)
    os.replace(temp, final)
    return record_cached(session, row, cache_dir, relative, now=now)


# --- fetch requests (single flight) -------------------------------------------------------------


def request_fetch(session: Session, collection: str, item: str, asset: str, *, now: datetime) -> FetchStatus:
    """Queue one upstream fetch unless one is queued or running; returns the state after the call.

    The conditional UPDATE is the single-flight key: of many concurrent requests exactly one moves
    the row from none/failed to queued (SQLite serialises writers, PostgreSQL locks the row).
    """
    result = session.execute(
        sa.update(ProxyAsset)
        .where(
            col(ProxyAsset.collection) == collection,
            col(ProxyAsset.item) == item,
            col(ProxyAsset.asset) == asset,
            col(ProxyAsset.fetch_status).in_([FetchStatus.NONE, FetchStatus.FAILED]),
            col(ProxyAsset.cache_file).is_(None),
        )
        .values(
            fetch_status=FetchStatus.QUEUED,
            fetch_requested_at=now,
            fetch_bytes=0,
            fetch_answered_at=None,
            fetch_progress_at=None,
            fetch_error=None,
        )
    )
    if result.rowcount:  # type: ignore[attr-defined]
        return FetchStatus.QUEUED
    row = session.exec(
        select(ProxyAsset.fetch_status).where(
            ProxyAsset.collection == collection, ProxyAsset.item == item, ProxyAsset.asset == asset
        )
    ).first()
    return FetchStatus(row) if row else FetchStatus.NONE


@dataclass(frozen=True)
class FetchJob:
    collection: str
    item: str
    asset: str

    @property
    def label(self) -> str:
        return f"{self.collection}/{self.item}/{self.asset}"


def fetches_queued(session: Session) -> bool:
    """Whether any fetch waits to be claimed: a read, so an idle fetcher's poll takes no write lock."""
    return (
        session.exec(select(ProxyAsset.item).where(ProxyAsset.fetch_status == FetchStatus.QUEUED).limit(1)).first()
        is not None
    )


def claim_fetches(session: Session, fetcher: str, limit: int, *, now: datetime) -> list[FetchJob]:
    """Claim up to `limit` queued fetches, oldest first (several fetchers never take the same one)."""
    query = (
        select(ProxyAsset)
        .where(ProxyAsset.fetch_status == FetchStatus.QUEUED)
        .order_by(col(ProxyAsset.fetch_requested_at))
        .limit(limit)
    )
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    jobs = []
    for row in session.exec(query):
        row.fetch_status, row.fetch_by, row.fetch_started_at = FetchStatus.FETCHING, fetcher, now
        row.fetch_count += 1
        session.add(row)
        jobs.append(FetchJob(row.collection, row.item, row.asset))
    session.flush()
    return jobs


def record_fetch_progress(
    session: Session, job: FetchJob, written: int, *, answered_at: datetime, at: datetime
) -> None:
    """`written` bytes of the running fetch are in the cache file at `at`; the upstream began to answer
    at `answered_at`."""
    session.execute(
        sa.update(ProxyAsset)
        .where(
            col(ProxyAsset.collection) == job.collection,
            col(ProxyAsset.item) == job.item,
            col(ProxyAsset.asset) == job.asset,
        )
        .values(fetch_bytes=written, fetch_answered_at=answered_at, fetch_progress_at=at)
    )


def record_fetch_attempt_failed(session: Session, job: FetchJob, reason: str, *, final: bool) -> None:
    """An attempt failed: the fetcher retries by policy; after the last one the request is Failed
    (never cached as data) and the next client request queues a new one."""
    row = session.get(ProxyAsset, (job.collection, job.item, job.asset))
    if row is None:
        return
    if not final:
        row.fetch_attempts += 1
    row.fetch_error = reason
    if final:
        row.fetch_status, row.fetch_by = FetchStatus.FAILED, None
    session.add(row)


def recover_fetches(session: Session, fetcher: str) -> int:
    """Fetches a previous run of `fetcher` left running go back to the queue (their partial files are
    temporary names, never served)."""
    result = session.execute(
        sa.update(ProxyAsset)
        .where(col(ProxyAsset.fetch_status) == FetchStatus.FETCHING, col(ProxyAsset.fetch_by) == fetcher)
        .values(
            fetch_status=FetchStatus.QUEUED,
            fetch_by=None,
            fetch_bytes=0,
            fetch_answered_at=None,
            fetch_progress_at=None,
        )
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


def forget_cached(session: Session, row: ProxyAsset, cache_dir: Path) -> None:
    """The cached copy is gone (evicted or missing): remove the file and the record."""
    if row.cache_file:
        (cache_dir / row.cache_file).unlink(missing_ok=True)
    row.cache_file, row.cached_size, row.cached_at, row.etag = None, None, None, None
    session.add(row)


# --- retention ----------------------------------------------------------------------------------

#: A file read this recently is never evicted, so a client between its HEAD and its range reads is
#: not sent back to pending.
ACCESS_GRACE = timedelta(minutes=5)


def apply_retention(session: Session, cache_dir: Path, *, now: datetime) -> list[str]:
    """Evict what each dataset's retention policy no longer keeps; returns the evicted assets."""
    evicted: list[str] = []
    for policy in session.exec(select(ProxyDataset).where(ProxyDataset.retention != Retention.PERMANENT)):
        cached = list(
            session.exec(
                select(ProxyAsset).where(
                    ProxyAsset.collection == policy.collection, col(ProxyAsset.cache_file).is_not(None)
                )
            )
        )
        victims: list[ProxyAsset] = []
        if policy.retention is Retention.ROLLING and policy.retention_days:
            oldest = now - timedelta(days=policy.retention_days)
            victims = [a for a in cached if a.cached_at is not None and a.cached_at < oldest]
        elif policy.retention is Retention.LRU and policy.max_bytes is not None:
            used = sum(a.cached_size or 0 for a in cached)
            by_access = sorted(cached, key=lambda a: a.last_access_at or a.cached_at or now)
            for candidate in by_access:
                if used <= policy.max_bytes:
                    break
                victims.append(candidate)
                used -= candidate.cached_size or 0
        for victim in victims:
            if victim.last_access_at is not None and now - victim.last_access_at < ACCESS_GRACE:
                continue
            forget_cached(session, victim, cache_dir)
            evicted.append(f"{victim.collection}/{victim.item}/{victim.asset}")
    session.flush()
    return evicted


def touch(session: Session, collection: str, item: str, asset: str, *, now: datetime) -> None:
    """Record an access (for least-recently-accessed eviction)."""
    session.execute(
        sa.update(ProxyAsset)
        .where(
            col(ProxyAsset.collection) == collection,
            col(ProxyAsset.item) == item,
            col(ProxyAsset.asset) == asset,
        )
        .values(last_access_at=now)
    )


def quotas_for(session: Session, subjects: list[str]) -> list[ProxyQuota]:
    if not subjects:
        return []
    return list(session.exec(select(ProxyQuota).where(col(ProxyQuota.subject).in_(subjects))))


def set_quota(session: Session, subject: str, **limits: Any) -> ProxyQuota:
    if not subject.startswith(("user:", "group:")):
        raise InvalidInput(f"quota subject {subject!r} must be user:LOGIN or group:NAME")
    quota = session.get(ProxyQuota, subject) or ProxyQuota(subject=subject)
    for name, value in limits.items():
        if name not in ProxyQuota.model_fields or name == "subject":
            raise InvalidInput(f"unknown quota field {name!r}")
        setattr(quota, name, value)
    if quota.period_seconds <= 0:
        raise InvalidInput("period_seconds must be positive")
    session.add(quota)
    session.flush()
    return quota


def add_group_member(session: Session, group: str, login: str) -> None:
    if session.get(ProxyGroupMember, (group, login)) is None:
        session.add(ProxyGroupMember(group=group, login=login))
        session.flush()


__all__ = ["utcnow"]
