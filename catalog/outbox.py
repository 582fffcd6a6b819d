"""The outbox: event lines and notifications as rows, written in the transaction of the change they report.

A transfer recorded Done and its UPH line (and MQTT notification) are one commit: a mover killed
right after it leaves a pending row, not a Done transfer nobody heard of; killed before it, neither
exists. A publisher (`tasks.publishing`) then copies each row to its sink — the event-log file or the
MQTT broker — and deletes it. It may copy a row twice (killed between the copy and the delete), never
lose one: delivery is at least once, and every row carries a `message_id` that stays the same on every
copy, so a consumer can drop the duplicates (the MQTT message carries it; a repeated event line is
found in the log's tail and skipped).

Publishers share the table by claiming rows: `claimed_by` names the publisher and `claimed_at` when;
a claim older than the lease is anybody's again, so the rows of a publisher that died are published
by another, or by itself when it starts again (it takes back its own claims at once).
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from sqlmodel import Column, Field, Session, SQLModel, col, select

from catalog.database import session_scope
from catalog.events import Event, EventLog
from catalog.models import UTCDateTime, utcnow

#: A claim older than this is taken to belong to a publisher that died; its rows are published again.
LEASE = timedelta(seconds=60)

#: `Session.info` key: the publisher that claims the rows a transaction adds, at once, so that it can
#: publish them right after the commit without a second write (see `claim_on_add`).
CLAIMANT = "pds.outbox.claimant"
#: `Session.info` key: the ids of the rows added in this session, for the publisher after the commit.
ADDED = "pds.outbox.added"


class Sink(StrEnum):
    """Where a row goes."""

    EVENT_LOG = "event_log"
    MQTT = "mqtt"


class OutboxMessage(SQLModel, table=True):
    """One event line or notification waiting to be published."""

    __tablename__ = "outbox"
    __table_args__ = (sa.Index("ix_outbox_claim", "claimed_at", "id"),)
    id: int | None = Field(default=None, primary_key=True)
    message_id: str = Field(max_length=32, unique=True)
    """Stable across every copy of the message: what consumers drop duplicates by."""
    sink: Sink = Field(sa_type=sa.String(16))
    transfer_id: int | None = Field(default=None, index=True)
    """The data transfer reported on, if any; no foreign key, so purging a transfer keeps its lines."""
    category: str | None = Field(default=None, max_length=8)
    """UPH, ERR, ... for an event line."""
    body: str = Field(sa_type=sa.Text)
    """The event line (without its line break), or the notification's UTF-8 payload."""
    topic: str | None = None
    qos: int = 1
    retain: bool = False
    expiry: int | None = None
    content_type: str | None = None
    created_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))
    claimed_by: str | None = None
    claimed_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime(), nullable=True))
    claims: int = 0
    """How many times a publisher took the row: above one, an earlier copy may already be out."""
    last_error: str | None = None


def _table() -> sa.Table:
    table: sa.Table = OutboxMessage.__table__  # type: ignore[attr-defined]
    return table


def new_message_id() -> str:
    return uuid.uuid4().hex


@dataclass(frozen=True)
class Notification:
    """A notification as the outbox keeps it: rendered, with where and how to publish it."""

    topic: str
    body: bytes
    qos: int
    retain: bool
    expiry: int | None
    content_type: str
    transfer_id: int | None = None
    message_id: str = ""


def claim_on_add(session: Session, publisher: str) -> None:
    """Rows this session adds are claimed by `publisher`, which publishes them after the commit."""
    session.info[CLAIMANT] = publisher


def added(session: Session) -> list[int]:
    """The ids of the rows added in `session` (to publish once it committed)."""
    ids: list[int] = session.info.get(ADDED, [])
    return ids


