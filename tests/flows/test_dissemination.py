"""Dissemination end to end through the mover, on real servers: a primary host that stops mid-run
hands over to the fallback, every attempt leaves its UPH or ERR line, and a destination with a topic
announces each delivered file on a real MQTT broker — retained for subscribers that come later."""

from __future__ import annotations

import hashlib
import json
import threading
import time

from catalog.database import session_scope
from catalog.events import parse_line
from catalog.models import DestinationState, HostCreate
from catalog.transfers import transfer_public
from tasks import reporting
from tests.factories import destination, local_host, push
from tests.flows.test_mover import public, rt  # noqa: F401 — the runtime fixture (SQLite and PostgreSQL)
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
