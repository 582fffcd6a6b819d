"""The federated data proxy: `GET|HEAD /proxy/{collection}/{item}/{asset}`.

Each request is authorised first (OIDC or project user, or a public collection), counted against the
reader's QoS, then answered by the dataset's policy and the asset's state:

- redirect / presign: 302 to the upstream, or to a SigV4-presigned object-store URL;
- cached: 200/206/304/412/416 from the cache file, with exact lengths, ETag and Last-Modified;
- not cached: one fetch request is recorded (single flight; the proxy fetcher flow does the work), the
  request is held up to the dataset's `sync_wait_seconds`, then answered pending — 202 (or 503, a
  deployment setting) with Retry-After and a JSON body. An asset once answered 200 is never pending
  again in this process: its range reads wait for a re-fetch instead.

The pending answer also names, in `Location` and `status_url`, the asset's status resource — the same
URL with `?status` — for clients that poll a status endpoint rather than retry the asset: a JSON
document (state, bytes fetched, size, estimated seconds left, error) that never starts a fetch.

It is a plain ASGI handler, so a range read of a cached file costs no database round trip, no file
re-open (descriptors stay open, read with pread) and no framework response machinery.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import anyio.to_thread
import sqlalchemy as sa
from sqlmodel import Session

from api.http_ranges import (
    Unsatisfiable,
    http_date,
    not_modified,
    parse_range,
    precondition_failed,
    range_applies,
)
from api.presign import presigned_url
from api.proxy_auth import ProxyAuthenticator, Reader, Unauthorized, may_read
from api.qos import QosCounters, QuotaExceeded, Usage
from api.recent import Recent
from catalog.database import read_scope, session_scope
from catalog.models import Host
from catalog.proxy import (
    FetchStatus,
    ProxyAsset,
    ProxyDataset,
    ProxyMode,
    ProxyQuota,
    dataset_policy,
    get_asset,
    quotas_for,
    request_fetch,
    touch,
)
from catalog.settings import Settings
from catalog.shared_state import SharedCounters

Send = Callable[[dict[str, Any]], Awaitable[None]]
Receive = Callable[[], Awaitable[dict[str, Any]]]
POLICY_SECONDS = 5.0  # how long a dataset policy or a quota is trusted before it is read again
TOUCH_SECONDS = 60.0  # last access is written at most this often per asset (LRU needs minutes, not µs)
INLINE_BYTES = 1024 * 1024  # ranges up to this size are read on the event loop (page cache: µs)
STREAM_CHUNK = 4 * 1024 * 1024
WAIT_STEP = 0.02
FAILED_COOLDOWN = 10.0  # a failed fetch is reported for this long before a new request fetches again


@dataclass
class CachedFile:
    """What serving a cached asset needs, kept in memory while the file is there."""

    path: Path
    size: int
    etag: str
    modified: datetime
    media_type: str
    fd: int
    identity: tuple[int, int, int]
    """The file's inode, size and modification time (ns): a file replaced at the path differs in one
    of them, even if the file system gives the new one the inode number of an old one."""
    users: int = 0
    """Responses reading the descriptor now: it is closed only when none is (closing it under a
    running response would let the number be reused by a socket)."""
    retired: bool = False

    def __post_init__(self) -> None:
        self.head = [
            (b"content-type", self.media_type.encode()),
            (b"accept-ranges", b"bytes"),
            (b"etag", self.etag.encode()),
            (b"last-modified", http_date(self.modified).encode()),
        ]

    def headers(self) -> list[tuple[bytes, bytes]]:
        return self.head  # callers copy before adding to it

    def retire(self) -> None:
        """The file was evicted or replaced: close the descriptor once no response reads it."""
        if not self.retired:
            self.retired = True
            if self.users == 0:
                os.close(self.fd)

    def release(self) -> None:
        self.users -= 1
        if self.retired and self.users == 0:
            os.close(self.fd)


class Reply(Exception):
    """An answer that ends the request early (an error, a redirect, pending)."""

    def __init__(self, status: int, body: dict[str, Any] | None = None, headers: dict[str, str] | None = None):
        super().__init__(status)
        self.status, self.body, self.headers = status, body, headers or {}


def error(status: int, reason: str, kind: str, **headers: str) -> Reply:
    return Reply(status, {"status": status, "error": kind, "reason": reason}, headers)


class ProxyService:
    def __init__(self, engine: sa.Engine, settings: Settings, clock: Callable[[], float] = time.time) -> None:
        self.engine, self.settings, self.clock = engine, settings, clock
        self.cache_dir = settings.resolved_proxy_cache_dir()
        self.auth = ProxyAuthenticator(engine, settings, clock)
        # Shared by the replicas on PostgreSQL; in this process's memory on SQLite (one API process).
        shared = SharedCounters(engine) if engine.dialect.name == "postgresql" else None
        self.qos = QosCounters(clock, shared)
        self.policies: Recent[str, ProxyDataset | None] = Recent(POLICY_SECONDS)
        self.quotas: Recent[tuple[str, ...], list[ProxyQuota]] = Recent(POLICY_SECONDS)
        self._files: dict[tuple[str, str, str], CachedFile] = {}
        self._served: set[tuple[str, str, str]] = set()
        self._touched: dict[tuple[str, str, str], float] = {}
        self.log: list[tuple[str, str, int]] = []  # (method, path, status) of recent requests, for operators
        self.fetches_requested = 0

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.clock(), UTC)

    # --- the ASGI entry -------------------------------------------------------------------------

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        method, path = scope["method"], scope["path"]
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        try:
            pathsend = "http.response.pathsend" in (scope.get("extensions") or {})
            if _asks_status(scope.get("query_string", b"")):
                raise await self.status(method, path, headers)
            await self.answer(method, path, headers, receive, send, pathsend=pathsend)
            status = 200
        except Reply as reply:
            status = reply.status
            await self._send_reply(send, reply, method)
        self._log(method, path, status)

    def _log(self, method: str, path: str, status: int) -> None:
        self.log.append((method, path, status))
        if len(self.log) > 10_000:
            del self.log[:5_000]

    async def _send_reply(self, send: Send, reply: Reply, method: str) -> None:
        body = b"" if reply.body is None else json.dumps(reply.body).encode()
        headers = [(k.lower().encode(), v.encode()) for k, v in reply.headers.items()]
        if reply.body is not None:
            headers.append((b"content-type", b"application/json"))
        headers.append((b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": reply.status, "headers": headers})
        await send({"type": "http.response.body", "body": b"" if method == "HEAD" else body})

    async def answer(
        self, method: str, path: str, headers: dict[str, str], receive: Receive, send: Send, *, pathsend: bool = False
    ) -> None:
        if method not in ("GET", "HEAD"):
            raise error(
                405, f"{method} is not allowed on proxy assets; use GET or HEAD", "MethodNotAllowed", allow="GET, HEAD"
            )
        key = _asset_key(path)
        policy = await self._policy(key[0])
        if policy is None:
            raise error(404, f"no proxied collection {key[0]!r}", "NotFound")
        reader = await self._authorise(policy, headers.get("authorization", ""))
        quotas = await self._quotas_of(reader)
        await self._charge(quotas, Usage.REQUESTS, 1)
        if policy.mode is not ProxyMode.CACHE:
            await self._redirect(policy, key)
        cached = self._cached(key)
        if cached is None:
            cached = await self._fetch_or_pending(policy, key, quotas)
        await self._serve(method, key, cached, headers, quotas, receive, send, pathsend)

    async def status(self, method: str, path: str, headers: dict[str, str]) -> Reply:
        """The asset's status resource: where its fetch stands, for whoever may read the asset. It
        starts no fetch and counts as a request, not as a miss."""
        if method not in ("GET", "HEAD"):
            raise error(405, f"{method} is not allowed on a status resource; use GET", "MethodNotAllowed", allow="GET")
        key = _asset_key(path)
        policy = await self._policy(key[0])
        if policy is None:
            raise error(404, f"no proxied collection {key[0]!r}", "NotFound")
        reader = await self._authorise(policy, headers.get("authorization", ""))
        await self._charge(await self._quotas_of(reader), Usage.REQUESTS, 1)
        asset: ProxyAsset | None = await anyio.to_thread.run_sync(self._read, get_asset, *key)
        if asset is None:
            raise error(404, f"no asset {'/'.join(key)}", "NotFound")
        if self._cached(key) is not None or self._open_cached(key, asset) is not None:
            state = "cached"
        else:
            state = {
                FetchStatus.NONE: "not-fetched",
                FetchStatus.QUEUED: "queued",
                FetchStatus.FETCHING: "fetching",
                FetchStatus.FAILED: "failed",
            }[asset.fetch_status]
        body = {
            "asset": "/".join(key),
            "href": _url(key),
            "state": state,
            "fetched_bytes": asset.size if state == "cached" else asset.fetch_bytes or 0,
            "size": asset.size,
            "retry_after": _estimate(asset, self.now()) if state in ("queued", "fetching") else None,
            "error": asset.fetch_error if state == "failed" else None,
        }
        return Reply(200, body, {"cache-control": "no-store"})

    # --- policy, identity, quotas ---------------------------------------------------------------

    async def _policy(self, collection: str) -> ProxyDataset | None:
        return await self.policies.get(collection, lambda: self._read(dataset_policy, collection))

    def _read(self, function: Callable[..., Any], *args: Any) -> Any:
        with read_scope(self.engine) as session:
            result = function(session, *args)
            if isinstance(result, list):
                for row in result:
                    session.expunge(row)
            elif result is not None and hasattr(result, "_sa_instance_state"):
                session.expunge(result)
            return result

    async def _authorise(self, policy: ProxyDataset, header: str) -> Reader | None:
        try:
            reader = await self.auth.identify(header)
        except Unauthorized as exc:
            raise error(401, str(exc), "NotAuthorized", **{"www-authenticate": 'Basic realm="pds", Bearer'}) from None
        if policy.public:
            return reader
        if reader is None:
            raise error(
                401,
                f"collection {policy.collection} needs credentials: a bearer token or HTTP Basic",
                "NotAuthorized",
                **{"www-authenticate": 'Basic realm="pds", Bearer'},
            )
        if not may_read(reader, policy.readers):
            raise error(403, f"{reader.login} may not read collection {policy.collection}", "PermissionDenied")
        return reader

    async def _quotas_of(self, reader: Reader | None) -> list[ProxyQuota]:
        subjects = tuple(reader.subjects) if reader else ("anonymous",)
        return await self.quotas.get(subjects, lambda: self._read(quotas_for, list(subjects)))

    def forget_settings(self) -> None:
        """An administrator changed a policy, a quota or a group here: read them again at once."""
        self.policies.forget()
        self.quotas.forget()
        self.auth.forget()

    async def _charge(self, quotas: list[ProxyQuota], usage: Usage, amount: int) -> None:
        if not quotas:
            return
        try:
            if self.qos.shared is None:
                self.qos.charge(quotas, usage, amount)  # in memory: no need to leave the event loop
            else:
                await anyio.to_thread.run_sync(self.qos.charge, quotas, usage, amount)
        except QuotaExceeded as exc:
            raise error(429, str(exc), "QuotaExceeded", **{"retry-after": str(exc.retry_after)}) from None

    # --- redirect and presign -------------------------------------------------------------------

    async def _redirect(self, policy: ProxyDataset, key: tuple[str, str, str]) -> None:
        asset = await anyio.to_thread.run_sync(self._read, get_asset, *key)
        if asset is None:
            raise error(404, f"no asset {'/'.join(key)}", "NotFound")
        if policy.mode is ProxyMode.REDIRECT:
            if not asset.upstream_href.startswith(("http://", "https://")):
                raise error(502, f"asset {'/'.join(key)} has no http(s) upstream to redirect to", "BadUpstream")
            raise Reply(302, None, {"location": asset.upstream_href, "cache-control": "no-store"})
        host = await anyio.to_thread.run_sync(self._read, _host, asset.upstream_host)
        try:
            url = presigned_url(asset.upstream_href, host, policy.presign_seconds)
        except ValueError as exc:
            raise error(502, str(exc), "BadUpstream") from None
        raise Reply(302, None, {"location": url, "cache-control": "no-store"})

    # --- the cache ------------------------------------------------------------------------------

    def _cached(self, key: tuple[str, str, str]) -> CachedFile | None:
        cached = self._files.get(key)
        if cached is None:
            return None
        # A stat per request (about a microsecond): a file evicted or replaced by the fetcher (its
        # upstream changed) is never served from the descriptor of the old one.
        try:
            if _identity(os.stat(cached.path)) == cached.identity:
                return cached
        except FileNotFoundError:
            pass
        # Evicted (or replaced) by the fetcher's retention: forget the open descriptor.
        self._files.pop(key, None)
        cached.retire()
        return None

    def _open_cached(self, key: tuple[str, str, str], asset: ProxyAsset) -> CachedFile | None:
        if not asset.cache_file or asset.etag is None or asset.cached_at is None:
            return None
        path = self.cache_dir / asset.cache_file
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            return None
        stat = os.fstat(fd)
        old = self._files.get(key)
        if old is not None and old.identity == _identity(stat) and old.etag == asset.etag:
            os.close(fd)  # several requests found it at once: they share one descriptor
            return old
        cached = CachedFile(path, stat.st_size, asset.etag, asset.cached_at, asset.media_type, fd, _identity(stat))
        if old is not None:
            old.retire()
        self._files[key] = cached
        return cached

    async def _fetch_or_pending(
        self, policy: ProxyDataset, key: tuple[str, str, str], quotas: list[ProxyQuota]
    ) -> CachedFile:
        asset: ProxyAsset | None = await anyio.to_thread.run_sync(self._read, get_asset, *key)
        if asset is None:
            raise error(404, f"no asset {'/'.join(key)}", "NotFound")
        cached = self._open_cached(key, asset)
        if cached is not None:
            return cached
        if asset.fetch_status is FetchStatus.FAILED and self._recent(asset.fetch_requested_at, FAILED_COOLDOWN):
            raise _failed(asset)
        must_fetch = asset.fetch_status in (FetchStatus.NONE, FetchStatus.FAILED)
        if must_fetch:  # refused before it counts as a miss: nothing will be fetched for it
            await self._charge(quotas, Usage.UPSTREAM_BYTES, asset.size or 0)
        await self._charge(quotas, Usage.MISS_REQUESTS, 1)
        if must_fetch:
            await anyio.to_thread.run_sync(self._request_fetch, key)
        wait = self.settings.proxy_rewait_seconds if key in self._served else policy.sync_wait_seconds
        return await self._wait_for_cache(key, wait)

    def _recent(self, moment: datetime | None, seconds: float) -> bool:
        return moment is not None and (self.now() - moment).total_seconds() < seconds

    def _request_fetch(self, key: tuple[str, str, str]) -> None:
        with session_scope(self.engine) as session:
            request_fetch(session, *key, now=self.now())
        self.fetches_requested += 1

    async def _wait_for_cache(self, key: tuple[str, str, str], seconds: float) -> CachedFile:
        """Hold the request while the fetcher works: the file's appearance is watched cheaply, the
        database is read when it appears (and now and then, to notice a failed fetch)."""
        final = self.cache_dir / _relative(key)
        deadline = time.monotonic() + seconds
        next_check = time.monotonic() + 0.5
        asset: ProxyAsset | None = None
        while True:
            now = time.monotonic()
            if final.exists() or now >= next_check or now >= deadline:
                asset = await anyio.to_thread.run_sync(self._read, get_asset, *key)
                if asset is None:
                    raise error(404, f"no asset {'/'.join(key)}", "NotFound")
                cached = self._open_cached(key, asset)
                if cached is not None:
                    return cached
                if asset.fetch_status is FetchStatus.FAILED:
                    raise _failed(asset)
                next_check = now + 0.5
            if now >= deadline:
                raise self._pending(asset, key)
            await asyncio.sleep(WAIT_STEP)

    def _pending(self, asset: ProxyAsset | None, key: tuple[str, str, str]) -> Reply:
        retry_after = _estimate(asset, self.now())
        status = 503 if self.settings.proxy_pending_status == 503 else 202
        status_url = f"{_url(key)}?status"
        body = {
            "status": "pending",
            "reason": "the asset is being fetched from its upstream; retry the same URL",
            "retry_after": retry_after,
            "fetched_bytes": asset.fetch_bytes if asset else 0,
            "size": asset.size if asset else None,
            "status_url": status_url,
        }
        headers = {"retry-after": str(retry_after), "cache-control": "no-store", "location": status_url}
        return Reply(status, body, headers)

    # --- serving bytes --------------------------------------------------------------------------

    async def _serve(
        self,
        method: str,
        key: tuple[str, str, str],
        cached: CachedFile,
        headers: dict[str, str],
        quotas: list[ProxyQuota],
        receive: Receive,
        send: Send,
        pathsend: bool = False,
    ) -> None:
        if precondition_failed(headers, cached.etag, cached.modified):
            raise error(412, "the asset changed (If-Match / If-Unmodified-Since)", "PreconditionFailed")
        if not_modified(headers, cached.etag, cached.modified):
            raise Reply(304, None, {k.decode(): v.decode() for k, v in cached.headers()})
        status, first, last = 200, 0, cached.size - 1
        range_header = headers.get("range")
        if range_header and range_applies(headers, cached.etag, cached.modified):
            try:
                chosen = parse_range(range_header, cached.size)
            except Unsatisfiable:
                raise error(
                    416,
                    f"range {range_header!r} is outside the asset's {cached.size} bytes",
                    "RangeNotSatisfiable",
                    **{"content-range": f"bytes */{cached.size}"},
                ) from None
            if chosen is not None:
                status, (first, last) = 206, chosen
        length = last - first + 1 if cached.size else 0
        if method == "GET":
            await self._charge(quotas, Usage.BYTES, length)
        out = cached.headers() + [(b"content-length", str(length).encode())]
        if status == 206:
            out.append((b"content-range", f"bytes {first}-{last}/{cached.size}".encode()))
        self._served.add(key)
        self._note_access(key)
        cached.users += 1
        try:
            if method == "HEAD" or length == 0:
                body = b""
            elif length <= INLINE_BYTES:
                body = os.pread(cached.fd, length, first)
            elif status == 200 and pathsend:
                # The server sends the whole file itself (granian: from Rust, no Python per chunk). By
                # path: retention spares files read in the last five minutes, so it is the file the
                # headers describe.
                await send({"type": "http.response.start", "status": status, "headers": out})
                await send({"type": "http.response.pathsend", "path": str(cached.path.absolute())})
                return
            else:
                await send({"type": "http.response.start", "status": status, "headers": out})
                await _stream(cached, first, last + 1, receive, send)
                return
            await send({"type": "http.response.start", "status": status, "headers": out})
            await send({"type": "http.response.body", "body": body})
        finally:
            cached.release()

    def _note_access(self, key: tuple[str, str, str]) -> None:
        moment = time.monotonic()
        if moment - self._touched.get(key, -math.inf) < TOUCH_SECONDS:
            return
        self._touched[key] = moment
        now = self.now()

        def write() -> None:
            with session_scope(self.engine) as session:
                touch(session, *key, now=now)

        task = asyncio.get_running_loop().create_task(anyio.to_thread.run_sync(write))
        task.add_done_callback(lambda t: t.exception())  # a missed touch only delays LRU knowledge


async def _stream(cached: CachedFile, offset: int, end: int, receive: Receive, send: Send) -> None:
    """Send bytes [offset, end) of a cached file in chunks, stopping when the client goes away: servers
    drop what is sent to a closed connection without an error, and reading on would cost the rest of
    the file in disk reads for nobody."""
    gone = asyncio.Event()

    async def watch() -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        gone.set()

    watcher = asyncio.get_running_loop().create_task(watch())
    try:
        while offset < end and not gone.is_set():
            size = min(STREAM_CHUNK, end - offset)
            data = await anyio.to_thread.run_sync(os.pread, cached.fd, size, offset)
            if not data:
                raise OSError(f"cache file {cached.path} shrank while being served")
            offset += len(data)
            await send({"type": "http.response.body", "body": data, "more_body": offset < end})
    finally:
        watcher.cancel()


def _identity(stat: os.stat_result) -> tuple[int, int, int]:
    return stat.st_ino, stat.st_size, stat.st_mtime_ns


def _asks_status(query: bytes) -> bool:
    """`?status` (with or without a value) asks for the asset's status resource, not its bytes."""
    return any(part.split(b"=", 1)[0] == b"status" for part in query.split(b"&"))


