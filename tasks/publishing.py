"""The outbox publisher: copies the outbox's rows to the event log and the MQTT broker, then deletes them.

Two paths use it. Right after a mover commits outcomes, `publish_added` copies the rows that
transaction added (claimed as they were added, so no other publisher takes them meanwhile); that
keeps a line or a notification within milliseconds of its transfer's change, as before the outbox.
And a mover runs `drain` every few seconds, and once when it starts: rows whose publisher died (its
claim outlived the lease), its own from a previous run, and rows that failed (a broker that was down)
go out then.

At least once: a row is deleted only after its sink took it, so a kill in between copies it again
later. A second copy of an event line is looked for in the tail of the log and skipped; a second MQTT
message carries the same message id (user property `message-id`, and the `id` of the payload) for
subscribers to drop.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from datetime import datetime, timedelta

import sqlalchemy as sa

from catalog import outbox
from catalog.database import session_scope
from catalog.models import utcnow
from catalog.outbox import OutboxMessage, Sink
from catalog.settings import Settings
from tasks import reporting
from tasks.notify import NotificationError, parse_broker_url

log = logging.getLogger("pds.publishing")

#: A row that failed goes again after this long (a broker that is down is not asked every poll).
RETRY_AFTER = timedelta(seconds=5)

#: Claims of this process's publishers older than this are from an earlier run of the same name.
STARTED = utcnow()

# One copy at a time in a process: lines reach the log in the order they were added, and a row a
# drain and a just-committed transaction both hold is copied once.
_lock = threading.Lock()


def publish_added(engine: sa.Engine, settings: Settings, publisher: str, ids: Sequence[int]) -> None:
    """Copy out the rows a committed transaction added under `publisher`'s claim."""
    if not ids:
        return
    with _lock:
        with session_scope(engine) as session:
            rows = outbox.rows(session, ids, publisher=publisher)
        _publish(engine, settings, publisher, rows)


def drain(
    engine: sa.Engine,
    settings: Settings,
    publisher: str,
    *,
    retry_after: timedelta = RETRY_AFTER,
    since: datetime = STARTED,
    limit: int = 500,
) -> int:
    """Claim what is due and copy it out, until nothing is; the number of rows published."""
    total = 0
    with _lock:
        while True:
            with session_scope(engine) as session:
                rows = outbox.claim(session, publisher, since=since, retry_after=retry_after, limit=limit)
            if not rows:
                return total
            total += _publish(engine, settings, publisher, rows)
            if len(rows) < limit or total == 0:
                return total


def _publish(engine: sa.Engine, settings: Settings, publisher: str, rows: list[OutboxMessage]) -> int:
    done: list[int] = []
    failures: dict[str, list[int]] = {}
    lines = [r for r in rows if r.sink == Sink.EVENT_LOG]
    if lines:
        try:
            _write_lines(settings, lines)
            done += [r.id for r in lines if r.id is not None]
        except (OSError, ValueError) as exc:
            failures.setdefault(f"event log: {exc}", []).extend(r.id for r in lines if r.id is not None)
    for row in rows:
        if row.sink != Sink.MQTT or row.id is None:
            continue
        try:
            _send(settings, row)
            done.append(row.id)
        except (NotificationError, ValueError) as exc:
            failures.setdefault(str(exc), []).append(row.id)
    with session_scope(engine) as session:
        outbox.published(session, done, publisher=publisher)
        for error, ids in failures.items():
            outbox.failed(session, ids, error, publisher=publisher)
    for error, ids in failures.items():
        log.warning("%d outbox message(s) kept for another try: %s", len(ids), error)
    return len(done)


def _write_lines(settings: Settings, rows: list[OutboxMessage]) -> None:
    outbox.write_lines_out(reporting.event_log(settings.resolved_event_log()), rows)


def _send(settings: Settings, row: OutboxMessage) -> None:
    if not settings.mqtt_url or row.topic is None:
        log.warning("notification %s dropped: no MQTT broker configured (PDS_MQTT_URL)", row.message_id)
        return
    expiry = row.expiry
    if expiry is not None:
        # The broker counts the expiry from when it gets the message: count the wait in the outbox too,
        # so a late subscriber is not sent to a product that is gone.
        expiry -= int((utcnow() - row.created_at).total_seconds())
        if expiry <= 0:
            log.warning("notification %s expired in the outbox (broker unreachable too long)", row.message_id)
            return
    reporting.publisher().send(
        parse_broker_url(settings.mqtt_url),
        row.topic,
        row.body.encode(),
        qos=row.qos,
        retain=row.retain,
        expiry=expiry,
        content_type=row.content_type or "application/json",
        message_id=row.message_id,
    )
