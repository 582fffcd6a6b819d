"""Notification messages: what a destination's MQTT notification says, in its payload format.

A destination with an `mqtt_topic` announces each transfer that is Done (`tasks.reporting`) and, with
`mqtt_on_arrival`, each file that arrives on it (`catalog.arrivals`). Both are rendered here, inside
the transaction that makes the product available, and kept in the outbox (`catalog.outbox`) until a
publisher (`tasks.notify`) sends them.

Two payloads exist: `pds` (a compact JSON of the transfer, for our own users) and `wis2`, a WIS2
Notification Message (WMO's GeoJSON format, WNM 1.0) for sites that feed WIS2 subscribers.

A WIS2 subscriber downloads the product from the message's `canonical` link and checks it against
`properties.integrity`, so that link is always an HTTP(S) URL whose bytes the SHA-512 was taken of:
the Data Portal's URL of the file (`portal_url`), or the site's own URL when the product was pushed
unchanged to an HTTP(S) host. An `sftp://` or `s3://` location is never canonical; it may follow as
an `alternate` link.
"""

from __future__ import annotations

import base64
import json
import posixpath
import re
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from string import Template
from typing import Any, Literal
from urllib.parse import quote, unquote, urlsplit

from catalog import outbox
from catalog.models import DestinationBase
from catalog.settings import Settings

PayloadFormat = Literal["pds", "wis2"]

SCHEMES = {"mqtt": 1883, "mqtts": 8883}
PAYLOAD_FORMATS = ("pds", "wis2")
MAX_EXPIRY = 2**32 - 1
"""The MQTT v5 Message Expiry Interval is a four-byte integer (seconds)."""
WNM_CONFORMANCE = "http://wis.wmo.int/spec/wnm/1/conf/core"

_MD5 = re.compile(r"[0-9a-f]{32}")
_SHA512 = re.compile(r"[0-9a-f]{128}")
_ADLER32 = re.compile(r"[0-9a-f]{8}")


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
    """One product that became available: what it is, where it is, and where to download it.

    `name` is the path of the file at the destination; `size`, `md5` and `adler32` (lower-case hex)
    describe the bytes at `url`, where the product was delivered (the site's URL of the file, or the
    Data Portal's for an arrival). `download_url` is an HTTP(S) URL anybody granted the destination
    downloads the product from (`download_size` bytes, whose SHA-512 is `sha512`): the `canonical`
    link of a `wis2` message, which cannot be made without it. `event` says why the message exists:
    `done` (a transfer delivered it) or `arrival` (it arrived on the destination).
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
    download_url: str | None = None
    download_size: int | None = None
    event: Literal["done", "arrival"] = "done"

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
        if self.download_url is not None and urlsplit(self.download_url).scheme not in ("http", "https"):
            raise ValueError(f"download URL must be http:// or https://, got {self.download_url!r}")
        if self.event not in ("done", "arrival"):
            raise ValueError(f"event must be done or arrival, got {self.event!r}")


def rfc3339(moment: datetime) -> str:
    """UTC with a `Z` suffix, as WNM and most JSON consumers expect."""
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _json(document: dict[str, Any]) -> bytes:
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode()


def pds_payload(n: Notification, message_id: str | None = None) -> bytes:
    """The `pds` notification, compact UTF-8 JSON.

    Fields: `name` (path at the destination), `size` (bytes), `md5` (hex), `adler32` (hex or null),
    `destination`, `data_file_id`, `transfer_id` (null when not a dissemination), `available_at`
    (RFC 3339, UTC), `url` (where the product is), `event` (`done` or `arrival`) and `download_url`
    (HTTP(S), or null); `id` first when the message has one (every message pds publishes has: it is
    the same on every copy, for dropping duplicates).
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
            "event": n.event,
            "download_url": n.download_url,
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
    """A WIS2 Notification Message (WNM 1.0): a GeoJSON Feature announcing the product.

    `data_id` identifies the data for subscribers (who use it to spot updates and duplicates);
    `metadata_id` is the dataset's WIS2 discovery metadata record. `data_time` is the time the data
    describes (defaults to when it became available). The `canonical` link is `n.download_url` with
    its media type and length; `n.url`, when it differs and is not a local `file://` path, follows as
    an `alternate` link. `properties.integrity` is present only with a SHA-512 digest, because WNM 1.0
    allows only SHA-2/SHA-3 methods (an MD5 integrity would make the message invalid).
    """
    if n.download_url is None:
        raise ValueError(f"a wis2 message needs an HTTP(S) URL to download {n.name} from, and it has none")
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
    length = n.download_size if n.download_size is not None else n.size
    links = [{"rel": "canonical", "href": n.download_url, "type": media_type, "length": length}]
    if n.url != n.download_url and urlsplit(n.url).scheme not in ("", "file"):
        links.append({"rel": "alternate", "href": n.url})
    return _json(
        {
            "id": _uuid(message_id),
            "conformsTo": [WNM_CONFORMANCE],
            "type": "Feature",
            "geometry": geometry,
            "properties": properties,
            "links": links,
        }
    )


