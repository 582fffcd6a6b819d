"""Discovery by MQTT subscription on a real Mosquitto broker: a WIS2 notification naming a file on
the provider's HTTP server starts its retrieval within 2 s; messages published while the subscriber
is stopped are registered, each once, when it starts again."""

from __future__ import annotations

import contextvars
import hashlib
import json
import os
import threading
import time
import uuid
from datetime import UTC, datetime

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from sqlmodel import Session, col, func, select

from catalog.acquisition import Discovered
from catalog.models import DataFile, DataTransfer, Host, HostCreate, HostKind, TransferHistory
from tests.acquisition.conftest import Source, acquisition_setup, nginx_provider


def wis2_message(href: str, length: int) -> bytes:
    return json.dumps(
        {
            "id": str(uuid.uuid4()),
            "type": "Feature",
            "geometry": None,
            "properties": {"data_id": "x", "pubtime": datetime.now(UTC).isoformat()},
            "links": [{"href": href, "rel": "canonical", "type": "application/octet-stream", "length": length}],
        }
    ).encode()


def publish(broker, topic: str, payload: bytes) -> None:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    client.connect(broker.host, broker.port)
    client.loop_start()
    client.publish(topic, payload, qos=1).wait_for_publish(5)
    client.loop_stop()
    client.disconnect()


def in_thread(function, **kwargs) -> threading.Thread:
    context = contextvars.copy_context()  # the test's Prefect server, in the thread too
    thread = threading.Thread(target=context.run, args=(function,), kwargs=kwargs, daemon=True)
    thread.start()
    return thread


def fetch_started(engine, target: str) -> float | None:
    """When the transfer of `target` went Fetching (epoch seconds), or None."""
    with Session(engine) as session:
        at = session.exec(
            select(TransferHistory.at)
            .join(DataTransfer, col(DataTransfer.id) == col(TransferHistory.transfer_id))
            .where(DataTransfer.target == target, TransferHistory.action == "fetch")
        ).first()
    return at.timestamp() if at else None


def test_a_wis2_message_starts_the_retrieval_of_its_file_within_2_seconds(rt, nginx, mosquitto, prefect_server):
    payloads = {name: os.urandom(50_000) for name in ("warmup.bin", "product.bin")}
    host, root = nginx_provider(nginx, "provider-wis2", payloads, mqtt_url=mosquitto.url)
    directory = root.name
    topic = f"origin/a/wis2/{directory}/data"
    acquisition_setup(rt.engine, Source(host, None, root), directory="origin/a/wis2/+/data", listing_format="mqtt")

    import flows.retrieval
    import flows.subscription

    subscriber = in_thread(flows.subscription.subscriptions, max_runtime_seconds=60)
    retriever = in_thread(flows.retrieval.retrieval, name="retriever-mqtt", max_runtime_seconds=60)
    try:
        deadline = time.monotonic() + 30
        while fetch_started(rt.engine, "warmup.bin") is None:  # until the subscription is live
            assert time.monotonic() < deadline, "the subscription never registered a file"
            publish(mosquitto, topic, wis2_message(f"{nginx.base_url}/{directory}/warmup.bin", 50_000))
            time.sleep(0.5)
        published = time.time()
        publish(mosquitto, topic, wis2_message(f"{nginx.base_url}/{directory}/product.bin", 50_000))
        while (started := fetch_started(rt.engine, "product.bin")) is None:
            assert time.time() - published < 10, "the published file was never fetched"
            time.sleep(0.02)
        assert started - published < 2.0
        deadline = time.monotonic() + 30
        while True:
            with Session(rt.engine) as session:
                rows = session.exec(select(DataTransfer, DataFile).join(DataFile)).all()
            if rows and all(t.status == "Queued" for t, _ in rows):
                break
            assert time.monotonic() < deadline, [(t.target, t.status, t.error) for t, _ in rows]
            time.sleep(0.1)
        assert sorted(t.target for t, _ in rows) == ["product.bin", "warmup.bin"]  # each registered once
        for transfer, data_file in rows:
            assert data_file.md5 == hashlib.md5(payloads[transfer.target]).hexdigest()
    finally:
        flows.subscription.request_stop()
        flows.retrieval.request_stop()
        subscriber.join(30)
        retriever.join(30)
        flows.subscription._stop.clear()
        flows.retrieval._stop.clear()


def count(engine, model) -> int:
    with Session(engine) as session:
        return session.exec(select(func.count()).select_from(model)).one()


