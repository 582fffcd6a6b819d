"""Dissemination end to end through the mover, on real servers: a primary host that stops mid-run
hands over to the fallback, every attempt leaves its UPH or ERR line, and a destination with a topic
announces each delivered file on a real MQTT broker — retained for subscribers that come later."""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from collections import Counter

from catalog.database import session_scope
from catalog.events import parse_line
from catalog.models import DestinationState, HostCreate
from catalog.transfers import transfer_public
from tasks import reporting
from tests.factories import destination, local_host, push
from tests.flows.test_mover import public
from tests.servers.sshd import SshServer
from tests.tasks.test_notify import Subscriber


def events(path) -> list[tuple[str, dict[str, str]]]:
    if not path.exists():
        return []
    return [(category, dict(pairs)) for category, pairs in map(parse_line, path.read_text().splitlines())]


def test_a_primary_that_stops_mid_run_hands_over_to_the_fallback(rt, tmp_path, tmp_path_factory):  # noqa: F811
    primary = SshServer(tmp_path_factory.mktemp("primary-sshd")).start()
    fallback_dir = tmp_path / "fallback"
    destination(
        rt.engine,
        "ha-site",
        host=HostCreate(
            name="primary",
            protocol="sftp",
            address=f"{primary.host}:{primary.port}",
            login=primary.username,
            directory=str(primary.data_dir / "in"),
            # slow enough that the server stops while files are still moving
            options={"key_filename": str(primary.client_key_path), "max_rate": 400_000, "timeout": 5},
        ),
        max_parallel_transfers=2,
        start_frequency_seconds=0,
    )
    with session_scope(rt.engine) as session:
        from catalog.config import attach_host, create_host

        create_host(session, local_host("fallback", str(fallback_dir)), known_protocols=frozenset({"file"}))
        attach_host(session, "ha-site", "fallback", "dissemination")
    files = {f"f{i:02}.bin": bytes([i]) * 200_000 for i in range(12)}
    ids = {name: push(rt.engine, rt.store, "ha-site", name, data=data)[1][0] for name, data in files.items()}

    def stop_primary_after_three_are_done() -> None:
        while sum(public(rt, tid).status == "Done" for tid in ids.values()) < 3:
            time.sleep(0.05)
        primary.stop()

    stopper = threading.Thread(target=stop_primary_after_three_are_done, daemon=True)
    stopper.start()
    try:
        from flows.mover import mover

        mover(name="ha-mover", stop_when_idle=True)
    finally:
        primary.stop()
    stopper.join(5)

    served = {}
    for name, tid in ids.items():
        transfer = public(rt, tid)
        assert transfer.status == "Done", (name, transfer.error)
        served[name] = transfer.host
        where = primary.data_dir / "in" if transfer.host == "primary" else fallback_dir
        assert (where / name).read_bytes() == files[name], f"{name} is not whole on {transfer.host}"
    assert 3 <= list(served.values()).count("primary") < len(files)
    assert "fallback" in served.values()
    for name, host in served.items():  # never a partial copy under the final name on the primary
        on_primary = primary.data_dir / "in" / name
        assert host != "fallback" or not on_primary.exists() or on_primary.read_bytes() == files[name]
    with session_scope(rt.engine) as session:
        state = session.get(DestinationState, "ha-site")
        assert state.current_host == "fallback"  # next_and_stay: later transfers start there

    log = events(rt.settings.data_dir / "logs" / "events.log")
    uph = [fields for category, fields in log if category == "UPH"]
    err = [fields for category, fields in log if category == "ERR"]
    assert sorted(int(f["DataTransferId"]) for f in uph) == sorted(ids.values())
    assert all(f["StatusCode"] == "DONE" for f in uph)
    assert {f["TransferProtocol"] for f in uph} == {"sftp", "file"}
    assert err and all(f["TransferProtocol"] == "sftp" and f["Message"] != "-" for f in err), err


