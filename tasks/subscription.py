"""Discovery by subscription: a listing rule with `listing_format = "mqtt"` subscribes to the topic
in its `directory` on the broker named by its host's `mqtt_url` option; every message names one file
(WIS2 style: the message carries the href), which is registered at once, deduped like a listing.
A message that is a STAC Item registers each of its assets on the host, with the item as metadata
(published as the provider wrote it when the rule's destination is published in the STAC inventory).

Messages understood: a WIS2 Notification Message (a GeoJSON feature whose `links` hold the href,
rel `canonical`, with `length`), pds's own notification (`url`, `size`), or any JSON object with an
`href` (or `url`) and optional `size`. The href must be under the host's address: the host's
filesystem (and credentials) fetch it.

Subscriptions are durable: each connects under a client id of its own that stays the same across
restarts (`client_id`: the installation, the host and the rule), asks the broker to keep its session
for `subscription_session_expiry_seconds` after it disconnects (MQTT 5 Session Expiry Interval, and
Clean Start off), and subscribes with QoS 1. The broker therefore queues the QoS 1 messages published
while the subscriber is stopped or restarting, and delivers them when it connects again. A message is
acknowledged only once the file it names is registered (paho acknowledges when the message callback
returns, after the registration's commit): a subscriber that dies in between is sent it again, and
the discovery dedupe key (destination and target) registers each file once.
"""

from __future__ import annotations

import json
import logging
import posixpath
import re
import threading
from datetime import datetime
from typing import Any

import paho.mqtt.client as mqtt
import sqlalchemy as sa
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions
from sqlmodel import col, select

from blocks.indexes import stac_meta
from blocks.registry import block_for
from catalog.acquisition import Listed, ListingRule, keeps, target_for
from catalog.database import read_scope
from catalog.errors import InvalidInput
from catalog.models import Host, utcnow
from tasks.discovery import register_and_publish
from tasks.notify import parse_broker_url

log = logging.getLogger("pds.subscription")

RELS = ("canonical", "item", "download", "enclosure")


def href_of(message: dict[str, Any]) -> tuple[str, int | None, datetime | None] | None:
    """(href, size, time) a notification names, or None when it names no file."""
    for link in message.get("links") or []:
        if isinstance(link, dict) and link.get("href") and link.get("rel", "canonical") in RELS:
            length = link.get("length")
            return str(link["href"]), int(length) if length is not None else None, None
    href = message.get("href") or message.get("url")
    if href:
        size = message.get("size") or message.get("length")
        return str(href), int(size) if size is not None else None, None
    return None


def listed_from(
    host: Host, rule: ListingRule, href: str, size: int | None, meta: dict[str, Any] | None = None
) -> Listed | None:
    """The registration of `href`, or None when it is not on the host (or not a usable target)."""
    base = host.address.rstrip("/") + "/"
    if not href.startswith(base):
        return None
    path = "/" + href[len(base) :].split("?", 1)[0].split("#", 1)[0].lstrip("/")
    root = "/" + block_for(host).join(host.directory).strip("/")  # the rule's directory is its topic
    relative = path[len(root) :].lstrip("/") if path.startswith(root.rstrip("/") + "/") else posixpath.basename(path)
    try:
        return Listed(path, target_for(rule, relative), size, None, meta)
    except InvalidInput:
        return None


