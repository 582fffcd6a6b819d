"""Replication to a second local directory and an S3 bucket (a real S3 server): every data file
copied and verified, a CPY line each; reads fall back to a replica when the primary copy is gone;
the purge removes the replicas too."""

from __future__ import annotations

import hashlib
import json
import uuid
from datetime import timedelta

import sqlalchemy as sa
from sqlmodel import Session, select

from catalog.events import parse_line
from catalog.models import DataFile, DataTransfer, utcnow
from catalog.replication import Replica
from tasks import runtime as runtime_module
from tests.factories import destination, push


def test_every_file_is_replicated_verified_and_read_back_from_a_replica(
    rt, s3_server, prefect_server, tmp_path, monkeypatch
):
    bucket = f"r-{uuid.uuid4().hex[:12]}"
    s3_server.create_bucket(bucket)
    s3_options = {
        "endpoint_url": s3_server.endpoint_url,
        "key": s3_server.access_key,
        "secret": s3_server.secret_key,
        "client_kwargs": {"region_name": s3_server.region},
    }
    replicas = [{"url": str(tmp_path / "replica")}, {"url": f"s3://{bucket}/pds", "options": s3_options}]
    monkeypatch.setenv("PDS_REPLICAS", json.dumps(replicas))
    runtime_module.runtime.cache_clear()
    rt = runtime_module.runtime()
    destination(rt.engine, "bucket")
    payloads = {}
    for i in range(3):
        data = bytes([i]) * (1000 + i)
        data_file_id, _ = push(rt.engine, rt.store, "bucket", f"f{i}.bin", data=data)
        payloads[data_file_id] = data

    from flows.replication import replication

    assert replication() == {"replicated": 6, "failed": 0}
    assert replication() == {"replicated": 0, "failed": 0}  # nothing left to copy
    with Session(rt.engine) as session:
        rows = session.exec(select(Replica)).all()
        files = {f.id: f for f in session.exec(select(DataFile))}
    assert len(rows) == 6 and {r.location for r in rows} == {r.location() for r in rt.store.replicas}
    for replica in rt.store.replicas:
        for data_file_id, data in payloads.items():
            stored = b"".join(replica.iter_chunks(files[data_file_id].store_key))
            assert hashlib.md5(stored).hexdigest() == hashlib.md5(data).hexdigest()
    lines = [parse_line(line) for line in (tmp_path / "events.log").read_text().splitlines()]
    cpy = [dict(pairs) for category, pairs in lines if category == "CPY"]
    assert len(cpy) == 6 and all(line["Status"] == "true" and line["Action"] == "replicate" for line in cpy)

    # The primary copy is lost: reads come from a replica.
    lost = next(iter(payloads))
    rt.store.delete(files[lost].store_key)
    assert b"".join(rt.store.iter_chunks(files[lost].store_key)) == payloads[lost]

    # The purge removes the replicas with the data file.
    then = utcnow() - timedelta(days=30)
    with rt.engine.begin() as connection:
        connection.execute(sa.update(DataFile.__table__).values(created_at=then, arrived_at=then))
        connection.execute(sa.update(DataTransfer.__table__).values(status="Done", updated_at=then))
    from flows.purge import purge

    assert purge(retention_seconds=86400) == {
        "stopped": 0,
        "data_files": 3,
        "transfers": 3,
        "objects": 2 + 3 * 2,
        "multipart_uploads": 0,
        "continental_copies": 0,
    }
    for replica in rt.store.replicas:
        assert not any(replica.exists(f.store_key) for f in files.values())
