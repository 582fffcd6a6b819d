"""Notifications on arrival, end to end: files uploaded through the portal over HTTPS and one pushed by
a real mover are announced on a real Mosquitto broker, and WMO's reference subscriber (pywis-pubsub)
takes the WIS2 messages pds produced, downloads each file from its canonical link and checks its
integrity before keeping it."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import queue
import ssl
import uuid

import httpx
import pytest
from jsonschema import Draft202012Validator
from sqlmodel import select

from catalog.config import update_destination
from catalog.data_users import DataUserSpec, create_data_user, grant
from catalog.database import session_scope
from catalog.errors import QuotaExceeded
from catalog.events import EventLog
from catalog.outbox import OutboxMessage, Sink
from catalog.portal import Portal
from tasks import reporting
from tests.factories import destination, local_host
from tests.flows.conftest import rt  # noqa: F401 — the runtime fixture (SQLite and PostgreSQL)
from tests.flows.test_mover import public
from tests.portal.conftest import ServedApi
from tests.portal.test_tree import upload
from tests.servers._common import log_tail, spawn, terminate, venv_bin, wait_until
from tests.tasks.test_notify import WNM_CORE, Subscriber

PROVIDER, READER = ("provider", "provider-pw-1"), ("reader", "reader-pw-1")


def received(subscriber: Subscriber, quiet: float = 1.5) -> list:
    """Every message the subscriber got, once none has come for `quiet` seconds."""
    messages = []
    while True:
        try:
            messages.append(subscriber.messages.get(timeout=quiet))
        except queue.Empty:
            return messages


def notifications(engine) -> list[dict]:
    """The MQTT notifications waiting in the outbox, as their subscribers will read them."""
    with session_scope(engine) as session:
        rows = session.exec(select(OutboxMessage).where(OutboxMessage.sink == Sink.MQTT.value)).all()
        return [json.loads(row.body) | {"topic": row.topic} for row in rows]


@pytest.fixture
def announcing(world, store, settings, tmp_path):
    """The portal of `world` with a broker configured; destination `bucket` announces arrivals, `site`
    (alice may put there too) only its Done transfers."""
    settings.mqtt_url = "mqtt://127.0.0.1:1883"  # never reached: the tests read the outbox
    with session_scope(world) as session:
        update_destination(session, "bucket", {"mqtt_topic": "in/$destination/$name", "mqtt_on_arrival": True})
        update_destination(session, "site", {"mqtt_topic": "in/$destination/$name"})
    events = EventLog.open(tmp_path / "announcing-events.log")
    yield Portal(world, store, events, temporary_patterns=[".*", "*.tmp"], settings=settings)
    events.close()


def test_an_upload_is_announced_in_the_commit_that_queues_it_and_only_where_asked(announcing, world):
    alice = announcing.user("alice")
    upload(announcing, alice, "/bucket/obs/a.bufr", b"bufr" * 100)
    upload(announcing, alice, "/site/b.grib", b"grib")  # site has a topic, not on arrival
    (message,) = notifications(world)
    assert message["topic"] == "in/bucket/a.bufr" and message["event"] == "arrival"
    assert message["name"] == "obs/a.bufr" and message["size"] == 400
    assert message["url"] == f"{announcing.settings.resolved_public_url()}/portal/bucket/obs/a.bufr"


def test_a_temporary_name_is_announced_once_renamed_and_a_broken_upload_never(announcing, world):
    alice = announcing.user("alice")
    upload(announcing, alice, "/bucket/.b.grib", b"x" * 10)
    assert notifications(world) == []  # not arrived: still being written under a temporary name
    announcing.rename(alice, "/bucket/.b.grib", "/bucket/b.grib")
    assert [(m["name"], m["size"]) for m in notifications(world)] == [("b.grib", 10)]
    announcing.rename(alice, "/bucket/b.grib", "/bucket/c.grib")  # a file renamed has not arrived again
    assert len(notifications(world)) == 1

    broken = announcing.begin_upload(alice, "/bucket/d.grib", protocol="https")
    broken.write(b"half")
    broken.abort("client went away")
    with session_scope(world) as session:
        from catalog.data_users import update_data_user

        update_data_user(session, "alice", {"upload_quota_bytes": 15})  # 5 bytes left: refused mid-write
    with pytest.raises(QuotaExceeded):
        upload(announcing, alice, "/bucket/e.grib", b"too large")
    assert len(notifications(world)) == 1


def test_an_upload_over_ftp_is_announced_and_an_interrupted_one_is_not(announcing, world):
    """Every front end finishes its uploads through the same commit: FTP here, with a client whose
    control connection is lost in the middle of a second file."""
    import ftplib
    import io

    from tests.portal.conftest import PASSWORD, FtpPortal

    server = FtpPortal(announcing).start()
    try:
        ftp = ftplib.FTP()
        ftp.connect("127.0.0.1", server.port, timeout=30)
        ftp.login("alice", PASSWORD)
        ftp.storbinary("STOR /bucket/over-ftp.grib", io.BytesIO(b"g" * 70_000))
        connection = ftp.transfercmd("STOR /bucket/cut.grib")
        connection.sendall(b"c" * 1000)
        # The control connection goes while the data connection is still open. (The data connection
        # closed first would say "end of file", which in FTP's stream mode is a whole upload.)
        ftp.close()
        wait_until(
            lambda: len(transfers_of(world, "bucket")) == 2
            and "Arriving" not in transfers_of(world, "bucket").values(),
            30,
            "the interrupted upload to end",
        )
        connection.close()
    finally:
        server.stop()
    assert transfers_of(world, "bucket") == {"over-ftp.grib": "Queued", "cut.grib": "Failed"}
    assert [(m["name"], m["size"]) for m in notifications(world)] == [("over-ftp.grib", 70_000)]


def transfers_of(engine, destination: str) -> dict[str, str]:
    from catalog.models import DataTransfer

    with session_scope(engine) as session:
        rows = session.exec(select(DataTransfer).where(DataTransfer.destination_name == destination)).all()
        return {t.target: t.status for t in rows}


def message_id(message) -> str:
    return dict(message.properties.UserProperty)["message-id"]


def test_arrivals_and_a_push_are_announced_once_and_pywis_pubsub_verifies_what_it_downloads(
    rt,  # noqa: F811
    tmp_path,
    mosquitto,
    certificate,
    monkeypatch,
):
    from pywis_pubsub.ets import WNMTestSuite

    from api.app import create_app

    run = uuid.uuid4().hex[:8]  # topics of their own: the broker keeps retained messages of earlier runs
    topic = f"pds/{run}/$destination/$name"
    monkeypatch.setattr(rt.settings, "mqtt_url", mosquitto.url)
    reporting.publisher.cache_clear()
    destination(rt.engine, "wis2-in", mqtt_topic=topic, mqtt_payload="wis2", mqtt_on_arrival=True)
    destination(rt.engine, "pds-in", mqtt_topic=topic, mqtt_on_arrival=True)
    destination(rt.engine, "quiet-in", mqtt_topic=topic)  # notifies on Done only: an upload says nothing
    remote = tmp_path / "site"
    destination(rt.engine, "wis2-out", host=local_host("out-site", str(remote)), mqtt_topic=topic, mqtt_payload="wis2")
    with session_scope(rt.engine) as session:
        create_data_user(session, DataUserSpec(*PROVIDER))
        create_data_user(session, DataUserSpec(*READER))
        for name in ("wis2-in", "pds-in", "quiet-in", "wis2-out"):
            grant(session, PROVIDER[0], "put,dir,get", destination=name)
            grant(session, READER[0], "get,dir", destination=name)

    events = EventLog.open(tmp_path / "portal-events.log")
    portal = Portal(rt.engine, rt.store, events, settings=rt.settings)
    api = ServedApi(create_app(rt.settings, engine=rt.engine, store=rt.store, portal=portal), *certificate)
    monkeypatch.setattr(rt.settings, "public_url", api.url)  # the portal URL messages link to
    api.start()
    subscriber = Subscriber(mosquitto.url, f"pds/{run}/#")  # connected before anything happens
    files = {
        "wis2-in": ("obs/2026/synop.bufr", os.urandom(200_000)),
        "pds-in": ("fc/forecast.grib", os.urandom(50_000)),
        "quiet-in": ("silent.bin", os.urandom(1_000)),
        "wis2-out": ("grib/pushed.grib", os.urandom(120_000)),
    }
    try:
        with httpx.Client(
            verify=ssl.create_default_context(cafile=certificate[0]), auth=PROVIDER, timeout=60
        ) as client:
            for name, (target, data) in files.items():
                client.put(f"{api.url}/portal/{name}/{target}", content=data).raise_for_status()
        from flows.mover import mover

        # Pushes wis2-out's file to its site and publishes the arrivals the portal left in the outbox.
        mover(name=f"arrival-mover-{run}", stop_when_idle=True)
        messages = received(subscriber)
    finally:
        subscriber.close()

    # One message per arrival and one for the push, each once (a retained copy is not sent again).
    by_topic = {m.topic.removeprefix(f"pds/{run}/"): m for m in messages}
    assert sorted(by_topic) == ["pds-in/forecast.grib", "wis2-in/synop.bufr", "wis2-out/pushed.grib"]
    ids = [message_id(m) for m in messages]
    assert len(ids) == len(set(ids)) == 3

    pds = json.loads(by_topic["pds-in/forecast.grib"].payload)
    target, data = files["pds-in"]
    assert pds["id"] == message_id(by_topic["pds-in/forecast.grib"])
    assert pds["event"] == "arrival" and pds["destination"] == "pds-in" and pds["name"] == target
    assert pds["size"] == len(data) and pds["md5"] == hashlib.md5(data).hexdigest()
    assert pds["url"] == pds["download_url"] == f"{api.url}/portal/pds-in/fc/forecast.grib"

    wis2 = {name: json.loads(by_topic[name].payload) for name in ("wis2-in/synop.bufr", "wis2-out/pushed.grib")}
    for name, message in wis2.items():
        assert uuid.UUID(message["id"]).hex == message_id(by_topic[name])
        validator = Draft202012Validator(WNM_CORE, format_checker=Draft202012Validator.FORMAT_CHECKER)
        assert [e.message for e in validator.iter_errors(message)] == [], name
        suite = WNMTestSuite(message)  # pywis-pubsub's checks of WNM's core requirements (but the networked schema)
        for check in (suite.test_requirement_id, suite.test_requirement_temporal, suite.test_requirement_links,
                      suite.test_requirement_data_id, suite.test_requirement_conformance,
                      suite.test_requirement_geometry):  # fmt: skip
            assert check()["code"] == "PASSED", (name, check())
        canonical = message["links"][0]
        assert canonical["rel"] == "canonical" and canonical["href"].startswith(f"{api.url}/portal/")
    out_target, out_data = files["wis2-out"]
    assert (remote / out_target).read_bytes() == out_data
    # The site is a local directory: no file:// link is published, only the portal's copy.
    assert wis2["wis2-out/pushed.grib"]["links"] == [
        {"rel": "canonical", "href": f"{api.url}/portal/wis2-out/{out_target}", "type": "application/octet-stream",
         "length": len(out_data)}
    ]  # fmt: skip
    assert wis2["wis2-in/synop.bufr"]["properties"]["integrity"] == {
        "method": "sha512",
        "value": base64.b64encode(hashlib.sha512(files["wis2-in"][1]).digest()).decode(),
    }

    # WMO's subscriber, as a WIS2 node's user runs it: it trusts the portal's certificate, logs in with
    # the reader's account (.netrc), downloads and keeps only what matches the announced integrity.
    home = tmp_path / "subscriber-home"
    home.mkdir()
    netrc = home / ".netrc"
    netrc.write_text(f"machine 127.0.0.1 login {READER[0]} password {READER[1]}\n")
    netrc.chmod(0o600)
    downloads, config, log = tmp_path / "downloads", tmp_path / "pywis-pubsub.yml", tmp_path / "pywis-pubsub.log"
    config.write_text(
        json.dumps(  # JSON is YAML
            {
                "broker": mosquitto.url,
                "subscribe_topics": [f"pds/{run}/wis2-in/#", f"pds/{run}/wis2-out/#"],
                "qos": 1,
                "verify_data": True,
                "validate_message": False,  # needs WMO's schema from the network; checked above instead
                "storage": {"type": "fs", "options": {"basedir": str(downloads), "filepath": "data_id"}},
            }
        )
    )
    env = os.environ | {
        "HOME": str(home),
        "NETRC": str(netrc),
        "REQUESTS_CA_BUNDLE": str(certificate[0]),
        "NO_PROXY": "127.0.0.1",
        "no_proxy": "127.0.0.1",
    }
    command = [venv_bin("pywis-pubsub", "pywis-pubsub"), "subscribe", "--config", str(config), "--download"]
    process = spawn(command + ["--verbosity", "DEBUG"], log, env=env)  # gets the retained messages
    saved = {name: downloads / name / files[name][0].lstrip("/") for name in ("wis2-in", "wis2-out")}
    try:
        wait_until(
            lambda: all(p.exists() for p in saved.values()), 60, "pywis-pubsub downloads", log=log, process=process
        )
    finally:
        terminate(process)
        api.stop()
        events.close()
    assert "Data verification passed" in log_tail(log, 1_000_000)
    assert "Data verification failed" not in log_tail(log, 1_000_000)
    for name, path in saved.items():
        assert path.read_bytes() == files[name][1], name
    # The download through the portal is the reader's pull of the arrival: its transfer is Done.
    with session_scope(rt.engine) as session:
        from sqlmodel import select

        from catalog.models import DataTransfer

        pulled = session.exec(select(DataTransfer).where(DataTransfer.destination_name == "wis2-in")).one()
    assert public(rt, pulled.id).status == "Done"
