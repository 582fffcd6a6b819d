"""Transfer notifications over MQTT: the publisher that sends them to the broker.

What a message says is `catalog.notifications` (its names are re-exported here); this module sends
it. `Publisher` keeps one long-lived MQTT v5 connection per broker, shared by the mover's worker
threads; a publish with QoS 1 or 2 returns only once the broker has acknowledged it, so the caller
can record the notification as sent, or retry. With the retain flag a subscriber that connects later
still gets the newest message of a topic, so a client that was offline does not miss the product.
"""

from __future__ import annotations

import ssl
import threading
import uuid
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from catalog.notifications import (
    MAX_EXPIRY,
    PAYLOAD_FORMATS,
    WNM_CONFORMANCE,
    Broker,
    Notification,
    NotificationTarget,
    PayloadFormat,
    content_type,
    parse_broker_url,
    payload,
    pds_payload,
    rfc3339,
    wis2_payload,
)

__all__ = [
    "MAX_EXPIRY",
    "MESSAGE_ID_PROPERTY",
    "PAYLOAD_FORMATS",
    "WNM_CONFORMANCE",
    "Broker",
    "Notification",
    "NotificationError",
    "NotificationTarget",
    "PayloadFormat",
    "Publisher",
    "content_type",
    "parse_broker_url",
    "payload",
    "pds_payload",
    "rfc3339",
    "wis2_payload",
]


class NotificationError(Exception):
    """A notification could not be delivered to the broker (unreachable, refused or not acknowledged)."""


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
