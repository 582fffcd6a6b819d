"""Replication: copy a data file's object from the Data Store to a replica location, verify it by
reading it back (MD5), record it, and write a CPY line."""

from __future__ import annotations

import hashlib
import time
from datetime import datetime, timedelta

from prefect import task
from sqlmodel import Session, col, select

from catalog import outbox
from catalog.database import session_scope
from catalog.events import cpy_from
from catalog.models import DataFile, DataTransfer, Destination, utcnow
from catalog.replication import ToReplicate, record_replica
from catalog.store import DataStore
from tasks import publishing
from tasks.runtime import runtime


def copy_verified(store: DataStore, replica: DataStore, item: ToReplicate) -> str | None:
    """Copy the object under the same key; None when the copy reads back whole, else the reason."""
    with replica.writer(item.store_key) as writer:
        for chunk in store.iter_chunks(item.store_key):
            writer.write(chunk)
        writer.commit()
    digest = hashlib.md5(usedforsecurity=False)
    size = 0
    for chunk in replica.iter_chunks(item.store_key):
        digest.update(chunk)
        size += len(chunk)
    if digest.hexdigest() != item.md5 or size != item.size:
        replica.delete(item.store_key)
        return f"the copy in {replica.location()} reads back as {size} bytes, MD5 {digest.hexdigest()}, not {item.md5}"
    return None


def replicate(item: ToReplicate, replica: DataStore, caller: str) -> bool:
    rt = runtime()
    started, clock = utcnow(), time.monotonic()
    try:
        error = copy_verified(rt.store, replica, item)
    except Exception as exc:  # noqa: BLE001 — reported in the CPY line; the next pass tries again
        error = f"{type(exc).__name__}: {exc}"
    with session_scope(rt.engine) as session:
        outbox.claim_on_add(session, caller)
        if error is None:
            record_replica(session, item.data_file_id, replica.location(), item.md5)
        add_copy_event(
            session,
            item.data_file_id,
            target=replica.location(),
            error=error,
            started=started,
            clock=clock,
            caller=caller,
        )
    publishing.publish_added(rt.engine, rt.settings, caller, outbox.added(session))
    return error is None


@task(name="replicate", task_run_name="replicate {n} file(s) to {location}")
def replicate_batch(items: list[ToReplicate], replica_index: int, location: str, n: int, caller: str) -> dict[str, int]:
    replica = runtime().store.replicas[replica_index]
    done = sum(replicate(item, replica, caller) for item in items)
    return {"replicated": done, "failed": len(items) - done}


def add_copy_event(
    session: Session,
    data_file_id: int,
    *,
    target: str,
    error: str | None,
    started: datetime,
    clock: float,
    caller: str,
    transfer_id: int | None = None,
    action: str = "replicate",
) -> None:
    """The CPY line of one copy of a data file out of the Data Store (to a replica, or to a
    continental mover's store with action `proxy`), for transfer `transfer_id` of that file (by
    default its first one), as an outbox row of `session`: it commits with the copy's record. Nothing is
    written for a file purged meanwhile."""
    rt = runtime()
    duration = timedelta(seconds=time.monotonic() - clock)
    if transfer_id is not None:
        transfer = session.get(DataTransfer, transfer_id)
    else:
        transfer = session.exec(
            select(DataTransfer).where(DataTransfer.data_file_id == data_file_id).order_by(col(DataTransfer.id))
        ).first()
    data_file = session.get(DataFile, data_file_id)
    destination = session.get(Destination, transfer.destination_name) if transfer else None
    if transfer and data_file and destination:
        line = cpy_from(
            transfer,
            data_file,
            destination,
            source=rt.store.location(),
            target=target,
            ok=error is None,
            message=error,
            action=action,
            start_time=started,
            duration=duration,
            caller=caller,
        )
        outbox.add_lines(session, [line])
