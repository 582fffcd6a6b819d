"""Transfer notifications over MQTT: tell subscribers that a product is available, and where.

A destination may be configured to notify an MQTT broker each time one of its products has been
delivered (or made available on the Data Portal). Subscribers take the product's location from the
message and fetch it; with the retain flag a subscriber that connects later still gets the newest
message of a topic, so a client that was offline does not miss the product.

Two payloads exist: `pds` (a compact JSON of the transfer, for our own users) and `wis2`, a WIS2
Notification Message (WMO's GeoJSON format, WNM 1.0) for sites that feed WIS2 subscribers.

`Publisher` keeps one long-lived MQTT v5 connection per broker, shared by the mover's worker threads;
a publish with QoS 1 or 2 returns only once the broker has acknowledged it, so the caller can record
the notification as sent, or retry.
"""

from __future__ import annotations

import base64
import json
import re
import ssl
import threading
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import unquote, urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

PayloadFormat = Literal["pds", "wis2"]

SCHEMES = {"mqtt": 1883, "mqtts": 8883}
PAYLOAD_FORMATS = ("pds", "wis2")
MAX_EXPIRY = 2**32 - 1
"""The MQTT v5 Message Expiry Interval is a four-byte integer (seconds)."""
WNM_CONFORMANCE = "http://wis.wmo.int/spec/wnm/1/conf/core"

_MD5 = re.compile(r"[0-9a-f]{32}")
_SHA512 = re.compile(r"[0-9a-f]{128}")
_ADLER32 = re.compile(r"[0-9a-f]{8}")


class NotificationError(Exception):
    """A notification could not be delivered to the broker (unreachable, refused or not acknowledged)."""


@dataclass(frozen=True)
class Broker:
    """Where to connect: one `Publisher` connection exists per distinct broker (credentials included)."""

    tls: bool
    host: str
    port: int
    username: str | None = None
    password: str | None = field(default=None, repr=False)  # kept out of logs and tracebacks

    @property
    def safe_url(self) -> str:
        """The broker URL without its password, for messages and logs."""
        user = f"{self.username}@" if self.username else ""
        return f"{'mqtts' if self.tls else 'mqtt'}://{user}{self.host}:{self.port}"