def _uuid(message_id: str | None) -> str:
    """WNM wants a UUID as the message id: the outbox's (32 hex digits) in its hyphenated form."""
    if not message_id:
        return str(uuid.uuid4())
    try:
        return str(uuid.UUID(message_id))
    except ValueError:
        return message_id


def payload(
    target: NotificationTarget, n: Notification, message_id: str | None = None, published_at: datetime | None = None
) -> bytes:
    """The message body in the target's format; a `wis2` data_id is `<destination>/<file path>`."""
    if target.payload_format == "wis2":
        assert target.metadata_id is not None  # checked when the target was built
        data_id = f"{n.destination}/{n.name.lstrip('/')}"
        return wis2_payload(
            n, data_id=data_id, metadata_id=target.metadata_id, message_id=message_id, published_at=published_at
        )
    return pds_payload(n, message_id)


def content_type(target: NotificationTarget) -> str:
    return "application/geo+json" if target.payload_format == "wis2" else "application/json"


def portal_url(settings: Settings, destination: str, target: str) -> str:
    """The Data Portal's HTTPS URL of a file: what data users granted the destination download."""
    return f"{settings.resolved_public_url()}/portal/{quote(destination, safe='')}/{quote(target, safe='/')}"


def is_http(url: str) -> bool:
    return urlsplit(url).scheme in ("http", "https")


def render(
    settings: Settings,
    destination: DestinationBase,
    product: Notification,
    *,
    message_id: str | None = None,
    published_at: datetime | None = None,
) -> outbox.Notification:
    """The destination's notification of `product`, as an outbox row to add in the transaction that
    makes the product available; ValueError when it cannot be made (bad topic, no download URL...).
    The message id is a new one and the publication time now, unless given (the documentation's
    examples are rendered with fixed ones)."""
    assert destination.mqtt_topic is not None
    topic = Template(destination.mqtt_topic).safe_substitute(
        destination=destination.name, name=posixpath.basename(product.name)
    )
    target = NotificationTarget(
        broker_url=settings.mqtt_url,
        topic=topic,
        qos=destination.mqtt_qos,
        retain=destination.mqtt_retain,
        expiry=destination.mqtt_expiry_seconds,
        payload_format="wis2" if destination.mqtt_payload == "wis2" else "pds",
        metadata_id=f"urn:wmo:md:{settings.wis2_centre_id}:{destination.name}",
    )
    message_id = message_id or outbox.new_message_id()
    return outbox.Notification(
        topic=target.topic,
        body=payload(target, product, message_id, published_at),
        qos=target.qos,
        retain=target.retain,
        expiry=target.expiry,
        content_type=content_type(target),
        transfer_id=product.transfer_id,
        message_id=message_id,
    )
