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
from catalog.config import create_host
from catalog.database import session_scope
from catalog.events import parse_line
from catalog.models import DataFile, DataTransfer, HostCreate, HostKind, TransferHistory
from catalog.retrieval import claim_fetches
from tasks.discovery import discover_rule
from tasks.retrieval import retrieve
from tests.acquisition.conftest import acquisition_setup, attach_local_site


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
    attach_local_site(rt.engine, remote)
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


@pytest.mark.postgres
@pytest.mark.parametrize("rt", ["postgres"], indirect=True)
def test_two_retrievers_never_fetch_more_files_from_one_host_than_its_bound(rt, prefect_server, tmp_path):
    """Two retriever processes on PostgreSQL share one slow source host with max_connections 2; each
    file also goes to an alias (two transfers, one fetch). Counted at the server and in the database
    many times a second: never more than 2 files in retrieval at once, and the bound is used."""
    import json
    import threading
    import uuid

    from catalog.config import add_alias, create_destination
    from catalog.models import DestinationCreate, Mover
    from catalog.retrieval import files_in_retrieval
    from tests.acquisition.conftest import Source
    from tests.servers.upstream import UpstreamServer

    bound, count = 2, 16
    upstream = UpstreamServer(tmp_path / "upstream").start()
    payloads = {f"f{i:02d}.bin": os.urandom(2000 + i) for i in range(count)}
    for name, data in payloads.items():
        upstream.add(name, data)
        upstream.delay[f"/{name}"] = 0.4
    (upstream.root / "listing.json").write_text(
        json.dumps({"files": [{"href": name, "size": len(data)} for name, data in payloads.items()]})
    )
    host_spec = HostCreate(
        name="provider-slow",
        kind=HostKind.ACQUISITION,
        protocol="http",
        address=upstream.url,
        options={"webdav": False, "max_connections": bound},
    )
    host, rule = acquisition_setup(rt.engine, Source(host_spec, None), directory="listing.json", listing_format="json")
    with session_scope(rt.engine) as session:
        create_destination(session, DestinationCreate(name="backup"))
        add_alias(session, "acq", "backup")

    names = [f"retriever-{uuid.uuid4().hex[:6]}-{i}" for i in (1, 2)]
    env = dict(os.environ) | {"PREFECT_API_URL": prefect_server.api_url, "PDS_ACQUISITION_POLL_SECONDS": "0.05"}
    logs = [(tmp_path / f"{name}.log").open("wb") for name in names]
    processes = [
        subprocess.Popen(  # noqa: S603
            [sys.executable, "-m", "flows.retrieval", "--name", name, "--max-runtime", "120"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=Path(__file__).resolve().parents[2],
        )
        for name, log in zip(names, logs, strict=True)
    ]
    peak_in_database = 0
    sampling = threading.Event()

    def sample() -> None:
        nonlocal peak_in_database
        while not sampling.is_set():
            with Session(rt.engine) as session:
                peak_in_database = max(peak_in_database, files_in_retrieval(session)["provider-slow"])
            time.sleep(0.005)

    sampler = threading.Thread(target=sample, daemon=True)
    try:
        deadline = time.monotonic() + 60
        while True:  # both retrievers are up and polling before there is anything to fetch
            with Session(rt.engine) as session:
                if len(session.exec(select(Mover).where(col(Mover.name).in_(names))).all()) == 2:
                    break
            for process, name in zip(processes, names, strict=True):
                assert process.poll() is None, (tmp_path / f"{name}.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "the retrievers did not start"
            time.sleep(0.1)
        sampler.start()
        assert discover_rule(rt.engine, host, rule, by="test").registered == count
        deadline = time.monotonic() + 60
        while set(statuses(rt.engine)) != {"Queued"}:
            assert time.monotonic() < deadline, statuses(rt.engine)
            time.sleep(0.1)
    finally:
        sampling.set()
        for process in processes:
            process.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
        for log in logs:
            log.close()
        upstream.stop()
    assert len(statuses(rt.engine)) == 2 * count  # each file to acq and to its alias
    # Never passed at the server. (Reaching it there needs two GETs of 0.4 s to overlap, which a busy
    # machine may not give: each fetch starts as its own task run, after its claim.)
    assert 1 <= upstream.peak <= bound
    assert peak_in_database == bound  # the bound is used, and never passed, as the database saw it
    assert all(upstream.gets[f"/{name}"] == 1 for name in payloads)  # one fetch per file, whatever its transfers
    with Session(rt.engine) as session:
        fetchers = set(session.exec(select(TransferHistory.by).where(TransferHistory.action == "fetched")))
    assert fetchers == set(names)  # both retrievers took their share


@pytest.mark.parametrize("source", ["ftps"], indirect=True)
def test_an_ftps_source_is_discovered_and_fetched_whole_over_tls(rt, source):
    """Explicit FTPS (pyftpdlib with TLS, its certificate trusted by the host's cafile): listed,
    registered once, fetched byte for byte."""
    payloads = {f"f{i}.bin": os.urandom(1000 + i * 7000) for i in range(8)}
    for name, data in payloads.items():
        source.put(f"in/{name}", data)
    host, rule = acquisition_setup(rt.engine, source, directory="in")
    assert discover_rule(rt.engine, host, rule, by="test").registered == len(payloads)
    assert discover_rule(rt.engine, host, rule, by="test").registered == 0
    with session_scope(rt.engine) as session:
        fetches = claim_fetches(session, "r1", 100, default_per_host=8)
    assert len(fetches) == len(payloads)
    assert all(retrieve(fetch, "r1") for fetch in fetches)
    assert statuses(rt.engine) == ["Queued"] * len(payloads)
    with Session(rt.engine) as session:
        rows = session.exec(select(DataTransfer, DataFile).join(DataFile)).all()
    for transfer, data_file in rows:
        assert stored_md5(rt, data_file.id) == hashlib.md5(payloads[transfer.target]).hexdigest()


def test_a_host_at_its_bound_does_not_hide_the_files_of_the_others(rt, tmp_path):
    """Sixty files of a host that takes one fetch at a time are first in the queue; another host's
    file is claimed by the next claim, not after the sixty."""
    from catalog.models import HostCreate
    from tests.acquisition.conftest import Source, _local_source

    busy = _local_source(
        HostCreate(
            name="provider-busy",
            kind=HostKind.ACQUISITION,
            protocol="file",
            address=str(tmp_path / "busy"),
            options={"max_connections": 1},
        ),
        tmp_path / "busy",
    )
    other: Source = _local_source(
        HostCreate(name="provider-other", kind=HostKind.ACQUISITION, protocol="file", address=str(tmp_path / "other")),
        tmp_path / "other",
    )
    for i in range(60):
        busy.put(f"f{i:02d}.dat", b"b")
    other.put("o.dat", b"o")
    busy_host, busy_rule = acquisition_setup(rt.engine, busy)
    with session_scope(rt.engine) as session:
        create_host(session, other.host, known_protocols=frozenset({"file"}))
    from catalog.acquisition import ListingRuleCreate, add_rule
    from catalog.models import Host

    with session_scope(rt.engine) as session:
        other_rule = add_rule(session, "provider-other", ListingRuleCreate(destination="acq"))
        other_host = session.get(Host, "provider-other")
    assert discover_rule(rt.engine, busy_host, busy_rule, by="test").registered == 60
    assert discover_rule(rt.engine, other_host, other_rule, by="test").registered == 1
    with session_scope(rt.engine) as session:
        first = claim_fetches(session, "r1", 2, default_per_host=4)
    with session_scope(rt.engine) as session:
        second = claim_fetches(session, "r1", 2, default_per_host=4)
    assert [f.host for f in first] == ["provider-busy"]  # its bound: one at a time
    assert [f.host for f in second] == ["provider-other"]
