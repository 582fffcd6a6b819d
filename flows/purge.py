"""Purge: remove expired data files and their transfers from the database and the Data Store,
multipart uploads abandoned in the Data Store, and copies left in continental movers' locations, on a
schedule (the `purge` deployment). An expired file whose transfers have not ended (never pulled,
never asked for) has them stopped "expired before it was sent" and goes at the next run. Reports how
many transfers it stopped, and how many data files, transfers, objects, multipart uploads and
continental copies it removed.

Run once with `python -m flows.purge`.
"""

from __future__ import annotations

import argparse
from datetime import datetime, timedelta

from prefect import flow, get_run_logger, task

from catalog import multipart
from catalog.continental import proxy_host_names
from catalog.database import session_scope
from catalog.purge import expired_data_files, remove_data_files, stop_expired_unsent
from tasks.continental import remove_left_copies
from tasks.runtime import runtime


@task(name="purge batch")
def purge_batch(retention_seconds: float, now: datetime | None, limit: int) -> dict[str, int]:
    """One batch: the rows in one transaction, then the objects from the store and its replicas."""
    rt = runtime()
    with session_scope(rt.engine) as session:
        expired = expired_data_files(session, timedelta(seconds=retention_seconds), now=now, limit=limit)
        transfers = remove_data_files(session, [e.data_file_id for e in expired])
    objects = 0
    for item in expired:
        if not item.store_key:
            continue  # registered, never retrieved
        for location in (rt.store, *rt.store.replicas):
            if location.exists(item.store_key):
                location.delete(item.store_key)
                objects += 1
    return {"data_files": len(expired), "transfers": transfers, "objects": objects}


@task(name="stop expired unsent transfers")
def stop_unsent(retention_seconds: float, now: datetime | None, limit: int) -> int:
    """Stop the unfinished transfers of expired files, one batch per transaction; they are removed
    by the next run (after the files already expired), so their history says why for a while."""
    rt, stopped = runtime(), 0
    while True:
        with session_scope(rt.engine) as session:
            batch = stop_expired_unsent(session, timedelta(seconds=retention_seconds), by="purge", now=now, limit=limit)
        stopped += len(batch)
        if len(batch) < limit:
            return stopped


@task(name="purge abandoned multipart uploads")
def purge_multipart(retention_seconds: float, now: datetime | None) -> int:
    return multipart.remove_abandoned(runtime().store, timedelta(seconds=retention_seconds), now=now)


@task(name="purge continental copies")
def purge_continental_copies() -> int:
    """Copies in proxy hosts' locations that no transfer needs any more. Each continental mover
    removes its own as it goes; one that never comes back would leave them there for ever."""
    logger = get_run_logger()
    with session_scope(runtime().engine) as session:
        proxies = proxy_host_names(session)
    removed = 0
    for proxy in proxies:
        try:
            removed += remove_left_copies(proxy)
        except Exception as exc:  # noqa: BLE001 — one unreachable location must not stop the purge
            logger.warning("copies in the location of proxy host %s were not removed: %s", proxy, exc)
    return removed


@flow(name="purge", log_prints=True)
def purge(retention_seconds: float = 0, now: datetime | None = None, batch: int = 500) -> dict[str, int]:
    """Remove every expired data file (retention: PDS_DATA_RETENTION_SECONDS unless given) and the
    multipart uploads abandoned for PDS_MULTIPART_RETENTION_SECONDS."""
    rt, logger = runtime(), get_run_logger()
    retention = retention_seconds or rt.settings.data_retention_seconds
    totals = {"stopped": 0, "data_files": 0, "transfers": 0, "objects": 0}
    # Before the data files go: their copies' rows go with them, and the copies would be left behind.
    continental_copies = purge_continental_copies()
    while True:
        removed = purge_batch(retention, now, batch)
        for key in removed:
            totals[key] += removed[key]
        if removed["data_files"] < batch:
            break
    totals["stopped"] = stop_unsent(retention, now, batch)
    totals["multipart_uploads"] = purge_multipart(rt.settings.multipart_retention_seconds, now)
    totals["continental_copies"] = continental_copies
    logger.info(
        "purge stopped %d expired unsent transfer(s) and removed %d data file(s), %d transfer(s), %d object(s),"
        " %d abandoned multipart upload(s), %d continental cop(ies)",
        totals["stopped"],
        totals["data_files"],
        totals["transfers"],
        totals["objects"],
        totals["multipart_uploads"],
        totals["continental_copies"],
    )
    return totals


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m flows.purge", description=__doc__.splitlines()[0])
    parser.add_argument("--retention", type=float, default=0, help="seconds (default PDS_DATA_RETENTION_SECONDS)")
    args = parser.parse_args(argv)
    print(purge(retention_seconds=args.retention))  # noqa: T201 — the count is what the caller wants


if __name__ == "__main__":
    main()