def _insert(session: Session, rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    claimant = session.info.get(CLAIMANT)
    now = utcnow()
    for row in rows:
        row.setdefault("message_id", new_message_id())
        row["created_at"] = now
        row["claimed_by"] = claimant
        row["claimed_at"] = now if claimant else None
        row["claims"] = 1 if claimant else 0
    table = _table()
    ids: list[int] = list(session.connection().execute(sa.insert(table).returning(table.c.id), rows).scalars())
    session.info.setdefault(ADDED, []).extend(ids)


def add_lines(session: Session, events: Sequence[Event]) -> None:
    """Event lines to append to the event log once this transaction commits."""
    _insert(
        session,
        [
            {
                "sink": Sink.EVENT_LOG.value,
                "transfer_id": _transfer_id(event),
                "category": event.CATEGORY,
                "body": event.render(),
                "qos": 0,
                "retain": False,
            }
            for event in events
        ],
    )


def add_notifications(session: Session, notifications: Sequence[Notification]) -> None:
    """MQTT notifications to publish once this transaction commits."""
    _insert(
        session,
        [
            {
                "sink": Sink.MQTT.value,
                "transfer_id": n.transfer_id,
                "body": n.body.decode(),
                "topic": n.topic,
                "qos": n.qos,
                "retain": n.retain,
                "expiry": n.expiry,
                "content_type": n.content_type,
                **({"message_id": n.message_id} if n.message_id else {}),
            }
            for n in notifications
        ],
    )


def _transfer_id(event: Event) -> int | None:
    value = getattr(event, "data_transfer_id", None)
    return value if isinstance(value, int) else None


def claim(
    session: Session,
    publisher: str,
    *,
    since: datetime,
    retry_after: timedelta,
    limit: int = 500,
    now: datetime | None = None,
) -> list[OutboxMessage]:
    """Take up to `limit` rows due for publishing, oldest first: unclaimed ones, those whose claim
    outlived the lease, this publisher's own from before `since` (its previous run) and its own
    that failed at least `retry_after` ago. Commit right after."""
    now = now or utcnow()
    table = _table()
    due = sa.or_(
        table.c.claimed_at.is_(None),
        table.c.claimed_at < now - LEASE,
        # its own: claimed by its previous run, or failed long enough ago to try again
        sa.and_(table.c.claimed_by == publisher, table.c.claimed_at < max(since, now - retry_after)),
    )
    candidates = sa.select(table.c.id).where(due).order_by(table.c.id).limit(limit)
    if session.get_bind().dialect.name == "postgresql":
        candidates = candidates.with_for_update(skip_locked=True)
    ids: list[int] = list(session.connection().execute(candidates).scalars())
    if not ids:
        return []
    session.connection().execute(
        sa.update(table)
        .where(table.c.id.in_(ids), due)
        .values(claimed_by=publisher, claimed_at=now, claims=table.c.claims + 1)
    )
    return rows(session, ids, publisher=publisher)


def rows(session: Session, ids: Sequence[int], *, publisher: str) -> list[OutboxMessage]:
    """The rows `ids` that `publisher` holds the claim of, oldest first."""
    if not ids:
        return []
    query = (
        select(OutboxMessage)
        .where(col(OutboxMessage.id).in_(list(ids)), OutboxMessage.claimed_by == publisher)
        .order_by(col(OutboxMessage.id))
        .execution_options(populate_existing=True)
    )
    return list(session.exec(query))


def published(session: Session, ids: Sequence[int], *, publisher: str) -> None:
    """The rows went out: delete them (only while `publisher` still holds the claim)."""
    if ids:
        table = _table()
        session.connection().execute(sa.delete(table).where(table.c.id.in_(list(ids)), table.c.claimed_by == publisher))


def failed(session: Session, ids: Sequence[int], error: str, *, publisher: str, now: datetime | None = None) -> None:
    """The rows could not go out: keep them, with why, for the publisher's next try."""
    if ids:
        table = _table()
        session.connection().execute(
            sa.update(table)
            .where(table.c.id.in_(list(ids)), table.c.claimed_by == publisher)
            .values(last_error=error[:1000], claimed_at=now or utcnow())
        )


def process_publisher(role: str) -> str:
    """The publisher name of this process (`api@host:pid`): its claims outlive it by the lease only."""
    return f"{role}@{socket.gethostname()}:{os.getpid()}"


def write_lines_out(event_log: EventLog, rows: Sequence[OutboxMessage]) -> None:
    """Append the event-line rows to the log in one write; raise OSError or ValueError if it fails.
    A row taken more than once may be in the log already (its publisher died after the write, before
    the delete): the log's tail says. Lines hold the transfer id and times to the millisecond, so an
    equal line is that copy."""
    seen = event_log.tail() if any(r.claims > 1 for r in rows) else set()
    event_log.write_lines([r.body for r in rows if not (r.claims > 1 and r.body in seen)])


def publish_lines(engine: sa.Engine, event_log: EventLog, publisher: str, ids: Sequence[int]) -> None:
    """For the API's processes, which publish no MQTT: copy out the event lines a committed
    transaction added under `publisher`'s claim. Lines that cannot be written stay in the outbox, and
    a mover's drain writes them once the claim's lease is over."""
    if not ids:
        return
    with session_scope(engine) as session:
        lines = [r for r in rows(session, ids, publisher=publisher) if r.sink == Sink.EVENT_LOG]
    done = [r.id for r in lines if r.id is not None]
    try:
        write_lines_out(event_log, lines)
    except (OSError, ValueError) as exc:
        with session_scope(engine) as session:
            failed(session, done, f"event log: {exc}", publisher=publisher)
        return
    with session_scope(engine) as session:
        published(session, done, publisher=publisher)


def pending(session: Session) -> int:
    """How many rows wait (for the monitor and tests)."""
    return int(session.exec(select(sa.func.count()).select_from(_table())).one())
