"""Purge: expired data files and their transfers leave the database and the store; nothing
unexpired is touched; the counts are reported."""

from __future__ import annotations

from datetime import timedelta

import sqlalchemy as sa
from sqlmodel import Session, select

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


def test_purge_removes_expired_files_only_and_reports_the_counts(rt, prefect_server):
    destination(rt.engine, "bucket")
    old_done, (old_done_t,) = push(rt.engine, rt.store, "bucket", "old-done.bin")
    old_failed, _ = push(rt.engine, rt.store, "bucket", "old-failed.bin")
    old_queued, _ = push(rt.engine, rt.store, "bucket", "old-queued.bin")
    recent_done, _ = push(rt.engine, rt.store, "bucket", "recent-done.bin")
    age(rt.engine, old_done, 10, "Done")
    age(rt.engine, old_failed, 8, "Failed")
    age(rt.engine, old_queued, 30)  # still waiting to be pulled: never expired
    age(rt.engine, recent_done, 2, "Done")
    with Session(rt.engine) as session:
        keys = {f.id: f.store_key for f in session.exec(select(DataFile))}

    from flows.purge import purge

    assert purge(retention_seconds=7 * DAY) == {
        "data_files": 2,
        "transfers": 2,
        "objects": 2,
        "multipart_uploads": 0,
        "continental_copies": 0,
    }
    with Session(rt.engine) as session:
        left = {f.id for f in session.exec(select(DataFile))}
        assert session.exec(select(TransferHistory).where(TransferHistory.transfer_id == old_done_t)).all() == []
    assert left == {old_queued, recent_done}
    for data_file_id, key in keys.items():
        assert rt.store.exists(key) == (data_file_id in left)
    assert purge(retention_seconds=7 * DAY) == {
        "data_files": 0,
        "transfers": 0,
        "objects": 0,
        "multipart_uploads": 0,
        "continental_copies": 0,
    }


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
