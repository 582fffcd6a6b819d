"""Transfer notifications against a real Mosquitto broker, checked the way a subscriber sees them."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import queue
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import paho.mqtt.client as mqtt
import pytest
from jsonschema import Draft202012Validator

from tasks.notify import (
    WNM_CONFORMANCE,
    Notification,
    NotificationError,
    NotificationTarget,
    Publisher,
    pds_payload,
    wis2_payload,
)
from tests.conftest import running
from tests.servers._common import free_port
from tests.servers.mosquitto import MosquittoServer

AVAILABLE_AT = datetime(2026, 3, 20, 4, 50, 18, tzinfo=UTC)


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    yield from running(MosquittoServer(tmp_path_factory.mktemp("mosquitto"), auth=True))


@pytest.fixture
def publisher():
    with Publisher(timeout=5) as publisher:
        yield publisher


@pytest.fixture
def topic():
    """A topic of its own per test, so retained messages of one test never reach another."""
    return f"pds/test/{uuid.uuid4().hex}/ecmwf"


def notification(**changes) -> Notification:
    fields = {
        "name": "/data/ecmwf/A1D03200000032001001.grib",
        "size": 457,
        "md5": "9e107d9d372bb6826bd81d3542a419d6",
        "adler32": "0b5c02a1",
        "destination": "ecmwf-member-state",
        "data_file_id": 42,
        "transfer_id": 4242,
        "available_at": AVAILABLE_AT,
        "url": "https://pds.example.org/portal/ecmwf-member-state/data/ecmwf/A1D03200000032001001.grib",
    }
    fields["download_url"] = fields["url"]
    return Notification(**(fields | changes))


class Subscriber:
    """An MQTT v5 client that subscribes to one topic and queues what it receives."""

    def __init__(self, url: str, topic: str) -> None:
        host, port = url.removeprefix("mqtt://").rsplit(":", 1)
        self.messages: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
        self.subscribed = queue.Queue[bool]()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        self.client.on_connect = lambda c, u, f, reason, p: c.subscribe(topic, qos=2)
        self.client.on_subscribe = lambda c, u, mid, reasons, p: self.subscribed.put(True)
        self.client.on_message = lambda c, u, message: self.messages.put(message)
        self.client.connect(host, int(port))
        self.client.loop_start()
        self.subscribed.get(timeout=5)  # SUBACK: messages published from now on reach this subscriber

    def receive(self, timeout: float = 5) -> mqtt.MQTTMessage:
        return self.messages.get(timeout=timeout)

    def nothing_within(self, seconds: float) -> bool:
        try:
            self.messages.get(timeout=seconds)
        except queue.Empty:
            return True
        return False

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def subscribe():
    subscribers: list[Subscriber] = []

    def make(url: str, topic: str) -> Subscriber:
        subscribers.append(Subscriber(url, topic))
        return subscribers[-1]

    yield make
    for subscriber in subscribers:
        subscriber.close()


def test_subscriber_receives_the_transfer_as_json(broker, publisher, subscribe, topic):
    subscriber = subscribe(broker.url, topic)

    publisher.publish(NotificationTarget(broker.url, topic), notification())

    message = subscriber.receive()
    assert message.topic == topic
    assert json.loads(message.payload) == {
        "name": "/data/ecmwf/A1D03200000032001001.grib",
        "size": 457,
        "md5": "9e107d9d372bb6826bd81d3542a419d6",
        "adler32": "0b5c02a1",
        "destination": "ecmwf-member-state",
        "data_file_id": 42,
        "transfer_id": 4242,
        "available_at": "2026-03-20T04:50:18Z",
        "url": "https://pds.example.org/portal/ecmwf-member-state/data/ecmwf/A1D03200000032001001.grib",
        "event": "done",
        "download_url": "https://pds.example.org/portal/ecmwf-member-state/data/ecmwf/A1D03200000032001001.grib",
    }
    assert message.properties.ContentType == "application/json"
    assert message.properties.PayloadFormatIndicator == 1


@pytest.mark.parametrize("qos", [0, 1, 2])
def test_each_qos_reaches_the_subscriber_at_that_qos(broker, publisher, subscribe, topic, qos):
    subscriber = subscribe(broker.url, topic)

    publisher.publish(NotificationTarget(broker.url, topic, qos=qos), notification())

    assert subscriber.receive().qos == qos


def test_publish_without_acknowledgement_fails(tmp_path, topic):
    """A broker that accepts the connection but never acknowledges: publish fails, it does not hang."""
    with MosquittoServer(tmp_path / "mosquitto") as frozen, Publisher(timeout=2) as publisher:
        publisher.publish(NotificationTarget(frozen.url, topic, qos=1), notification())  # connected and acked
        os.kill(frozen.process.pid, 19)  # SIGSTOP: the TCP connection stays up, nothing answers
        try:
            started = time.monotonic()
            with pytest.raises(NotificationError, match="not acknowledged"):
                publisher.publish(NotificationTarget(frozen.url, topic, qos=1), notification())
            assert time.monotonic() - started < 5
        finally:
            os.kill(frozen.process.pid, 18)  # SIGCONT, so the broker can stop cleanly


def test_subscriber_connecting_after_the_publish_gets_the_retained_message(broker, publisher, subscribe, topic):
    publisher.publish(NotificationTarget(broker.url, topic, retain=True), notification())

    late = subscribe(broker.url, topic)

    message = late.receive()
    assert message.retain
    assert json.loads(message.payload)["md5"] == "9e107d9d372bb6826bd81d3542a419d6"


def test_without_retain_a_late_subscriber_gets_nothing(broker, publisher, subscribe, topic):
    publisher.publish(NotificationTarget(broker.url, topic, retain=False), notification())

    assert subscribe(broker.url, topic).nothing_within(1)


def test_message_carries_its_expiry_interval(broker, publisher, subscribe, topic):
    subscriber = subscribe(broker.url, topic)

    publisher.publish(NotificationTarget(broker.url, topic, expiry=3600), notification())

    expiry = subscriber.receive().properties.MessageExpiryInterval
    assert 3590 <= expiry <= 3600  # the broker forwards what is left of it


def test_expired_retained_message_is_not_delivered(broker, publisher, subscribe, topic):
    publisher.publish(NotificationTarget(broker.url, topic, retain=True, expiry=1), notification())
    time.sleep(2.1)

    assert subscribe(broker.url, topic).nothing_within(1)


def test_retained_message_survives_a_broker_restart(tmp_path, topic):
    server = MosquittoServer(tmp_path / "mosquitto")
    with server, Publisher(timeout=5) as publisher:
        publisher.publish(NotificationTarget(server.url, topic, retain=True), notification(transfer_id=1))

        server.restart()

        for transfer_id in (1, 2):
            subscriber = Subscriber(server.url, topic)  # closed before the broker stops
            try:
                assert json.loads(subscriber.receive().payload)["transfer_id"] == transfer_id
            finally:
                subscriber.close()
            # The publisher's connection was lost in the restart; it reconnects by itself.
            publisher.publish(NotificationTarget(server.url, topic, retain=True), notification(transfer_id=2))


def test_unreachable_broker_fails_fast_with_a_clear_message(topic):
    url = f"mqtt://127.0.0.1:{free_port()}"  # nothing listens there
    started = time.monotonic()
    with Publisher(timeout=2) as publisher, pytest.raises(NotificationError) as error:
        publisher.publish(NotificationTarget(url, topic), notification())
    assert time.monotonic() - started < 5
    assert f"MQTT broker {url} unreachable" in str(error.value)


def test_password_listener_needs_the_right_credentials(broker, publisher, subscribe, topic):
    wrong = broker.auth_url.replace(broker.password, "wrong-password")
    with pytest.raises(NotificationError, match="refused the connection") as error:
        publisher.publish(NotificationTarget(wrong, topic), notification())
    assert "wrong-password" not in str(error.value)  # no password in messages or logs

    subscriber = subscribe(broker.url, topic)  # per-listener settings: both listeners share topics
    publisher.publish(NotificationTarget(broker.auth_url, topic), notification())
    assert json.loads(subscriber.receive().payload)["data_file_id"] == 42


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"broker_url": "http://127.0.0.1:1883"}, "must start with mqtt:// or mqtts://"),
        ({"broker_url": "mqtt://"}, "has no host"),
        ({"broker_url": "mqtt://127.0.0.1:99999"}, "invalid MQTT broker URL"),
        ({"broker_url": "mqtt://127.0.0.1/pds/topic"}, "must not have a path"),
        ({"topic": ""}, "must not be empty"),
        ({"topic": "pds/+/ecmwf"}, "wildcard"),
        ({"topic": "pds/#"}, "wildcard"),
        ({"qos": 3}, "QoS must be 0, 1 or 2"),
        ({"qos": -1}, "QoS must be 0, 1 or 2"),
        ({"expiry": 0}, "message expiry"),
        ({"expiry": 2**32}, "message expiry"),
        ({"payload_format": "xml"}, "payload format must be one of pds, wis2"),
        ({"payload_format": "wis2"}, "needs a metadata_id"),
    ],
)
def test_bad_target_is_refused(changes, message):
    fields = {"broker_url": "mqtt://127.0.0.1:1883", "topic": "pds/ecmwf"} | changes
    with pytest.raises(ValueError, match=message):
        NotificationTarget(**fields)


def test_broker_url_credentials_and_default_ports():
    target = NotificationTarget("mqtts://pds%40ecmwf:p%3Ass@broker.example.org", "pds/ecmwf")
    broker = target.broker
    assert (broker.tls, broker.host, broker.port) == (True, "broker.example.org", 8883)
    assert (broker.username, broker.password) == ("pds@ecmwf", "p:ss")
    assert broker.safe_url == "mqtts://pds@ecmwf@broker.example.org:8883"
    assert NotificationTarget("mqtt://broker.example.org", "pds/ecmwf").broker.port == 1883


@pytest.mark.parametrize(
    "changes",
    [{"md5": "not-a-checksum"}, {"size": -1}, {"available_at": datetime(2026, 3, 20)}, {"sha512": "ab"}],  # noqa: DTZ001
)
def test_bad_notification_is_refused(changes):
    with pytest.raises(ValueError):
        notification(**changes)


def test_pds_payload_is_compact_json():
    body = pds_payload(notification())
    assert b" " not in body
    assert json.loads(body)["available_at"] == "2026-03-20T04:50:18Z"


# The WNM 1.0 core requirements a message must meet, as a JSON Schema (WMO's own bundled schema is
# fetched from the network by `pywis-pubsub schema sync`, which tests cannot rely on).
WNM_CORE = {
    "type": "object",
    "required": ["id", "conformsTo", "type", "geometry", "properties", "links"],
    "properties": {
        "id": {"type": "string", "format": "uuid"},
        "conformsTo": {"type": "array", "contains": {"const": WNM_CONFORMANCE}},
        "type": {"const": "Feature"},
        "geometry": {"type": ["object", "null"]},
        "properties": {
            "type": "object",
            "required": ["pubtime", "data_id", "metadata_id"],
            "properties": {
                "pubtime": {"type": "string", "format": "date-time"},
                "datetime": {"type": "string", "format": "date-time"},
                "integrity": {
                    "type": "object",
                    "required": ["method", "value"],
                    "properties": {
                        "method": {"enum": ["sha256", "sha384", "sha512", "sha3-256", "sha3-384", "sha3-512"]},
                        "value": {"type": "string", "contentEncoding": "base64"},
                    },
                },
            },
            "oneOf": [{"required": ["datetime"]}, {"required": ["start_datetime", "end_datetime"]}],
        },
        "links": {
            "type": "array",
            "minItems": 1,
            "contains": {"properties": {"rel": {"const": "canonical"}}, "required": ["rel", "href"]},
            "items": {"type": "object", "required": ["rel", "href"], "properties": {"length": {"type": "integer"}}},
        },
    },
}


def test_wis2_payload_is_a_valid_notification_message():
    data = b"GRIB" + bytes(453)
    sha512 = hashlib.sha512(data).hexdigest()
    body = wis2_payload(
        notification(sha512=sha512),
        data_id="ecmwf-member-state/data/ecmwf/A1D03200000032001001.grib",
        metadata_id="urn:wmo:md:int-ecmwf:ifs-forecasts",
        media_type="application/grib",
    )

    message = json.loads(body)
    errors = [e.message for e in Draft202012Validator(WNM_CORE, format_checker=Draft202012Validator.FORMAT_CHECKER)
              .iter_errors(message)]  # fmt: skip
    assert errors == []
    assert message["geometry"] is None
    assert message["properties"]["datetime"] == "2026-03-20T04:50:18Z"
    assert message["properties"]["integrity"] == {
        "method": "sha512",
        "value": base64.b64encode(hashlib.sha512(data).digest()).decode(),
    }
    assert message["links"] == [
        {"rel": "canonical", "href": notification().url, "type": "application/grib", "length": 457}
    ]


def test_wis2_payload_without_a_sha512_has_no_integrity():
    """WNM 1.0 accepts only SHA-2/SHA-3 digests: no integrity at all beats an invalid MD5 one."""
    message = json.loads(wis2_payload(notification(), data_id="d/x", metadata_id="urn:wmo:md:x:y"))
    assert "integrity" not in message["properties"]


def test_wis2_canonical_link_is_the_download_url_and_the_site_an_alternate():
    """An SFTP site is where the product went, not where a WIS2 subscriber can fetch it."""
    site = "sftp://site.example.org/incoming/A1D03200000032001001.grib"
    message = json.loads(wis2_payload(notification(url=site), data_id="d/x", metadata_id="urn:wmo:md:x:y"))
    assert message["links"][0]["rel"] == "canonical" and message["links"][0]["href"] == notification().url
    assert message["links"][1:] == [{"rel": "alternate", "href": site}]


def test_a_wis2_message_without_an_http_download_url_is_refused():
    with pytest.raises(ValueError, match="HTTP"):
        wis2_payload(notification(download_url=None), data_id="d/x", metadata_id="urn:wmo:md:x:y")
    with pytest.raises(ValueError, match="http"):
        notification(download_url="sftp://site.example.org/x.grib")


def test_worker_threads_share_one_connection_per_broker(broker, publisher, subscribe, topic):
    subscriber = subscribe(broker.url, topic)
    target = NotificationTarget(broker.url, topic, qos=1)

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(lambda i: publisher.publish(target, notification(transfer_id=i)), range(200)))

    received = {json.loads(subscriber.receive().payload)["transfer_id"] for _ in range(200)}
    assert received == set(range(200))
    assert len(publisher._connections) == 1
