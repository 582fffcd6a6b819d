"""Fetch one proxied asset from its upstream into the proxy's online cache.

Any protocol of the transfer layer can be an upstream: an asset names a `Host` (credentials, options)
and a path on it, or gives a plain http(s)/s3 URL, which becomes a host block on the fly; an asset
harvested from a stored data file (`pds-store:<key>`) is copied from the Data Store, and so is one
whose upstream is the source of a file registered without retrieval: its retrieval is requested
(`catalog.on_demand`, once however many ask, the portal's readers included) and waited for, so the
provider sees one fetch, by the retriever. The bytes
stream into a temporary file in the cache directory that is renamed when whole, so a crash or a failed
attempt never leaves a partial file served as data.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO
from urllib.parse import urlsplit

import sqlalchemy as sa
from prefect import task
from prefect.client.schemas.objects import State

from blocks.base import HostBlock, ReadAhead
from blocks.registry import block_class, block_for
from catalog.database import session_scope
from catalog.errors import FailTransfer, NotFound, TransferError
from catalog.models import Host, utcnow
from catalog.on_demand import file_at_source, request_fetch, retrieval_of
from catalog.proxy import (
    STORE_SCHEME,
    FetchJob,
    ProxyAsset,
    cache_relative_path,
    record_cached,
    record_fetch_attempt_failed,
    record_fetch_progress,
    temporary_name,
)
from catalog.store import DataStore
from tasks.runtime import runtime

log = logging.getLogger("pds.proxy")

RETRIEVAL_POLL = 0.2
"""Seconds between two looks at the retrieval a proxy fetch waits for."""

PROGRESS_EVERY = 0.5

PROGRESS_SLICE = 256 * 1024
"""Bytes read from the upstream at a time. The Retry-After of pending answers is estimated from the
progress recorded here, so progress must move as bytes arrive: in the transfer layer's 8 MiB reads
a slow upstream would show nothing for seconds, then a jump (an estimate several times too long)."""


def upstream_of(asset: ProxyAsset, host: Host | None) -> tuple[HostBlock, str]:
    """The host block that reaches the asset's upstream, and the path on it."""
    if host is not None:
        block = block_for(host)
        href = asset.upstream_href
        path = urlsplit(href).path if "://" in href else href
        base = block.base_path().rstrip("/")
        if base and path.startswith(base + "/"):
            return block, path  # a path as the host's listing gave it (a file acquisition registered)
        return block, block.join(path)
    url = urlsplit(asset.upstream_href)
    if url.scheme in ("http", "https"):
        base = f"{url.scheme}://{url.netloc}"
        block = block_class(url.scheme)(name=url.netloc, address=base, options={"webdav": False})
        return block, url.path
    if url.scheme == "s3":
        return block_class("s3")(name=url.netloc, options={"anon": True}), f"{url.netloc}{url.path}"
    raise FailTransfer(f"no transfer module for upstream {asset.upstream_href!r}")


@contextmanager
def _open_upstream(block: HostBlock | None, path: str, store: DataStore | None) -> Iterator[IO[bytes]]:
    """A stream of the upstream: through its host block, or (no block) from the Data Store."""
    if block is not None:
        # Read ahead as the transfer layer does, in slices small enough to show progress.
        with ReadAhead(block.open_raw_stream(block.filesystem(), path), chunk=PROGRESS_SLICE, depth=32) as source:
            yield source  # type: ignore[misc]
        return
    if store is None:
        raise FailTransfer("the asset is a data file of the Data Store, but no store was given")
    with store.open(path) as source:
        yield source


