"""Retrieval: stream a registered file from its source host into the Data Store, then record it.

The bytes go from the host's stream straight into a store writer (ADLER32 and MD5 computed on the
way); the object appears under its key only when whole, so a retriever killed mid-file leaves
nothing half-written behind a data file. A size that differs from what the listing said means the
file changed while it was read: the retrieval fails rather than store a mix of two versions.
A RET line is written for every retrieval, well or not, and a fetched file is announced over MQTT
when its destination asks for it (`catalog.arrivals`).
"""

from __future__ import annotations

import logging
import time
from datetime import timedelta

from prefect import task
from sqlmodel import Session, select

from blocks.registry import block_for
from catalog import outbox
from catalog.arrivals import announce_arrivals
from catalog.database import read_scope, session_scope
from catalog.events import ret_from
from catalog.models import DataFile, DataTransfer, Destination, Host, utcnow
from catalog.retrieval import Fetch, record_fetch_failure, record_fetched
from catalog.stac import harvest_stored_data_file
from catalog.store import StoredObject
from tasks import publishing
from tasks.runtime import runtime

log = logging.getLogger("pds.retrieval")


class RetrievalFailed(Exception):
    pass


def fetch_into_store(fetch: Fetch, host: Host) -> StoredObject:
    rt = runtime()
    block = block_for(host)
    fs = block.filesystem()
    try:
        with block.open_stream(fs, fetch.path) as source, rt.store.writer() as writer:
            while chunk := source.read(rt.store.chunk_size):
                writer.write(chunk)
            if fetch.size is not None and writer.size != fetch.size:
                raise RetrievalFailed(
                    f"{fetch.path} on host {host.name} has {writer.size} bytes, not the {fetch.size} listed: "
                    "it changed while it was read"
                )
            return writer.commit()
    except RetrievalFailed:
        raise
    except Exception as exc:  # noqa: BLE001 — every cause is reported with the server's words
        raise RetrievalFailed(str(block.classify(exc))) from exc


def retrieve(fetch: Fetch, retriever: str) -> bool:
    """Fetch one data file and record the outcome (Queued/StandBy, or Failed/Preset); True if whole."""
    rt = runtime()
    started = utcnow()
    clock = time.monotonic()
    with read_scope(rt.engine) as session:
        host = session.get(Host, fetch.host)
    error: str | None = None
    try:
        if host is None:
            raise RetrievalFailed(f"source host {fetch.host} no longer exists")
        stored = fetch_into_store(fetch, host)
    except RetrievalFailed as exc:
        error = str(exc)
    duration = timedelta(seconds=time.monotonic() - clock)
    with session_scope(rt.engine) as session:
        outbox.claim_on_add(session, retriever)
        if error is None:
            fetched = record_fetched(session, fetch.data_file_id, stored, by=retriever)
            announce_arrivals(session, rt.settings, fetched)  # published with the RET lines, just below
            # Items of published destinations now point the proxy at the stored copy.
            harvest_stored_data_file(
                session, rt.store, fetch.data_file_id, public_url=rt.settings.resolved_public_url()
            )
        else:
            record_fetch_failure(session, fetch.data_file_id, error, by=retriever)
        if host is not None:  # the RET lines commit with the outcome they report (`catalog.outbox`)
            _ret_lines(session, fetch, host, retriever, started, duration, error)
    publishing.publish_added(rt.engine, rt.settings, retriever, outbox.added(session))
    if error:
        log.warning("retrieval of data file %s failed: %s", fetch.data_file_id, error)
    return error is None


def _ret_lines(
    session: Session,
    fetch: Fetch,
    host: Host,
    retriever: str,
    started: object,
    duration: timedelta,
    error: str | None,
) -> None:
    data_file = session.get(DataFile, fetch.data_file_id)
    transfers = session.exec(select(DataTransfer).where(DataTransfer.data_file_id == fetch.data_file_id)).all()
    lines = []
    for transfer in transfers:
        destination = session.get(Destination, transfer.destination_name)
        if data_file is None or destination is None or transfer.id not in fetch.transfer_ids:
            continue
        lines.append(
            ret_from(
                transfer,
                data_file,
                destination,
                host,
                start_time=started,  # type: ignore[arg-type]
                duration=duration,
                data_only_duration=duration,
                mover_name=retriever,
                error=error,
            )
        )
    outbox.add_lines(session, lines)


@task(name="retrieve", task_run_name="retrieve from {host}: {n} file(s)")
def retrieve_batch(fetches: list[Fetch], retriever: str, host: str, n: int) -> dict[str, int]:
    """Fetch files of one source host one after the other; the outcome of each is in the database."""
    done = sum(retrieve(f, retriever) for f in fetches)
    return {"retrieved": done, "failed": len(fetches) - done}
