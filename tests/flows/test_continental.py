"""The continental mover flow in process against a real Prefect server: it pre-replicates a file to its
proxy host's store location and sends it from there; a file it failed to copy (a CPY line with
Status=false) is sent by a main mover from the Data Store even though the continental mover is alive."""

from __future__ import annotations

import os
import time
import uuid

import pytest

from catalog.config import attach_host, create_host
from catalog.continental import proxy_replicas
from catalog.database import session_scope
from catalog.events import parse_line
from catalog.models import DataFile, Host, HostCreate, HostKind
from catalog.transfers import heartbeat, transfer_public
from tests.factories import destination, local_host, push


def proxy(rt, name, address, destination_name, *, protocol="file", **fields):
    with session_scope(rt.engine) as session:
        create_host(
            session,
            HostCreate(name=name, kind=HostKind.PROXY, protocol=protocol, address=address, **fields),
            known_protocols=frozenset({"file", "s3"}),
        )
        attach_host(session, destination_name, name, HostKind.PROXY)


def events(rt, category):
    lines = (rt.settings.data_dir / "logs" / "events.log").read_text().splitlines()
    return [dict(parse_line(line)[1]) for line in lines if line.startswith(category + ";")]


def public(rt, transfer_id):
    with session_scope(rt.engine) as session:
        return transfer_public(session, transfer_id)


def test_a_continental_mover_sends_from_its_copy_and_main_movers_send_what_it_failed_to_copy(rt, tmp_path):
    from flows.mover import mover
    from tasks.continental import pre_replication_pass

    destination(rt.engine, "far", host=local_host("far-disk", str(tmp_path / "far")))
    destination(rt.engine, "broken-far", host=local_host("broken-disk", str(tmp_path / "broken-far")))
    proxy(rt, "eu-west", str(tmp_path / "eu-west"), "far")
    (tmp_path / "a-file").write_bytes(b"not a directory")
    proxy(rt, "us-east", str(tmp_path / "a-file" / "store"), "broken-far")
    (good,) = push(rt.engine, rt.store, "far", "good.bin", data=b"g" * 5000)[1]
    (bad,) = push(rt.engine, rt.store, "broken-far", "bad.bin", data=b"b" * 5000)[1]

    # Both continental movers are alive; the main mover leaves their destinations alone.
    with session_scope(rt.engine) as session:
        heartbeat(session, "continental-eu", starting=True, proxy_host="eu-west")
        heartbeat(session, "continental-us", starting=True, proxy_host="us-east")
    assert mover(name="main-1", stop_when_idle=True)["transfers"] == 0

    counts = mover(name="continental-eu", proxy_host="eu-west", stop_when_idle=True)
    assert counts["transfers"] == 1
    sent = public(rt, good)
    assert (sent.status, sent.mover, sent.proxy_host) == ("Done", "continental-eu", "eu-west")
    assert (tmp_path / "far" / "good.bin").read_bytes() == b"g" * 5000
    (copied,) = [e for e in events(rt, "CPY") if e["DataTransferId"] == str(good)]
    assert (copied["Status"], copied["Action"], copied["Caller"]) == ("true", "proxy", "continental-eu")
    # Its one transfer is Done: the next pass removes the copy (if the run's last pass did not already).
    pre_replication_pass("eu-west", "continental-eu")
    with session_scope(rt.engine) as session:
        assert proxy_replicas(session, "eu-west") == []
    assert not [p for p in (tmp_path / "eu-west").rglob("*") if p.is_file()]

    # The us-east mover cannot write its store: its CPY line says so, and the main mover sends the file.
    mover(name="continental-us", proxy_host="us-east", stop_when_idle=True)
    (failed,) = [e for e in events(rt, "CPY") if e["DataTransferId"] == str(bad)]
    assert (failed["Status"], failed["Action"], failed["Caller"]) == ("false", "proxy", "continental-us")
    assert failed["Message"] != "-"
    assert public(rt, bad).status == "Queued"
    with session_scope(rt.engine) as session:
        heartbeat(session, "continental-us", proxy_host="us-east")  # still alive
    assert mover(name="main-1", stop_when_idle=True)["transfers"] == 1
    taken = public(rt, bad)
    assert (taken.status, taken.mover, taken.proxy_host) == ("Done", "main-1", None)
    assert "(its pre-replication of the file failed)" in taken.history[-2].reason
    assert (tmp_path / "broken-far" / "bad.bin").read_bytes() == b"b" * 5000
    uph = {e["DataTransferId"]: e for e in events(rt, "UPH")}
    assert (uph[str(good)]["Proxied"], uph[str(good)]["ProxyHost"]) == ("true", "eu-west")
    assert (uph[str(bad)]["Proxied"], uph[str(bad)]["ProxyHost"]) == ("false", "-")


def test_a_mover_for_an_unknown_proxy_host_ends_at_once(rt):
    from catalog.errors import InvalidInput
    from flows.mover import mover

    with pytest.raises(InvalidInput, match="no active host 'nowhere'"):
        mover(name="continental-x", proxy_host="nowhere", stop_when_idle=True)