def _asset_key(path: str) -> tuple[str, str, str]:
    """The (collection, item, asset) of `/proxy/c/i/a`; anything else (a directory, a sidecar path
    deeper down) is a fast 404, never a fetch."""
    parts = path.removeprefix("/proxy").strip("/").split("/") if path.startswith("/proxy/") else []
    if len(parts) != 3 or not all(parts) or path.endswith("/"):
        raise error(404, f"{path} is no proxied asset (expected /proxy/COLLECTION/ITEM/ASSET)", "NotFound")
    return parts[0], parts[1], parts[2]


def _url(key: tuple[str, str, str]) -> str:
    """The asset's URL path, each part quoted as it was in the request."""
    return "/proxy/" + "/".join(quote(part, safe="") for part in key)


def _relative(key: tuple[str, str, str]) -> str:
    from catalog.proxy import cache_relative_path

    return cache_relative_path(*key)


def _host(session: Session, name: str | None) -> Host | None:
    return session.get(Host, name) if name else None


def _failed(asset: ProxyAsset) -> Reply:
    reason = asset.fetch_error or "upstream fetch failed"
    status = 504 if "timed out" in reason.lower() or "timeout" in reason.lower() else 502
    label = f"{asset.collection}/{asset.item}/{asset.asset}"
    return error(
        status,
        f"fetching {label} from its upstream failed: {reason}",
        "UpstreamFailed",
        **{"retry-after": str(int(FAILED_COOLDOWN))},
    )


def _estimate(asset: ProxyAsset | None, now: datetime) -> int:
    """Seconds until the fetch likely ends: what is left at the rate measured from when the upstream
    began to answer to the last recorded progress, less the time since that record; 2 s when nothing
    is known yet."""
    if asset is None or not asset.size or not asset.fetch_bytes:
        return 2
    first, last = asset.fetch_answered_at, asset.fetch_progress_at
    if first is None or last is None or last <= first:
        return 2
    rate = asset.fetch_bytes / (last - first).total_seconds()
    left = (asset.size - asset.fetch_bytes) / rate - max(0.0, (now - last).total_seconds())
    return max(1, min(300, math.ceil(left)))