def fetch_into_cache(
    engine: sa.Engine,
    cache_dir: Path,
    job: FetchJob,
    chunk_size: int = 4 * 1024 * 1024,
    store: DataStore | None = None,
    retrieval_wait: float = 600.0,
) -> int:
    """Stream the asset from its upstream into the cache; returns its size. Raises TransferError.
    An upstream that is a file registered without retrieval is fetched by the retriever first
    (waiting up to `retrieval_wait` seconds), then copied from the Data Store."""
    with session_scope(engine) as session:
        asset = session.get(ProxyAsset, (job.collection, job.item, job.asset))
        if asset is None:
            raise NotFound(f"proxied asset {job.label} was unregistered")
        host = session.get(Host, asset.upstream_host) if asset.upstream_host else None
        if asset.upstream_host and host is None:
            raise FailTransfer(f"upstream host {asset.upstream_host!r} of {job.label} does not exist")
        expected = asset.size
        on_demand = file_at_source(session, asset.upstream_host, asset.upstream_href)
    stored_key = (
        asset.upstream_href.removeprefix(STORE_SCHEME) if asset.upstream_href.startswith(STORE_SCHEME) else None
    )
    if stored_key is None and on_demand is not None:
        stored_key = _wait_for_retrieval(engine, on_demand, job, retrieval_wait)
    block, path = (None, stored_key) if stored_key is not None else upstream_of(asset, host)
    relative = cache_relative_path(job.collection, job.item, job.asset)
    final = cache_dir / relative
    final.parent.mkdir(parents=True, exist_ok=True)
    temp = temporary_name(final)
    written, last_report = 0, time.monotonic()
    try:
        with _open_upstream(block, path, store) as source, temp.open("wb") as target:
            answered_at = utcnow()
            while data := source.read(min(chunk_size, PROGRESS_SLICE)):
                target.write(data)
                written += len(data)
                if time.monotonic() - last_report > PROGRESS_EVERY:
                    with session_scope(engine) as session:
                        record_fetch_progress(session, job, written, answered_at=answered_at, at=utcnow())
                    last_report = time.monotonic()
        if expected is not None and written != expected:
            raise FailTransfer(f"upstream sent {written} bytes of {job.label}, {expected} were announced")
        os.replace(temp, final)
    except BaseException as exc:
        temp.unlink(missing_ok=True)
        if block is None:
            if isinstance(exc, FileNotFoundError):
                raise FailTransfer(f"{job.label}: its data file is no longer in the Data Store") from exc
            raise
        raise block.classify(exc) from exc
    with session_scope(engine) as session:
        asset = session.get(ProxyAsset, (job.collection, job.item, job.asset))
        if asset is None:
            final.unlink(missing_ok=True)
            raise NotFound(f"proxied asset {job.label} was unregistered during its fetch")
        record_cached(session, asset, cache_dir, relative, now=utcnow())
    log.info("proxy fetched %s: %d bytes", job.label, written)
    return written


def _wait_for_retrieval(engine: sa.Engine, data_file_id: int, job: FetchJob, seconds: float) -> str:
    """Ask for the on-demand file's retrieval and wait until its content is in the Data Store; its key."""
    deadline = time.monotonic() + seconds
    while True:
        with session_scope(engine) as session:
            request_fetch(session, data_file_id, by="proxy", reason=f"read through the proxy as {job.label}")
            state = retrieval_of(session, data_file_id)
        if state.store_key:
            return state.store_key
        if state.failed:
            raise FailTransfer(f"{job.label}: {state.failed}")
        if time.monotonic() >= deadline:
            raise TransferError(f"{job.label}: its retrieval into the Data Store did not end within {seconds:g} s")
        time.sleep(RETRIEVAL_POLL)


def _worth_retrying(task: object, task_run: object, state: State) -> bool:
    # A missing object or a refused credential will not change in seconds; a broken connection may.
    return not isinstance(state.result(raise_on_failure=False), FailTransfer | NotFound)


@task(name="proxy-fetch", task_run_name="fetch {job.label}", retry_condition_fn=_worth_retrying)
def fetch_asset(job: FetchJob) -> int:
    """One upstream fetch attempt (Prefect retries it by the deployment's policy)."""
    rt = runtime()
    try:
        return fetch_into_cache(
            rt.engine,
            rt.settings.resolved_proxy_cache_dir(),
            job,
            rt.settings.chunk_size,
            store=rt.store,
            retrieval_wait=rt.settings.proxy_retrieval_wait_seconds,
        )
    except TransferError as exc:
        with session_scope(rt.engine) as session:
            record_fetch_attempt_failed(session, job, str(exc), final=False)
        raise


def give_up(job: FetchJob, reason: str) -> None:
    """After the last attempt: the request is failed (answered 502 with the reason), never cached."""
    with session_scope(runtime().engine) as session:
        record_fetch_attempt_failed(session, job, reason, final=True)