def test_a_delivered_file_is_announced_and_a_late_subscriber_still_gets_it(rt, tmp_path, mosquitto, monkeypatch):  # noqa: F811
    monkeypatch.setattr(rt.settings, "mqtt_url", mosquitto.url)
    reporting.publisher.cache_clear()
    remote = tmp_path / "site"
    destination(
        rt.engine,
        "notified",
        host=local_host("nh", str(remote)),
        mqtt_topic="pds/$destination/$name",
        mqtt_retain=True,
        mqtt_expiry_seconds=3600,
    )
    data = b"GRIB" * 10_000
    (tid,) = push(rt.engine, rt.store, "notified", "grib/today.grib", data=data)[1]
    from flows.mover import mover

    mover(name="notify-mover", stop_when_idle=True)
    assert public(rt, tid).status == "Done"

    late = Subscriber(mosquitto.url, "pds/notified/#")  # connects after the publish
    try:
        message = late.receive(timeout=10)
    finally:
        late.close()
    assert message.topic == "pds/notified/today.grib" and message.retain
    body = json.loads(message.payload)
    assert body["md5"] == hashlib.md5(data).hexdigest() and body["size"] == len(data)
    assert body["transfer_id"] == tid and body["destination"] == "notified"
    assert body["url"] == f"file://{remote}/grib/today.grib"
    assert message.properties.MessageExpiryInterval <= 3600
    with session_scope(rt.engine) as session:
        assert transfer_public(session, tid).host == "nh"


def test_a_server_failing_a_fifth_of_its_operations_loses_and_duplicates_nothing(
    rt,  # noqa: F811
    tmp_path,
    tmp_path_factory,
):
    """1,000 transfers to an SFTP server that fails 20 % of its file operations at random: each ends
    Done (whole, once) or Failed after exactly the attempts its policy allows; none is lost."""
    if rt.settings.resolved_database_url().startswith("postgresql"):
        import pytest

        pytest.skip("the policy is the same on PostgreSQL; once on SQLite is enough for 1,000 transfers")
    from tests.servers.sftp_password import PasswordSftpServer

    flaky = PasswordSftpServer(tmp_path_factory.mktemp("flaky-sftp"), failure_rate=0.2).start()
    try:
        destination(
            rt.engine,
            "flaky",
            host=HostCreate(
                name="flaky-host",
                protocol="sftp",
                address=f"{flaky.host}:{flaky.port}",
                login=flaky.username,
                password=flaky.password,
                directory="/in",
                options={"known_hosts": str(flaky.known_hosts_path)},
            ),
            max_parallel_transfers=1000,
            max_starts=3,
            start_frequency_seconds=0,
            max_requeue=1,
        )
        files = {f"n{i:04}.bin": os.urandom(1024) for i in range(1000)}
        ids = {name: push(rt.engine, rt.store, "flaky", name, data=data)[1][0] for name, data in files.items()}
        from flows.mover import mover

        mover(name="flaky-mover", stop_when_idle=True)
    finally:
        flaky.stop()

    outcomes = {"Done": 0, "Failed": 0}
    uph = Counter(
        int(fields["DataTransferId"])
        for category, fields in events(rt.settings.data_dir / "logs" / "events.log")
        if category == "UPH"
    )
    for name, tid in ids.items():
        transfer = public(rt, tid)
        assert transfer.status in outcomes, (name, transfer.status, transfer.error)  # none left behind
        outcomes[transfer.status] += 1
        attempts = sum(h.action == "claim" for h in transfer.history)
        at_site = flaky.data_dir / "in" / name
        if transfer.status == "Done":
            assert at_site.read_bytes() == files[name]
            assert uph[tid] == 1  # delivered once
            assert attempts <= 6
        else:
            assert attempts == 6, transfer.history  # 3 starts, requeued once, 3 more starts
            assert "failed after 1 requeue(s) of 3 start(s): " in transfer.error
            assert "injected failure" in transfer.error  # the server's own words
            assert not at_site.exists()
    leftovers = [p.name for p in (flaky.data_dir / "in").iterdir() if p.name.startswith(".")]
    assert outcomes["Done"] > 0 and sum(outcomes.values()) == len(files), outcomes
    assert len(leftovers) <= outcomes["Failed"], leftovers  # at most one temporary file per failed transfer