def wait_for(condition, what: str, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def test_messages_published_while_the_subscriber_is_stopped_are_registered_once_when_it_starts(rt, mosquitto):
    from tasks.subscription import Subscription

    host = HostCreate(
        name="provider-durable",
        kind=HostKind.ACQUISITION,
        protocol="http",
        address="http://provider.example",
        directory="/data",
        options={"webdav": False, "mqtt_url": mosquitto.url},
    )
    feed = uuid.uuid4().hex
    _, rule = acquisition_setup(rt.engine, Source(host, None), directory=f"durable/{feed}/#", listing_format="mqtt")
    with Session(rt.engine) as session:
        row = session.get(Host, "provider-durable")
    installation = rt.settings.resolved_installation_name()

    def subscriber() -> Subscription:
        subscription = Subscription(rt.engine, row, rule, installation=installation, session_expiry=600)
        subscription.start()
        assert subscription.subscribed.wait(10), "the broker never granted the subscription"
        return subscription

    first = subscriber()  # once, so the broker knows the session
    first.stop()
    messages = [wis2_message(f"http://provider.example/data/{feed}/f{i:03d}.bin", 1000 + i) for i in range(100)]

    def publish_all() -> None:
        client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        client.connect(mosquitto.host, mosquitto.port)
        client.loop_start()
        try:
            for i, message in enumerate(messages):
                client.publish(f"durable/{feed}/f{i:03d}", message, qos=1).wait_for_publish(5)
        finally:
            client.disconnect()
            client.loop_stop()

    publish_all()  # while nobody is connected under the subscription's client id
    second = subscriber()
    try:
        assert second.client_id == first.client_id == f"pds-{installation}-provider-durable-{rule.id}"
        wait_for(lambda: second.received >= 100, f"{second.received} of the 100 messages delivered")
        assert second.registered == 100
        assert count(rt.engine, DataFile) == 100 and count(rt.engine, Discovered) == 100
        with Session(rt.engine) as session:
            targets = session.exec(select(DataTransfer.target)).all()
        assert sorted(targets) == [f"{feed}/f{i:03d}.bin" for i in range(100)]  # each once

        publish_all()  # the same 100 again: delivered, and registered none
        wait_for(lambda: second.received >= 200, f"{second.received - 100} of the 100 repeats delivered")
        assert second.registered == 100
        assert count(rt.engine, DataFile) == 100 and count(rt.engine, DataTransfer) == 100
    finally:
        second.stop()


@pytest.mark.parametrize("rt", ["sqlite"], indirect=True)
def test_the_subscriptions_flow_picks_up_what_was_published_while_it_restarted(rt, mosquitto, prefect_server):
    import flows.subscription

    host = HostCreate(
        name="provider-restarts",
        kind=HostKind.ACQUISITION,
        protocol="http",
        address="http://provider.example",
        directory="/data",
        options={"webdav": False, "mqtt_url": mosquitto.url},
    )
    feed = uuid.uuid4().hex
    acquisition_setup(rt.engine, Source(host, None), directory=f"restarts/{feed}/#", listing_format="mqtt")

    def run_flow() -> threading.Thread:
        flows.subscription._stop.clear()
        return in_thread(flows.subscription.subscriptions, max_runtime_seconds=120)

    def stop_flow(thread: threading.Thread) -> None:
        flows.subscription.request_stop()
        thread.join(30)
        assert not thread.is_alive()
        flows.subscription._stop.clear()

    first = run_flow()
    try:
        wait_for(  # the subscription is live once a message published now is registered
            lambda: publish(mosquitto, f"restarts/{feed}/w", wis2_message(f"http://provider.example/data/{feed}/w", 1))
            or count(rt.engine, Discovered) == 1,
            "the subscription never registered a file",
        )
    finally:
        stop_flow(first)
    for i in range(20):
        href = f"http://provider.example/data/{feed}/f{i:02d}.bin"
        publish(mosquitto, f"restarts/{feed}/f{i:02d}", wis2_message(href, 10))
    second = run_flow()
    try:
        wait_for(lambda: count(rt.engine, Discovered) == 21, "what was published meanwhile was not registered")
        time.sleep(0.5)
        assert count(rt.engine, DataTransfer) == 21
    finally:
        stop_flow(second)


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ({"links": [{"rel": "canonical", "href": "http://h/a.bin", "length": 3}]}, ("http://h/a.bin", 3, None)),
        ({"url": "http://h/b.bin", "size": 7, "name": "b.bin"}, ("http://h/b.bin", 7, None)),
        ({"links": [{"rel": "via", "href": "http://h/meta"}]}, None),
        ({"hello": "world"}, None),
    ],
)
def test_messages_name_their_file_by_wis2_link_or_url(message, expected):
    from tasks.subscription import href_of

    assert href_of(message) == expected