def parse_broker_url(url: str) -> Broker:
    """`mqtt://[user[:password]@]host[:port]` (default port 1883) or `mqtts://...` (TLS, default 8883)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as error:
        raise ValueError(f"invalid MQTT broker URL {url!r}: {error}") from None
    if parts.scheme not in SCHEMES:
        raise ValueError(f"MQTT broker URL must start with mqtt:// or mqtts://, got {url!r}")
    if not parts.hostname:
        raise ValueError(f"MQTT broker URL {url!r} has no host")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        # A topic written into the URL would otherwise be silently ignored.
        raise ValueError(f"MQTT broker URL {url!r} must not have a path or query: the topic is set separately")
    return Broker(
        tls=parts.scheme == "mqtts",
        host=parts.hostname,
        port=port or SCHEMES[parts.scheme],
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password is not None else None,
    )


@dataclass(frozen=True)
class NotificationTarget:
    """Where and how a destination's notifications are published.

    `expiry` is the MQTT v5 Message Expiry Interval in seconds: the broker drops the message (retained
    copy included) once it is older, so a late subscriber is not sent to a product that is gone.
    `metadata_id` identifies the dataset's WIS2 discovery metadata record; WNM requires it, so the
    `wis2` format needs it.
    """

    broker_url: str
    topic: str
    qos: int = 1
    retain: bool = False
    expiry: int | None = None
    payload_format: PayloadFormat = "pds"
    metadata_id: str | None = None

    def __post_init__(self) -> None:
        parse_broker_url(self.broker_url)
        if not self.topic:
            raise ValueError("MQTT topic must not be empty")
        if "+" in self.topic or "#" in self.topic:
            raise ValueError(f"MQTT topic {self.topic!r} has a wildcard (+ or #): these only exist in subscriptions")
        if "\0" in self.topic or len(self.topic.encode()) > 65535:
            raise ValueError(f"MQTT topic {self.topic[:80]!r} has a NUL character or is over 65535 bytes")
        if isinstance(self.qos, bool) or self.qos not in (0, 1, 2):
            raise ValueError(f"MQTT QoS must be 0, 1 or 2, got {self.qos!r}")
        if not isinstance(self.retain, bool):
            raise ValueError(f"retain must be true or false, got {self.retain!r}")
        if self.expiry is not None and (
            isinstance(self.expiry, bool) or not isinstance(self.expiry, int) or not 1 <= self.expiry <= MAX_EXPIRY
        ):
            raise ValueError(f"message expiry must be whole seconds between 1 and {MAX_EXPIRY}, got {self.expiry!r}")
        if self.payload_format not in PAYLOAD_FORMATS:
            raise ValueError(f"payload format must be one of {', '.join(PAYLOAD_FORMATS)}, got {self.payload_format!r}")
        if self.payload_format == "wis2" and not self.metadata_id:
            raise ValueError("the wis2 payload format needs a metadata_id (WNM requires properties.metadata_id)")

    @property
    def broker(self) -> Broker:
        return parse_broker_url(self.broker_url)


@dataclass(frozen=True)
class Notification:
    """One product that became available: what it is, where it went, and the URL to fetch it from.

    `name` is the path of the file at the destination. `md5` and `adler32` are the Data Store's
    checksums (lower-case hex). `sha512` (hex) is optional: WIS2 accepts only SHA-2/SHA-3 digests as
    integrity, so a `wis2` message carries an integrity check only when it is given.
    """

    name: str
    size: int
    md5: str
    destination: str
    data_file_id: int
    available_at: datetime
    """When the product became available (timezone-aware; published in UTC)."""
    url: str
    transfer_id: int | None = None
    adler32: str | None = None
    sha512: str | None = None

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("notification needs the file name")
        if self.size < 0:
            raise ValueError(f"size must not be negative, got {self.size}")
        if not _MD5.fullmatch(self.md5):
            raise ValueError(f"md5 must be 32 lower-case hex digits, got {self.md5!r}")
        if self.adler32 is not None and not _ADLER32.fullmatch(self.adler32):
            raise ValueError(f"adler32 must be 8 lower-case hex digits, got {self.adler32!r}")
        if self.sha512 is not None and not _SHA512.fullmatch(self.sha512):
            raise ValueError(f"sha512 must be 128 lower-case hex digits, got {self.sha512!r}")
        if self.available_at.tzinfo is None:
            raise ValueError("available_at must be timezone-aware (UTC)")
        if not self.url:
            raise ValueError("notification needs the URL the product is fetched from")


def rfc3339(moment: datetime) -> str:
    """UTC with a `Z` suffix, as WNM and most JSON consumers expect."""
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _json(document: dict[str, Any]) -> bytes:
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode()


def pds_payload(n: Notification, message_id: str | None = None) -> bytes:
    """The `pds` notification, compact UTF-8 JSON.

    Fields: `name` (path at the destination), `size` (bytes), `md5` (hex), `adler32` (hex or null),
    `destination`, `data_file_id`, `transfer_id` (null when not a dissemination), `available_at`
    (RFC 3339, UTC) and `url` (where to fetch the product); `id` first when the message has one (a
    notification of a transfer always has: it is the same on every copy, for dropping duplicates).
    """
    return _json(
        {
            **({"id": message_id} if message_id else {}),
            "name": n.name,
            "size": n.size,
            "md5": n.md5,
            "adler32": n.adler32,
            "destination": n.destination,
            "data_file_id": n.data_file_id,
            "transfer_id": n.transfer_id,
            "available_at": rfc3339(n.available_at),
            "url": n.url,
        }
    )


def wis2_payload(
    n: Notification,
    *,
    data_id: str,
    metadata_id: str,
    data_time: datetime | None = None,
    media_type: str = "application/octet-stream",
    geometry: dict[str, Any] | None = None,
    message_id: str | None = None,
    published_at: datetime | None = None,
) -> bytes:
    """A WIS2 Notification Message (WNM 1.0): a GeoJSON Feature announcing the product at `n.url`.

    `data_id` identifies the data for subscribers (who use it to spot updates and duplicates);
    `metadata_id` is the dataset's WIS2 discovery metadata record. `data_time` is the time the data
    describes (defaults to when it became available). The `canonical` link carries the URL, media type
    and length; `properties.integrity` is present only with a SHA-512 digest, because WNM 1.0 allows
    only SHA-2/SHA-3 methods (an MD5 integrity would make the message invalid).
    """
    properties: dict[str, Any] = {
        "data_id": data_id,
        "metadata_id": metadata_id,
        "pubtime": rfc3339(published_at or datetime.now(UTC)),
        "datetime": rfc3339(data_time or n.available_at),
    }
    if n.sha512 is not None:
        properties["integrity"] = {
            "method": "sha512",
            "value": base64.b64encode(bytes.fromhex(n.sha512)).decode(),
        }
    return _json(
        {
            "id": message_id or str(uuid.uuid4()),
            "conformsTo": [WNM_CONFORMANCE],
            "type": "Feature",
            "geometry": geometry,
            "properties": properties,
            "links": [{"rel": "canonical", "href": n.url, "type": media_type, "length": n.size}],
        }
    )


def payload(target: NotificationTarget, n: Notification, message_id: str | None = None) -> bytes:
    """The message body in the target's format; a `wis2` data_id is `<destination>/<file path>`."""
    if target.payload_format == "wis2":
        assert target.metadata_id is not None  # checked when the target was built
        data_id = f"{n.destination}/{n.name.lstrip('/')}"
        return wis2_payload(n, data_id=data_id, metadata_id=target.metadata_id, message_id=message_id)
    return pds_payload(n, message_id)


