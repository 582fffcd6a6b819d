"""A continental mover's own store, and pre-replication into it.

The store location is the proxy host's: its filesystem through the transfer layer (a directory, a
bucket, …) under its `directory`, holding objects under the Data Store's keys. Pre-replication copies
each due data file there, reads it back to verify its MD5 (as replication does), records the copy
and writes a CPY line with action `proxy` — OpenECPDS's word for a copy from an internal mover to a
continental one. A failed copy is recorded too, with a CPY line saying why (Status=false), and the
main movers then send that file from the Data Store.
"""

from __future__ import annotations

import json
import threading
import time

from prefect import task
from prefect.cache_policies import NO_CACHE

from blocks.registry import block_for
from catalog import outbox
from catalog.continental import (
    PreReplication,
    due_for_pre_replication,
    finished_copies,
    forget_copy,
    lead_time,
    proxy_host,
    record_pre_replication,
    retry_time,
)
from catalog.database import read_scope, session_scope
from catalog.errors import InvalidInput
from catalog.models import Host, utcnow
from catalog.replication import ToReplicate
from catalog.store import DataStore
from tasks import publishing
from tasks.replication import add_copy_event, copy_verified
from tasks.runtime import runtime

_stores: dict[tuple[str, bool], DataStore] = {}
_stores_lock = threading.Lock()


def continental_store(host: Host, *, fall_back: bool = False) -> DataStore:
    """The store location of proxy host `host`, one per process and configuration.

    With `fall_back` (for sending), reads of an object missing there come from the Data Store, so a
    copy removed from the location by hand is sent from there rather than failing the transfer.
    Pre-replication verifies its copies without it, so the Data Store never passes for the copy.
    """
    config = json.dumps([host.name, host.protocol, host.address, host.directory, host.login, host.options], default=str)
    with _stores_lock:
        if (config, fall_back) not in _stores:
            block = block_for(host)
            root = block.join(host.directory)
            if not root:
                raise InvalidInput(f"proxy host {host.name} needs an address or a directory for its store location")
            rt = runtime()
            store = DataStore(block.filesystem(), root, chunk_size=rt.settings.chunk_size)
            store.replicas = [rt.store] if fall_back else []
            _stores[(config, fall_back)] = store
        return _stores[(config, fall_back)]


def pre_replicate(item: PreReplication, host: Host, mover: str) -> bool:
    """Copy one data file to `host`'s store location, verified, recorded, with its CPY line."""
    rt = runtime()
    started, clock = utcnow(), time.monotonic()
    target = host.name
    try:
        store = continental_store(host)
        target = store.location()
        error = copy_verified(rt.store, store, ToReplicate(item.data_file_id, item.store_key, item.md5, item.size))
    except Exception as exc:  # noqa: BLE001 — recorded and logged; the main movers send the file instead
        error = f"{type(exc).__name__}: {exc}"
    with session_scope(rt.engine) as session:
        outbox.claim_on_add(session, mover)
        record_pre_replication(session, item, host.name, error=error, mover=mover)
        add_copy_event(
            session,
            item.data_file_id,
            transfer_id=item.transfer_id,
            target=target,
            error=error,
            started=started,
            clock=clock,
            caller=mover,
            action="proxy",
        )
    publishing.publish_added(rt.engine, rt.settings, mover, outbox.added(session))
    return error is None


@task(name="pre-replicate", task_run_name="pre-replicate {n} file(s) to proxy host {proxy}", cache_policy=NO_CACHE)
def pre_replicate_batch(items: list[PreReplication], proxy: str, mover: str, n: int) -> dict[str, int]:
    rt = runtime()
    with read_scope(rt.engine) as session:
        host = proxy_host(session, proxy)
        session.expunge(host)
    done = sum(pre_replicate(item, host, mover) for item in items)
    return {"pre_replicated": done, "failed": len(items) - done}


def due(proxy: str, limit: int = 100) -> list[PreReplication]:
    """The data files `proxy`'s continental mover should copy now (due within its lead time; a failed
    copy again once its retry time has passed)."""
    rt = runtime()
    with read_scope(rt.engine) as session:
        host = proxy_host(session, proxy)
        return due_for_pre_replication(session, proxy, lead=lead_time(host), retry_after=retry_time(host), limit=limit)


def remove_finished(proxy: str) -> int:
    """Remove the copies whose transfers are all finished from `proxy`'s location; how many went.

    The object goes before its row: a crash between the two leaves a row whose transfers would read
    from the Data Store instead (the location falls back to it), never an object nobody knows of.
    """
    rt = runtime()
    with read_scope(rt.engine) as session:
        finished = finished_copies(session, proxy)
        host = proxy_host(session, proxy) if finished else None
        if host is not None:
            session.expunge(host)
    if host is None:
        return 0
    store = continental_store(host)
    for data_file_id, key in finished:
        store.delete(key)
        with session_scope(rt.engine) as session:
            forget_copy(session, data_file_id, proxy)
    return len(finished)


def remove_left_copies(proxy: str, *, batch: int = 100) -> int:
    """What purge does for a continental mover that may never come back: remove, from `proxy`'s
    location, the copies no transfer needs any more (see `remove_finished`); how many went.

    Only a copy found in the location is removed and forgotten. A location that only its continental
    mover's machine sees (a local directory there) shows no copy from here, so its rows stay for that
    mover to clear, rather than being forgotten while the copy remains.
    """
    rt = runtime()
    with read_scope(rt.engine) as session:
        host = proxy_host(session, proxy)
        session.expunge(host)
    store = continental_store(host)
    removed, after = 0, 0
    while True:
        with read_scope(rt.engine) as session:
            finished = finished_copies(session, proxy, limit=batch, after=after)
        for data_file_id, key in finished:
            if store.exists(key):
                store.delete(key)
                with session_scope(rt.engine) as session:
                    forget_copy(session, data_file_id, proxy)
                removed += 1
        if len(finished) < batch:
            return removed
        after = finished[-1][0]


def pre_replication_pass(proxy: str, mover: str) -> dict[str, int]:
    """Copy what is due now to `proxy`'s store location, and remove what is no longer needed there
    (one batch of each; the mover calls this every second)."""
    items = due(proxy)
    outcome = pre_replicate_batch(items, proxy, mover, len(items)) if items else {"pre_replicated": 0, "failed": 0}
    return outcome | {"removed": remove_finished(proxy)}