def test_a_stac_item_message_publishes_the_item_as_its_provider_wrote_it(rt, nginx):
    """A message that is a STAC Item registers each asset on the host and, its destination being
    published, becomes that item: geometry, time, properties and asset fields kept, hrefs proxied."""
    from catalog.database import session_scope
    from catalog.inventory import StacCollection, StacItem
    from catalog.models import Host
    from catalog.proxy import get_asset
    from catalog.stac import set_publication
    from tasks.subscription import Subscription

    payloads = {"obs/2026/station-7.bufr": os.urandom(321)}
    host, root = nginx_provider(nginx, "provider-stac-mqtt", payloads, mqtt_url="mqtt://127.0.0.1:1")
    _, rule = acquisition_setup(rt.engine, Source(host, None, root), directory="obs/#", listing_format="mqtt")
    with session_scope(rt.engine) as session:
        set_publication(session, "acq", collection_id="observations")
        host_row = session.get(Host, host.name)
    href = f"{nginx.base_url}/{root.name}/obs/2026/station-7.bufr"
    message = {
        "type": "Feature",
        "stac_version": "1.0.0",
        "id": "station-7-2026112312",
        "geometry": {"type": "Point", "coordinates": [6.1, 46.2]},
        "bbox": [6.1, 46.2, 6.1, 46.2],
        "properties": {"datetime": "2026-11-23T12:00:00Z", "wigos_station_identifier": "0-20000-0-06700"},
        "links": [{"rel": "via", "href": "https://example.org/stations/06700"}],
        "assets": {
            "data": {"href": href, "type": "application/bufr", "roles": ["data"], "file:size": 321},
            "elsewhere": {"href": "file:///nowhere/x.json", "roles": ["metadata"]},
        },
    }
    subscription = Subscription(rt.engine, host_row, rule)
    assert subscription.handle(json.dumps(message).encode()) == 1
    assert subscription.handle(json.dumps(message).encode()) == 0  # deduped like a listing
    with Session(rt.engine) as session:
        item = session.get(StacItem, ("observations", "station-7-2026112312"))
        assert session.get(StacCollection, "observations").body["extent"]["spatial"]["bbox"] == [[6.1, 46.2, 6.1, 46.2]]
        proxied = get_asset(session, "observations", item.id, "data")
    assert item.geometry == message["geometry"] and item.properties == message["properties"]
    assert item.datetime.isoformat() == "2026-11-23T12:00:00+00:00"
    assert item.links == message["links"]
    data = item.assets["data"]
    assert data["href"].endswith("/proxy/observations/station-7-2026112312/data")
    assert data["alternate"]["upstream"]["href"] == href
    assert (data["type"], data["roles"], data["file:size"]) == ("application/bufr", ["data"], 321)
    assert item.assets["elsewhere"] == message["assets"]["elsewhere"]  # nothing the proxy could fetch: as it was
    assert proxied.upstream_host == host.name and proxied.upstream_href.endswith("/obs/2026/station-7.bufr")

    # the provider corrects the item's metadata only: no new registration, the item is updated
    message["properties"]["qc"] = "passed"
    assert subscription.handle(json.dumps(message).encode()) == 0
    with Session(rt.engine) as session:
        assert session.get(StacItem, ("observations", "station-7-2026112312")).properties["qc"] == "passed"
        assert len(session.exec(select(DataFile)).all()) == 1


def test_the_installation_name_is_stable_and_leaves_the_password_out():
    from catalog.settings import Settings
    from tasks.subscription import client_id

    url = "postgresql+psycopg://pds:secret@db.example.org/pds"
    named = Settings(database_url=url).resolved_installation_name()
    assert named == Settings(database_url=url.replace("secret", "rotated")).resolved_installation_name()
    assert named != Settings(database_url=url + "2").resolved_installation_name()
    assert named.startswith("db") and len(named) == 10
    assert Settings(database_url=url, installation_name="ops").resolved_installation_name() == "ops"
    assert client_id("ops", "wis2 node/a", 7) == "pds-ops-wis2_node_a-7"