def content_type(target: NotificationTarget) -> str:
    return "application/geo+json" if target.payload_format == "wis2" else "application/json"


#: The MQTT v5 user property that carries a notification's message id, the same on every copy.
MESSAGE_ID_PROPERTY = "message-id"


class _Connection:
    """One MQTT v5 client connected to one broker; paho's network thread reconnects it when lost."""

    def __init__(self, broker: Broker, *, timeout: float, ssl_context: ssl.SSLContext | None) -> None:
        self.broker = broker
        self.timeout = timeout
        self.connected = threading.Event()
        self.answered = threading.Event()
        """Set on the first CONNACK, accepted or not: a refused login need not wait out the timeout."""
        self.refusal: str | None = None
        self._acks: dict[int, ReasonCode] = {}
        self._acks_lock = threading.Lock()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"pds-{uuid.uuid4().hex[:12]}",
            protocol=mqtt.MQTTv5,
        )
        self.client.connect_timeout = timeout
        self.client.reconnect_delay_set(min_delay=1, max_delay=30)
        if broker.username is not None:
            self.client.username_pw_set(broker.username, broker.password)
        if broker.tls:
            self.client.tls_set_context(ssl_context or ssl.create_default_context())
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_publish = self._on_publish

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: ReasonCode, props: Any) -> None:
        if reason.is_failure:
            self.refusal = str(reason)
            self.connected.clear()
        else:
            self.refusal = None
            self.connected.set()
        self.answered.set()

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: ReasonCode, props: Any) -> None:
        self.connected.clear()

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, reason: ReasonCode, props: Any) -> None:
        # Called before the message counts as published, so a waiter finds its reason code here.
        with self._acks_lock:
            self._acks[mid] = reason

    def open(self) -> None:
        """Connect now (so an unreachable broker fails this call), then hand the socket to paho's thread."""
        try:
            self.client.connect(self.broker.host, self.broker.port, keepalive=60, clean_start=True)
        except (OSError, ssl.SSLError) as error:
            raise NotificationError(f"MQTT broker {self.broker.safe_url} unreachable: {error}") from error
        self.client.loop_start()
        if not self.answered.wait(self.timeout) or not self.connected.is_set():
            self.close()
            if self.refusal:
                raise NotificationError(f"MQTT broker {self.broker.safe_url} refused the connection: {self.refusal}")
            raise NotificationError(f"MQTT broker {self.broker.safe_url} did not answer within {self.timeout:g} s")

    def publish(self, topic: str, body: bytes, qos: int, retain: bool, properties: Properties) -> None:
        where = f"{self.broker.safe_url} topic {topic!r}"
        if not self.connected.wait(self.timeout):
            why = f"refused: {self.refusal}" if self.refusal else f"not re-established within {self.timeout:g} s"
            raise NotificationError(f"connection to MQTT broker {self.broker.safe_url} lost and {why}")
        info = self.client.publish(topic, body, qos=qos, retain=retain, properties=properties)
        try:
            info.wait_for_publish(self.timeout)
        except (RuntimeError, ValueError) as error:
            raise NotificationError(f"publish to {where} failed: {error}") from error
        with self._acks_lock:
            reason = self._acks.pop(info.mid, None)
        if not info.is_published():
            # At QoS 1/2 paho keeps the message queued and may still deliver it after a reconnect:
            # subscribers must tolerate a duplicate if the caller retries.
            raise NotificationError(f"publish to {where} not acknowledged by the broker within {self.timeout:g} s")
        if reason is not None and reason.is_failure:
            raise NotificationError(f"MQTT broker rejected the publish to {where}: {reason}")

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
        self.connected.clear()


