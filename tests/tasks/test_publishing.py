"""The outbox, on SQLite and PostgreSQL: a Done transfer's UPH line and notification are committed with it,
copied out at least once, and a copy made twice is recognisable (the same line is not written again;
the same MQTT message id comes again)."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta

import pytest

from catalog import outbox
from catalog.database import session_scope
from catalog.errors import RetryOnSameHost
from catalog.events import parse_line
from catalog.models import utcnow
from catalog.settings import Settings
from catalog.transfers import Success, claim, record_failure, record_successes
from tasks import publishing, reporting
from tests.factories import destination, local_host, push
from tests.tasks.test_notify import Subscriber


@pytest.fixture
def settings(tmp_path, mosquitto):
    reporting.event_log.cache_clear()
    reporting.publisher.cache_clear()
    yield Settings(data_dir=tmp_path / "data", mqtt_url=mosquitto.url)
    reporting.event_log.cache_clear()
    reporting.publisher.cache_clear()


@pytest.fixture
def site():
    """A destination name of its own: notifications are retained, and the broker serves the session."""
    return f"site-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def claimed(engine, store, tmp_path, site):
    """A transfer to a destination with a topic, claimed by mover m1."""
    destination(engine, site, host=local_host("h1", str(tmp_path / "remote")), mqtt_topic="pds/$destination/$name")
    transfer_id = push(engine, store, site, "a.bin")[1][0]
    with session_scope(engine) as session:
        claim(session, "m1", 1)
    return transfer_id


def lines(settings: Settings) -> list[tuple[str, dict[str, str]]]:
    path = settings.data_dir / "logs" / "events.log"
    if not path.exists():
        return []
    return [(category, dict(pairs)) for category, pairs in map(parse_line, path.read_text().splitlines())]


def record_done(engine, settings: Settings, transfer_id: int, publisher: str | None) -> list[int]:
    """What `tasks.transfer.record_delivered` commits, without publishing it: the kill's window."""
    with session_scope(engine) as session:
        if publisher:
            outbox.claim_on_add(session, publisher)
        recorded = record_successes(session, [Success(transfer_id, host="h1", bytes_sent=100)], by="m1")
        reports = reporting.done_reports(session, [(t, f"/remote/{t.target}") for t in recorded.done])
        reporting.add_notifications(session, settings, reports)
    return outbox.added(session)


def pending(engine) -> int:
    with session_scope(engine) as session:
        return outbox.pending(session)


def test_done_and_its_reports_commit_together_or_not_at_all(engine, settings, claimed):
    with pytest.raises(RuntimeError), session_scope(engine) as session:
        record_successes(session, [Success(claimed, host="h1", bytes_sent=100)], by="m1")
        assert outbox.pending(session) == 1  # the UPH line, in the transaction
        raise RuntimeError("the mover dies before the commit")
    assert pending(engine) == 0
    assert len(record_done(engine, settings, claimed, None)) == 2  # the UPH line and the notification


def test_what_a_killed_mover_committed_goes_out_once_when_it_starts_again(engine, settings, claimed, mosquitto, site):
    subscriber = Subscriber(mosquitto.url, f"pds/{site}/#")
    try:
        record_done(engine, settings, claimed, "m1")  # claimed by m1, then m1 is killed
        assert lines(settings) == []
        assert subscriber.nothing_within(0.3)
        # Another publisher leaves m1's fresh claim alone; m1's next run takes it back at once.
        assert publishing.drain(engine, settings, "m2") == 0
        assert publishing.drain(engine, settings, "m1", since=utcnow()) == 2
        assert [(c, f["DataTransferId"]) for c, f in lines(settings)] == [("UPH", str(claimed))]
        message = subscriber.receive(timeout=5)
        assert json.loads(message.payload)["transfer_id"] == claimed
        assert dict(message.properties.UserProperty)["message-id"] == json.loads(message.payload)["id"]
        assert pending(engine) == 0 and publishing.drain(engine, settings, "m1", since=utcnow()) == 0
    finally:
        subscriber.close()


