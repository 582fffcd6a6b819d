"""Purge: expired data files and their transfers leave the database and the store, whatever their
transfers' state (unfinished ones are stopped "expired before it was sent" first); nothing unexpired
or moving is touched; the counts are reported."""

from __future__ import annotations

from datetime import timedelta

import sqlalchemy as sa
from sqlmodel import Session, select

from catalog.database import session_scope
from catalog.models import DataFile, DataTransfer, TransferHistory, utcnow
from tests.factories import destination, push

DAY = 86400


def age(engine, data_file_id: int, days: float, status: str | None = None) -> None:
    """Make a data file and its transfers look `days` old (and give its transfers `status`)."""
    then = utcnow() - timedelta(days=days)
    with engine.begin() as connection:
        connection.execute(
            sa.update(DataFile.__table__)
            .where(DataFile.__table__.c.id == data_file_id)
            .values(created_at=then, arrived_at=then)
        )
        values = {"updated_at": then, **({"status": status} if status else {})}
        connection.execute(
            sa.update(DataTransfer.__table__)
            .where(DataTransfer.__table__.c.data_file_id == data_file_id)
            .values(**values)
        )


def history(engine, transfer_id: int) -> list[tuple[str, str, str]]:
    with Session(engine) as session:
        rows = session.exec(
            select(TransferHistory).where(TransferHistory.transfer_id == transfer_id).order_by(TransferHistory.id)
        )
        return [(h.action, h.to_status, h.reason) for h in rows]


def counts(stopped: int, data_files: int, transfers: int, objects: int) -> dict[str, int]:
    return {
        "stopped": stopped,
        "data_files": data_files,
        "transfers": transfers,
        "objects": objects,
        "multipart_uploads": 0,
        "continental_copies": 0,
    }


def test_purge_removes_expired_files_only_and_reports_the_counts(rt, prefect_server):
    destination(rt.engine, "bucket")
    old_done, (old_done_t,) = push(rt.engine, rt.store, "bucket", "old-done.bin")
    old_failed, _ = push(rt.engine, rt.store, "bucket", "old-failed.bin")
    old_queued, (old_queued_t,) = push(rt.engine, rt.store, "bucket", "old-queued.bin")
    recent_done, _ = push(rt.engine, rt.store, "bucket", "recent-done.bin")
    recent_queued, _ = push(rt.engine, rt.store, "bucket", "recent-queued.bin")
    age(rt.engine, old_done, 10, "Done")
    age(rt.engine, old_failed, 8, "Failed")
    age(rt.engine, old_queued, 30)  # never pulled from the portal bucket
    age(rt.engine, recent_done, 2, "Done")
    age(rt.engine, recent_queued, 2)
    with Session(rt.engine) as session:
        keys = {f.id: f.store_key for f in session.exec(select(DataFile))}

    from flows.purge import purge

    # The finished files go; the one never pulled is stopped, its reason in its history, and stays
    # until the next run so the monitor shows why it went.
    assert purge(retention_seconds=7 * DAY) == counts(stopped=1, data_files=2, transfers=2, objects=2)
    with Session(rt.engine) as session:
        left = {f.id for f in session.exec(select(DataFile))}
        assert session.exec(select(TransferHistory).where(TransferHistory.transfer_id == old_done_t)).all() == []
        assert session.get(DataTransfer, old_queued_t).status == "Stopped"
    assert left == {old_queued, recent_done, recent_queued}
    (*_, (action, status, reason)) = history(rt.engine, old_queued_t)
    assert (action, status) == ("stop", "Stopped")
    assert reason.startswith("expired before it was sent") and "7 days" in reason

    assert purge(retention_seconds=7 * DAY) == counts(stopped=0, data_files=1, transfers=1, objects=1)
    with Session(rt.engine) as session:
        left = {f.id for f in session.exec(select(DataFile))}
    assert left == {recent_done, recent_queued}
    for data_file_id, key in keys.items():
        assert rt.store.exists(key) == (data_file_id in left)
    assert purge(retention_seconds=7 * DAY) == counts(0, 0, 0, 0)


def test_files_registered_without_retrieval_and_never_asked_for_expire_too(rt, local_source, prefect_server):
    """Preset transfers of on-demand files nobody read are stopped, then the files purged; a file
    being fetched right now is left alone, whatever its age."""
    from catalog.retrieval import claim_fetches
    from flows.purge import purge
    from tasks.discovery import discover_rule
    from tests.acquisition.conftest import acquisition_setup

    for name in ("never-asked.dat", "being-fetched.dat"):
        local_source.put(f"in/{name}", b"payload")
    host, rule = acquisition_setup(rt.engine, local_source, directory="in", no_retrieval=True)
    assert discover_rule(rt.engine, host, rule, by="test").registered == 2
    with Session(rt.engine) as session:
        files = {f.name: f.id for f in session.exec(select(DataFile))}
        transfers = {t.data_file_id: t.id for t in session.exec(select(DataTransfer))}
    from catalog.on_demand import request_fetch

    with session_scope(rt.engine) as session:
        request_fetch(session, files["being-fetched.dat"], by="test", reason="read")
    with session_scope(rt.engine) as session:
        (fetch,) = claim_fetches(session, "retriever-test", 10, default_per_host=4)
    assert fetch.data_file_id == files["being-fetched.dat"]
    for data_file_id in files.values():
        age(rt.engine, data_file_id, 30)

    assert purge(retention_seconds=7 * DAY) == counts(stopped=1, data_files=0, transfers=0, objects=0)
    never_asked = transfers[files["never-asked.dat"]]
    assert [(a, s) for a, s, _ in history(rt.engine, never_asked)] == [("create", "Preset"), ("stop", "Stopped")]
    assert history(rt.engine, never_asked)[-1][2].startswith("expired before it was sent")
    with Session(rt.engine) as session:
        assert session.get(DataTransfer, transfers[files["being-fetched.dat"]]).status == "Fetching"

    assert purge(retention_seconds=7 * DAY) == counts(stopped=0, data_files=1, transfers=1, objects=0)
    with Session(rt.engine) as session:
        assert {f.name for f in session.exec(select(DataFile))} == {"being-fetched.dat"}


def test_purge_removes_multipart_uploads_abandoned_for_the_retention_time(rt, prefect_server):
    from catalog import multipart
    from flows.purge import purge

    abandoned = multipart.begin(rt.store, "alice", "/bucket/big.bin", now=utcnow() - timedelta(days=8))
    rt.store.put_stream([b"p" * 1000], multipart.part_key(abandoned, 1))
    recent = multipart.begin(rt.store, "alice", "/bucket/other.bin", now=utcnow() - timedelta(days=6))
    rt.store.put_stream([b"q" * 1000], multipart.part_key(recent, 1))

    assert purge()["multipart_uploads"] == 1  # PDS_MULTIPART_RETENTION_SECONDS: 7 days
    assert not rt.store.exists(multipart.part_key(abandoned, 1))
    assert not rt.store.exists(multipart.manifest_key(abandoned))
    assert rt.store.exists(multipart.part_key(recent, 1))
    assert multipart.read_manifest(rt.store, recent).path == "/bucket/other.bin"