class Publisher:
    """Publishes notifications, one connection per broker, safe to share between threads.

    A connection is opened on first use and kept; if it drops, paho reconnects in the background and a
    publish waits up to `timeout` seconds for it. Every failure (unreachable broker, refused login,
    missing acknowledgement) raises `NotificationError` within about `timeout` seconds.
    """

    def __init__(self, *, timeout: float = 10.0, ssl_context: ssl.SSLContext | None = None) -> None:
        self.timeout = timeout
        self.ssl_context = ssl_context
        self._connections: dict[Broker, _Connection] = {}
        self._locks: dict[Broker, threading.Lock] = {}
        self._lock = threading.Lock()
        self._closed = False

    def _connection(self, broker: Broker) -> _Connection:
        with self._lock:
            if self._closed:
                raise NotificationError("publisher is closed")
            connection = self._connections.get(broker)
            if connection is not None:
                return connection
            broker_lock = self._locks.setdefault(broker, threading.Lock())
        # Connect outside the publisher-wide lock, so a slow broker does not hold up the others.
        with broker_lock:
            with self._lock:
                connection = self._connections.get(broker)
            if connection is None:
                connection = _Connection(broker, timeout=self.timeout, ssl_context=self.ssl_context)
                connection.open()
                with self._lock:
                    if self._closed:
                        connection.close()
                        raise NotificationError("publisher is closed")
                    self._connections[broker] = connection
            return connection

    def publish(self, target: NotificationTarget, notification: Notification) -> None:
        """Publish one notification; returns once the broker has it (acknowledged at QoS 1 and 2)."""
        body = payload(target, notification)
        self.send(
            target.broker,
            target.topic,
            body,
            qos=target.qos,
            retain=target.retain,
            expiry=target.expiry,
            content_type=content_type(target),
        )

    def send(
        self,
        broker: Broker,
        topic: str,
        body: bytes,
        *,
        qos: int,
        retain: bool,
        expiry: int | None,
        content_type: str,
        message_id: str | None = None,
    ) -> None:
        """Publish a rendered message (the outbox's); returns once the broker has it at QoS 1 and 2."""
        properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        properties.PayloadFormatIndicator = 1  # UTF-8
        properties.ContentType = content_type
        if expiry is not None:
            properties.MessageExpiryInterval = expiry
        if message_id:
            properties.UserProperty = (MESSAGE_ID_PROPERTY, message_id)
        self._connection(broker).publish(topic, body, qos, retain, properties)

    def close(self) -> None:
        """Disconnect from every broker; the publisher cannot be used afterwards."""
        with self._lock:
            self._closed = True
            connections, self._connections = list(self._connections.values()), {}
        for connection in connections:
            connection.close()

    def __enter__(self) -> Publisher:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