def test_a_copy_made_before_the_kill_is_not_written_twice_and_keeps_its_message_id(
    engine, settings, claimed, mosquitto, monkeypatch, site
):
    subscriber = Subscriber(mosquitto.url, f"pds/{site}/#")
    try:
        ids = record_done(engine, settings, claimed, "m1")
        # The kill lands after the copy, before the delete: the rows are published, yet still pending.
        monkeypatch.setattr(publishing.outbox, "published", lambda *a, **k: None)
        publishing.publish_added(engine, settings, "m1", ids)
        first = json.loads(subscriber.receive(timeout=5).payload)["id"]
        monkeypatch.undo()
        assert publishing.drain(engine, settings, "m1", since=utcnow()) == 2
        again = json.loads(subscriber.receive(timeout=5).payload)["id"]
    finally:
        subscriber.close()
    assert again == first  # at least once, and recognisably the same message
    assert [c for c, _ in lines(settings)] == ["UPH"]  # found in the log's tail, not written again
    assert pending(engine) == 0


def test_a_broker_that_is_down_delays_the_notification_and_loses_nothing(engine, settings, claimed, mosquitto, site):
    down = Settings(data_dir=settings.data_dir, mqtt_url="mqtt://127.0.0.1:9")  # nothing listens there
    reporting.publisher.cache_clear()
    ids = record_done(engine, settings, claimed, "m1")
    publishing.publish_added(engine, down, "m1", ids)
    assert [c for c, _ in lines(settings)] == ["UPH"]  # the line does not wait for the broker
    with session_scope(engine) as session:
        (row,) = outbox.claim(session, "m1", since=utcnow(), retry_after=timedelta(0))
        assert row.sink == outbox.Sink.MQTT and "unreachable" in (row.last_error or "")
    subscriber = Subscriber(mosquitto.url, f"pds/{site}/#")
    try:
        reporting.publisher.cache_clear()
        assert publishing.drain(engine, settings, "m1", retry_after=timedelta(0)) == 1
        assert json.loads(subscriber.receive(timeout=5).payload)["transfer_id"] == claimed
    finally:
        subscriber.close()


def test_every_failed_attempt_has_its_err_line(engine, settings, claimed):
    with session_scope(engine) as session:
        outbox.claim_on_add(session, "m1")
        record_failure(session, claimed, RetryOnSameHost("connection reset"), host="h1", by="m1")
    publishing.publish_added(engine, settings, "m1", outbox.added(session))
    ((category, fields),) = lines(settings)
    assert category == "ERR" and fields["Message"] == "connection reset" and fields["DataTransferId"] == str(claimed)


def test_a_portal_inh_line_the_api_could_not_write_goes_out_once_through_a_mover(engine, settings, store, site):
    """The API commits a download's INH line with its usage row; if the API cannot write it (or dies
    first), the line waits in the outbox and a mover's drain writes it after the claim's lease."""
    from catalog.events import EventLog
    from catalog.portal import Portal
    from catalog.users import ensure_user

    destination(engine, site)
    transfer_id = push(engine, store, site, "a.bin")[1][0]
    with session_scope(engine) as session:
        ensure_user(session, "reader", "reader-pw")
    broken = EventLog.open(str(settings.data_dir / "no-such-dir" / "events.log"))
    broken._stream.close()  # every write now fails: as an API process dying before it wrote
    portal = Portal(engine, store, broken)
    portal.record_usage(portal.user("reader"), transfer_id, "download", 1000, "https", "10.0.0.1", utcnow(), 0.5)

    assert lines(settings) == []
    with session_scope(engine) as session:
        assert outbox.pending(session) == 1
        session.exec(  # the API's claim has outlived its lease
            outbox._table().update().values(claimed_at=utcnow() - outbox.LEASE - timedelta(seconds=1))
        )
    assert publishing.drain(engine, settings, "m1") == 1
    assert publishing.drain(engine, settings, "m1") == 0
    ((category, fields),) = lines(settings)
    assert category == "INH" and fields["DataTransferId"] == str(transfer_id) and fields["Action"] == "download"
    assert fields["UserId"] == "reader" and fields["BytesSent"] == "1000"