def test_a_continental_store_in_an_s3_bucket(rt, s3_server, tmp_path):
    from flows.mover import mover
    from tasks.continental import continental_store, pre_replication_pass

    bucket = f"continental-{uuid.uuid4().hex[:8]}"
    s3_server.create_bucket(bucket)
    destination(rt.engine, "far", host=local_host("far-disk", str(tmp_path / "far")))
    proxy(
        rt,
        "eu-west",
        s3_server.endpoint_url,
        "far",
        protocol="s3",
        directory=f"{bucket}/pds",
        login=s3_server.access_key,
        password=s3_server.secret_key,
        options={"region": s3_server.region},
    )
    data = os.urandom(300_000)
    (tid,) = push(rt.engine, rt.store, "far", "f.bin", data=data, delay_seconds=2)[1]
    assert pre_replication_pass("eu-west", "continental-eu") == {"pre_replicated": 1, "failed": 0, "removed": 0}
    with session_scope(rt.engine) as session:
        data_file = session.get(DataFile, public(rt, tid).data_file_id)
        host = session.get(Host, "eu-west")
        session.expunge(host)
    assert continental_store(host).fs.cat(f"{bucket}/pds/{data_file.store_key}") == data
    rt.store.delete(data_file.store_key)  # only the copy in the bucket is left to send from
    deadline = time.monotonic() + 30
    while public(rt, tid).status != "Done" and time.monotonic() < deadline:
        mover(name="continental-eu", proxy_host="eu-west", stop_when_idle=True)
        time.sleep(0.5)
    assert (public(rt, tid).status, public(rt, tid).proxy_host) == ("Done", "eu-west")
    assert (tmp_path / "far" / "f.bin").read_bytes() == data
    pre_replication_pass("eu-west", "continental-eu")  # its transfer is Done: the copy goes
    assert not continental_store(host).fs.exists(f"{bucket}/pds/{data_file.store_key}")


def test_a_failed_pre_replication_is_tried_again_after_the_retry_time(rt, tmp_path):
    from tasks.continental import pre_replication_pass

    destination(rt.engine, "far", host=local_host("far-disk", str(tmp_path / "far")))
    blocker = tmp_path / "eu-west"
    blocker.write_bytes(b"a file where the store location should be")
    proxy(rt, "eu-west", str(blocker / "store"), "far", options={"retry_seconds": 1})
    (transfer_id,) = push(rt.engine, rt.store, "far", "late.bin", data=b"l" * 5000)[1]

    assert pre_replication_pass("eu-west", "continental-eu") == {"pre_replicated": 0, "failed": 1, "removed": 0}
    # Within the retry time the failure stands: nothing is copied again.
    assert pre_replication_pass("eu-west", "continental-eu") == {"pre_replicated": 0, "failed": 0, "removed": 0}

    blocker.unlink()  # the location is writable again
    time.sleep(1.1)
    assert pre_replication_pass("eu-west", "continental-eu") == {"pre_replicated": 1, "failed": 0, "removed": 0}
    with session_scope(rt.engine) as session:
        (replica,) = proxy_replicas(session, "eu-west")
        assert (replica.ok, replica.message) == (True, None)
    copies = [e for e in events(rt, "CPY") if e["DataTransferId"] == str(transfer_id)]
    assert [e["Status"] for e in copies] == ["false", "true"]
    assert [p.read_bytes() for p in (blocker / "store").rglob("*") if p.is_file()] == [b"l" * 5000]


@pytest.mark.parametrize(
    ("options", "reason"),
    [
        ({"lead_seconds": "an hour"}, "lead_seconds must be a number of seconds, not 'an hour'"),
        ({"retry_seconds": -5}, "retry_seconds must not be negative"),
    ],
)
def test_a_proxy_host_with_bad_timing_options_is_refused_when_created(rt, tmp_path, options, reason):
    from catalog.errors import InvalidInput

    with session_scope(rt.engine) as session, pytest.raises(InvalidInput, match=reason):
        create_host(
            session,
            HostCreate(name="eu-west", kind=HostKind.PROXY, protocol="file", address=str(tmp_path), options=options),
            known_protocols=frozenset({"file"}),
        )
    with session_scope(rt.engine) as session:
        assert session.get(Host, "eu-west") is None


def test_purge_removes_copies_a_silent_continental_mover_left(rt, tmp_path):
    """The continental mover copied a file and was never seen again; a main mover sent the file from
    the Data Store. Purge removes the copy it left (and leaves a location it cannot see alone)."""
    from flows.mover import mover
    from flows.purge import purge
    from tasks.continental import pre_replication_pass

    destination(rt.engine, "far", host=local_host("far-disk", str(tmp_path / "far")))
    proxy(rt, "eu-west", str(tmp_path / "eu-west"), "far")
    (sent,) = push(rt.engine, rt.store, "far", "left.bin", data=b"l" * 3000)[1]
    (waiting,) = push(rt.engine, rt.store, "far", "later.bin", data=b"w" * 3000, delay_seconds=1800)[1]
    assert pre_replication_pass("eu-west", "continental-eu")["pre_replicated"] == 2  # then it is gone
    copies = {p for p in (tmp_path / "eu-west").rglob("*") if p.is_file()}
    assert len(copies) == 2

    assert mover(name="main-1", stop_when_idle=True)["transfers"] == 1  # no continental mover beats
    assert public(rt, sent).status == "Done" and public(rt, waiting).status == "Queued"

    report = purge(retention_seconds=7 * 86400)
    assert report["continental_copies"] == 1 and report["data_files"] == 0
    left = {p for p in (tmp_path / "eu-west").rglob("*") if p.is_file()}
    assert len(left) == 1 and left < copies  # the copy still needed for the scheduled file stays
    still_needed = public(rt, waiting).data_file_id
    with session_scope(rt.engine) as session:
        assert [r.data_file_id for r in proxy_replicas(session, "eu-west")] == [still_needed]
    assert purge(retention_seconds=7 * 86400)["continental_copies"] == 0