def client_id(installation: str, host_name: str, rule_id: int | None) -> str:
    """The MQTT client id of a rule's subscription: `pds-<installation>-<host>-<rule id>`, characters
    other than letters, digits, `.`, `_` and `-` made `_`. The same at every start, so the broker gives
    the subscription its session back; unique per installation, so two installations subscribing on
    one broker never take each other's sessions."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", f"pds-{installation}-{host_name}-{rule_id}")


class Subscription:
    """One MQTT client for one rule: registers what each message names.

    `session_expiry`: seconds the broker keeps the session (and the QoS 1 messages published for it)
    after the client disconnects; 0: a clean session, nothing kept."""

    def __init__(
        self,
        engine: sa.Engine,
        host: Host,
        rule: ListingRule,
        *,
        installation: str = "pds",
        session_expiry: int = 7 * 86400,
    ) -> None:
        self.engine, self.host, self.rule = engine, host, rule
        self.registered = self.received = 0
        """Files registered; messages handled (registered, duplicates, refused)."""
        self.session_expiry = session_expiry
        url = str(host.options.get("mqtt_url") or "")
        if not url:
            raise InvalidInput(f"host {host.name} has no mqtt_url option: rule {rule.id} cannot subscribe")
        self.broker = parse_broker_url(url)
        self.client_id = client_id(installation, host.name, rule.id)
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=self.client_id, protocol=mqtt.MQTTv5)
        if self.broker.username is not None:
            self.client.username_pw_set(self.broker.username, self.broker.password)
        if self.broker.tls:
            self.client.tls_set()
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message
        self.subscribed = threading.Event()
        """Set once the broker has granted the subscription."""

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if reason.is_failure:
            log.warning("broker %s refused rule %s: %s", self.broker.safe_url, self.rule.id, reason)
            return
        if not flags.session_present and self.session_expiry:
            log.info("rule %s: the broker had no session for %s; it starts now", self.rule.id, self.client_id)
        # Again after every connection (the topic may have changed); retained messages only when the
        # subscription is new, not each time the session is resumed.
        client.subscribe(self.rule.directory, options=SubscribeOptions(qos=1, retainHandling=1))

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int, reasons: Any, props: Any) -> None:
        if all(not reason.is_failure for reason in reasons):
            self.subscribed.set()
        else:
            log.warning("broker %s refused rule %s's subscription: %s", self.broker.safe_url, self.rule.id, reasons)

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        try:
            self.handle(bytes(message.payload))
        except Exception:  # a bad message must not stop the subscription
            log.exception("message on %s for rule %s not registered", message.topic, self.rule.id)
        finally:
            self.received += 1  # handled: registered, a duplicate, or refused

    def handle(self, payload: bytes) -> int:
        try:
            document = json.loads(payload)
        except ValueError:
            log.warning("message for rule %s is not JSON; ignored", self.rule.id)
            return 0
        if not isinstance(document, dict):
            return 0
        if isinstance(document.get("assets"), dict) and document.get("stac_version"):
            assets = document["assets"].items()
            found = [
                (str(a["href"]), a.get("file:size"), key) for key, a in assets if isinstance(a, dict) and a.get("href")
            ]
        else:
            one = href_of(document)
            found = [(one[0], one[1], None)] if one is not None else []
        entries = []
        for href, size, asset in found:
            meta = stac_meta(document, asset, None) if asset is not None else None
            listed = listed_from(self.host, self.rule, href, int(size) if size is not None else None, meta)
            if listed is None:
                log.warning("rule %s: %s is not on host %s; ignored", self.rule.id, href, self.host.name)
                continue
            if keeps(self.rule, posixpath.basename(listed.path), listed.size, None, utcnow()):
                entries.append(listed)
        if not entries:
            return 0
        count = register_and_publish(self.engine, self.rule, entries, by=f"subscription {self.host.name}")
        self.registered += count
        return count

    def start(self) -> None:
        properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        properties.SessionExpiryInterval = self.session_expiry
        self.client.connect(
            self.broker.host,
            self.broker.port,
            keepalive=30,
            clean_start=self.session_expiry == 0,
            properties=properties,
        )
        self.client.loop_start()

    def stop(self) -> None:
        """Disconnect; the broker keeps the session for `session_expiry` seconds."""
        self.client.disconnect()
        self.client.loop_stop()


def subscription_rules(engine: sa.Engine) -> list[tuple[Host, ListingRule]]:
    with read_scope(engine) as session:
        rules = session.exec(
            select(ListingRule).where(ListingRule.listing_format == "mqtt", col(ListingRule.active).is_(True))
        ).all()
        found = []
        for rule in rules:
            host = session.get(Host, rule.host_name)
            if host is not None and host.active:
                found.append((host, rule))
        return found
