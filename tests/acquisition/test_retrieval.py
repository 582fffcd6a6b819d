"""Retrieval: registered files go Preset → Fetching → Queued into the Data Store, whole, with a RET
line each; failures end Failed with the reason (or Preset again); a SIGKILLed retriever's files are
fetched again after a restart; acquired files are then disseminated (acquire-and-forward)."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlmodel import Session, col, select

from catalog.acquisition import SourceFile
from catalog.config import attach_host, create_host
from catalog.database import session_scope
from catalog.events import parse_line
from catalog.models import DataFile, DataTransfer, HostCreate, HostKind, TransferHistory
from catalog.retrieval import claim_fetches
from tasks.discovery import discover_rule
from tasks.retrieval import retrieve
from tests.acquisition.conftest import acquisition_setup


def statuses(engine) -> list[str]:
    with Session(engine) as session:
        return list(session.exec(select(DataTransfer.status).order_by(col(DataTransfer.id))))


def stored_md5(rt, data_file_id: int) -> str:
    with Session(rt.engine) as session:
        data_file = session.get(DataFile, data_file_id)
    assert data_file is not None and data_file.store_key
    digest = hashlib.md5(usedforsecurity=False)
    for chunk in rt.store.iter_chunks(data_file.store_key):
        digest.update(chunk)
    assert digest.hexdigest() == data_file.md5
    return digest.hexdigest()


def history(engine, transfer_id: int) -> list[tuple[str, str]]:
    with Session(engine) as session:
        rows = session.exec(
            select(TransferHistory).where(TransferHistory.transfer_id == transfer_id).order_by(col(TransferHistory.id))
        )
        return [(h.action, h.to_status) for h in rows]


def event_lines(tmp_path: Path, category: str) -> list[dict[str, str]]:
    path = tmp_path / "events.log"
    lines = path.read_text().splitlines() if path.exists() else []
    parsed = [parse_line(line) for line in lines]
    return [dict(pairs) for cat, pairs in parsed if cat == category]


@pytest.mark.parametrize("source", ["sftp"], indirect=True)
def test_discovered_files_are_fetched_whole_then_forwarded_to_the_destinations_host(
    rt, source, prefect_server, tmp_path
):
    payloads = {f"f{i}.bin": os.urandom(1000 + i * 50_000) for i in range(6)}
    for name, data in payloads.items():
        source.put(f"in/{name}", data)
    host, rule = acquisition_setup(rt.engine, source, directory="in")
    remote = tmp_path / "site"
    with session_scope(rt.engine) as session:
        create_host(
            session,
            HostCreate(name="site-host", protocol="file", address=str(remote)),
            known_protocols=frozenset({"file"}),
        )
        attach_host(session, "acq", "site-host", HostKind.DISSEMINATION)
    assert discover_rule(rt.engine, host, rule, by="test").registered == 6

    from flows.mover import mover
    from flows.retrieval import retrieval

    counts = retrieval(name="retriever-test", stop_when_idle=True)
    assert counts["files"] == 6
    assert statuses(rt.engine) == ["Queued"] * 6
    with Session(rt.engine) as session:
        rows = session.exec(select(DataTransfer, DataFile).join(DataFile)).all()
    for transfer, data_file in rows:
        assert stored_md5(rt, data_file.id) == hashlib.md5(payloads[transfer.target]).hexdigest()
        assert data_file.size == len(payloads[transfer.target]) and data_file.adler32
        assert [a for a, _ in history(rt.engine, transfer.id)] == ["create", "fetch", "fetched"]
    ret = event_lines(tmp_path, "RET")
    assert len(ret) == 6
    assert {line["HostId"] for line in ret} == {host.name}
    assert {line["TransferProtocol"] for line in ret} == {"sftp"}
    assert {line["MoverName"] for line in ret} == {"retriever-test"}
    assert all("Status" not in line for line in ret)

    mover(name="mover-test", stop_when_idle=True)
    assert statuses(rt.engine) == ["Done"] * 6
    for name, data in payloads.items():
        assert (remote / name).read_bytes() == data
    runs = prefect_server.flow_runs(flow_runs={"name": {"any_": ["retrieval retriever-test"]}})
    assert runs and runs[0]["state_type"] == "COMPLETED"


def test_a_missing_source_file_fails_with_the_reason_and_a_ret_line(rt, local_source, tmp_path):
    local_source.put("gone.dat", b"1")
    host, rule = acquisition_setup(rt.engine, local_source)
    discover_rule(rt.engine, host, rule, by="test")
    (local_source.local_root / "gone.dat").unlink()
    with session_scope(rt.engine) as session:
        (fetch,) = claim_fetches(session, "r1", 10, default_per_host=4)
    assert statuses(rt.engine) == ["Fetching"]
    assert retrieve(fetch, "r1") is False
    with Session(rt.engine) as session:
        transfer = session.exec(select(DataTransfer)).one()
    assert transfer.status == "Failed"
    assert "not found" in (transfer.error or "")
    (line,) = event_lines(tmp_path, "RET")
    assert line["Status"] == "false" and "not found" in line["Message"]


def test_requeue_on_failure_puts_the_file_back_to_preset_until_max_starts(rt, local_source):
    local_source.put("flaky.dat", b"1")
    host, rule = acquisition_setup(rt.engine, local_source, requeue_on_failure=True)
    with session_scope(rt.engine) as session:
        from catalog.config import update_destination

        update_destination(session, "acq", {"max_starts": 2, "start_frequency_seconds": 0})
    discover_rule(rt.engine, host, rule, by="test")
    (local_source.local_root / "flaky.dat").unlink()
    for expected in ("Preset", "Failed"):
        with session_scope(rt.engine) as session:
            (fetch,) = claim_fetches(session, "r1", 10, default_per_host=4)
        retrieve(fetch, "r1")
        assert statuses(rt.engine) == [expected]


def test_a_file_that_changed_size_since_listing_is_not_stored(rt, local_source):
    local_source.put("moving.dat", b"1" * 10)
    host, rule = acquisition_setup(rt.engine, local_source)
    discover_rule(rt.engine, host, rule, by="test")
    local_source.put("moving.dat", b"1" * 20)
    with session_scope(rt.engine) as session:
        (fetch,) = claim_fetches(session, "r1", 10, default_per_host=4)
    assert retrieve(fetch, "r1") is False
    with Session(rt.engine) as session:
        transfer = session.exec(select(DataTransfer)).one()
        data_file = session.get(DataFile, transfer.data_file_id)
    assert transfer.status == "Failed" and "changed while it was read" in (transfer.error or "")
    assert data_file is not None and data_file.store_key is None


def test_fetches_from_one_host_are_bounded_and_on_demand_files_never_claimed(rt, local_source):
    for i in range(10):
        local_source.put(f"f{i}.dat", b"1")
    local_source.host.options = {"max_connections": 3}
    host, rule = acquisition_setup(rt.engine, local_source)
    discover_rule(rt.engine, host, rule, by="test")
    with session_scope(rt.engine) as session:
        first = claim_fetches(session, "r1", 100, default_per_host=8)
    with session_scope(rt.engine) as session:
        second = claim_fetches(session, "r2", 100, default_per_host=8)
    assert (len(first), len(second)) == (3, 0)
    retrieve(first[0], "r1")
    with session_scope(rt.engine) as session:
        third = claim_fetches(session, "r2", 100, default_per_host=8)
    assert len(third) == 1
    with session_scope(rt.engine) as session:
        for source_file in session.exec(select(SourceFile)):
            source_file.on_demand = True
            session.add(source_file)
    with session_scope(rt.engine) as session:
        assert claim_fetches(session, "r3", 100, default_per_host=8) == []


@pytest.mark.parametrize("source", ["sftp"], indirect=True)
def test_sigkill_during_retrieval_then_restart_fetches_every_file_again_whole(rt, source, prefect_server, tmp_path):
    sizes = {f"big{i}.bin": 150 * 1024 * 1024 for i in range(2)} | {f"small{i}.bin": 4096 for i in range(4)}
    digests = {}
    for name, size in sizes.items():
        data = os.urandom(1024 * 1024) * (size // (1024 * 1024)) if size >= 1024 * 1024 else os.urandom(size)
        source.put(f"in/{name}", data)
        digests[name] = hashlib.md5(data).hexdigest()
        del data
    host, rule = acquisition_setup(rt.engine, source, directory="in")
    assert discover_rule(rt.engine, host, rule, by="test").registered == len(sizes)
    env = dict(os.environ) | {"PREFECT_API_URL": prefect_server.api_url}
    log = (tmp_path / "retriever.log").open("wb")
    process = subprocess.Popen(  # noqa: S603
        [sys.executable, "-m", "flows.retrieval", "--name", "retriever-killed"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=Path(__file__).resolve().parents[2],
    )
    tmp_objects = rt.store.fs._strip_protocol(rt.store.root) + "/tmp"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            partial = (
                [p for p in Path(tmp_objects).glob("*") if p.stat().st_size > 1024 * 1024]
                if Path(tmp_objects).exists()
                else []
            )
            if partial and "Fetching" in statuses(rt.engine):
                break
            assert process.poll() is None, (tmp_path / "retriever.log").read_text()[-3000:]
            time.sleep(0.05)
        else:
            pytest.fail("the retriever never started fetching")
        process.send_signal(signal.SIGKILL)
        process.wait(10)
    finally:
        if process.poll() is None:
            process.kill()
        log.close()
    assert "Fetching" in statuses(rt.engine)

    from flows.retrieval import retrieval

    counts = retrieval(name="retriever-killed", stop_when_idle=True)
    assert counts["recovered"] >= 1
    assert statuses(rt.engine) == ["Queued"] * len(sizes)
    with Session(rt.engine) as session:
        rows = session.exec(select(DataTransfer, DataFile).join(DataFile)).all()
    for transfer, data_file in rows:
        assert stored_md5(rt, data_file.id) == digests[transfer.target]
        assert data_file.size == sizes[transfer.target]


def test_a_fetched_file_is_announced_once_where_the_destination_asks_and_a_failed_one_never(
    rt, local_source, mosquitto, monkeypatch
):
    import json
    import uuid

    from catalog.config import update_destination
    from catalog.outbox import pending
    from tasks import reporting
    from tests.tasks.test_notify import Subscriber

    monkeypatch.setattr(rt.settings, "mqtt_url", mosquitto.url)
    reporting.publisher.cache_clear()
    run = uuid.uuid4().hex[:8]
    data = os.urandom(70_000)
    local_source.put("obs/synop.bufr", data)
    local_source.put("obs/gone.bufr", b"1")
    host, rule = acquisition_setup(rt.engine, local_source, directory="obs")
    with session_scope(rt.engine) as session:
        update_destination(session, "acq", {"mqtt_topic": f"pds/{run}/$destination/$name", "mqtt_on_arrival": True})
    discover_rule(rt.engine, host, rule, by="test")
    (local_source.local_root / "obs" / "gone.bufr").unlink()
    subscriber = Subscriber(mosquitto.url, f"pds/{run}/#")
    try:
        with session_scope(rt.engine) as session:
            fetches = claim_fetches(session, "r1", 10, default_per_host=4)
        assert sorted(retrieve(fetch, "r1") for fetch in fetches) == [False, True]
        message = subscriber.receive(timeout=10)
        assert subscriber.nothing_within(1.0)  # once, and nothing for the file that failed
    finally:
        subscriber.close()
    assert message.topic == f"pds/{run}/acq/synop.bufr"
    body = json.loads(message.payload)
    assert body["event"] == "arrival" and body["size"] == len(data)
    assert body["md5"] == hashlib.md5(data).hexdigest()
    assert body["download_url"] == f"{rt.settings.resolved_public_url()}/portal/acq/{body['name']}"
    with Session(rt.engine) as session:
        assert pending(session) == 0  # published by the retriever itself, right after its commit
        (fetched,) = session.exec(select(DataFile).where(col(DataFile.store_key).is_not(None))).all()
    assert fetched.sha512 == hashlib.sha512(data).hexdigest()