def test_small_files_reach_an_s3_server_that_checks_signatures(rt, tmp_path_factory, monkeypatch):  # noqa: F811
    """A batch of small files goes as PutObjects signed by pds (`blocks.s3_put`), none through botocore:
    SeaweedFS with one key pair refuses a wrong signature, so each object there was signed right."""
    from blocks.s3 import _DeadlineS3FileSystem
    from tests.servers.seaweedfs import SeaweedS3Server

    through_botocore: list[str] = []
    call_s3 = _DeadlineS3FileSystem._call_s3

    async def counted(self, method, *args, **kwargs):
        through_botocore.append(method)
        return await call_s3(self, method, *args, **kwargs)

    monkeypatch.setattr(_DeadlineS3FileSystem, "_call_s3", counted)

    server = SeaweedS3Server(tmp_path_factory.mktemp("seaweed"), check_signatures=True).start()
    try:
        server.create_bucket("site")
        destination(
            rt.engine,
            "s3-site",
            host=HostCreate(
                name="seaweed",
                protocol="s3",
                address=server.endpoint_url,
                login=server.access_key,
                password=server.secret_key,
                directory="site/in",
                options={"region": server.region},
            ),
            max_parallel_transfers=100,
        )
        files = {f"s{i:03}.bin": os.urandom(4096 + i) for i in range(40)}
        ids = {name: push(rt.engine, rt.store, "s3-site", name, data=data)[1][0] for name, data in files.items()}
        from flows.mover import mover

        mover(name="s3-mover", stop_when_idle=True)
        client = server.client()
        for name, tid in ids.items():
            assert public(rt, tid).status == "Done", public(rt, tid).error
            stored = client.get_object(Bucket="site", Key=f"in/{name}")
            assert stored["Body"].read() == files[name]
            assert stored["ETag"].strip('"') == hashlib.md5(files[name]).hexdigest()
        assert "put_object" not in through_botocore
    finally:
        server.stop()


def test_a_transfer_stopped_while_its_batch_runs_is_not_sent(rt, sshd, monkeypatch):  # noqa: F811
    """Small files of a batch are checked against stops in one query per check, not one per file: a
    transfer stopped after the claim, before its turn, is neither sent nor recorded Done."""
    import pytest

    from catalog import attempts
    from catalog.errors import RetryOnSameHost
    from catalog.operations import stop
    from catalog.transfers import claim
    from flows.dispatch import _deliveries
    from tasks import transfer

    site = sshd.data_dir / f"fenced-{os.getpid()}-{time.monotonic_ns()}"
    destination(
        rt.engine,
        "fenced",
        host=HostCreate(
            name="fenced-host",
            protocol="sftp",
            address=f"{sshd.host}:{sshd.port}",
            login=sshd.username,
            directory=str(site),
            options={"key_filename": str(sshd.client_key_path)},
        ),
        max_parallel_transfers=10,
    )
    files = {f"s{i}.bin": os.urandom(2000 + i) for i in range(3)}
    ids = [push(rt.engine, rt.store, "fenced", name, data=data)[1][0] for name, data in files.items()]
    with session_scope(rt.engine) as session:
        assert sorted(t.id for t in claim(session, "fence-mover", 10)) == ids
    deliveries = _deliveries(ids, "fence-mover")
    with session_scope(rt.engine) as session:
        stop(session, ids[1], by="operator")
    monkeypatch.setattr(transfer, "RECORD_EVERY", 0.0)  # the batch checks before every file
    with pytest.raises(RetryOnSameHost, match="1 of 3 files failed"):
        transfer.send_batch.fn(deliveries, "fence-mover", len(deliveries))
    assert [public(rt, tid).status for tid in ids] == ["Done", "Stopped", "Done"]
    assert sorted(p.name for p in site.iterdir()) == ["s0.bin", "s2.bin"]  # nor any temporary file
    assert (site / "s2.bin").read_bytes() == files["s2.bin"]
    with session_scope(rt.engine) as session:  # the batch's Done attempts are closed together
        closed = [attempts.of_transfer(session, tid) for tid in ids]
    assert [[(a.number, a.outcome) for a in of] for of in closed] == [[(1, "Done")], [(1, "Stopped")], [(1, "Done")]]
    assert [closed[i][0].bytes_sent for i in (0, 2)] == [2000, 2002]
    assert all(of[0].ended_at is not None for of in closed)
