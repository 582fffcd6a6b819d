"""State the API replicas share through PostgreSQL: each "replica" here is its own engine (its own
connection pool), as each API process has; a quota, a connection limit and the session key hold across
them, concurrent requests included."""

from __future__ import annotations

import threading
import uuid

import pytest

from api.qos import QosCounters, QuotaExceeded, Usage
from api.sessions import SessionSigner
from catalog.database import make_engine, migrate
from catalog.proxy import ProxyQuota
from catalog.settings import Settings
from catalog.shared_state import SharedConnectionSlots, SharedCounters, shared_key

pytestmark = pytest.mark.postgres


@pytest.fixture
def replicas(postgres):
    """Two engines on one migrated PostgreSQL database."""
    url = postgres.create_database(f"t_{uuid.uuid4().hex[:12]}")
    engines = [make_engine(url), make_engine(url)]
    migrate(engines[0])
    yield engines
    for engine in engines:
        engine.dispose()


def counters(engine, clock):
    return QosCounters(clock, SharedCounters(engine))


def test_a_quota_holds_across_replicas(replicas):
    now = [1_000_000.0]
    a, b = (counters(e, lambda: now[0]) for e in replicas)
    quota = ProxyQuota(subject="user:alice", period_seconds=60, max_requests=3)
    a.charge([quota], Usage.REQUESTS)
    b.charge([quota], Usage.REQUESTS)
    a.charge([quota], Usage.REQUESTS)
    for replica in (a, b):
        with pytest.raises(QuotaExceeded) as refused:
            replica.charge([quota], Usage.REQUESTS)
        assert refused.value.retry_after == 20  # the window ends at 1,000,020
    now[0] += 20  # the next window
    b.charge([quota], Usage.REQUESTS)


def test_one_refused_quota_counts_nothing_against_the_others(replicas):
    a, b = (counters(e, lambda: 5000.0) for e in replicas)
    user = ProxyQuota(subject="user:bob", period_seconds=3600, max_bytes=1000)
    group = ProxyQuota(subject="group:lab", period_seconds=3600, max_bytes=1500)
    a.charge([user, group], Usage.BYTES, 900)
    other = ProxyQuota(subject="user:carol", period_seconds=3600, max_bytes=1000)
    with pytest.raises(QuotaExceeded, match="group:lab"):
        b.charge([other, group], Usage.BYTES, 700)
    # carol's 700 were not counted: she can still use all of her 1000 (the group allowing 600).
    b.charge([other], Usage.BYTES, 1000)
    b.charge([group], Usage.BYTES, 600)


def test_concurrent_requests_on_both_replicas_never_exceed_a_quota(replicas):
    shared = [counters(e, lambda: 7000.0) for e in replicas]
    quota = ProxyQuota(subject="user:dave", period_seconds=3600, max_requests=50)
    accepted, refused = [], []

    def request(i: int) -> None:
        try:
            shared[i % 2].charge([quota], Usage.REQUESTS)
            accepted.append(i)
        except QuotaExceeded:
            refused.append(i)

    threads = [threading.Thread(target=request, args=(i,)) for i in range(80)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert (len(accepted), len(refused)) == (50, 30)
    assert {i % 2 for i in accepted} == {0, 1}, "both replicas served some"


def test_connection_slots_are_shared_and_freed_when_a_process_dies(replicas):
    a, b = (SharedConnectionSlots(e) for e in replicas)
    try:
        assert a.take("erin", 2)
        assert b.take("erin", 2)
        assert not a.take("erin", 2) and not b.take("erin", 2)
        assert a.take("frank", 2), "another user's slots are his own"
        a.give_back("erin")
        assert b.take("erin", 2), "the slot given back"
        # A replica that dies loses its database connections, and with them the two slots it held.
        b.dispose()
        assert a.take("erin", 2) and a.take("erin", 2) and not a.take("erin", 2)
    finally:
        a.dispose()
        b.dispose()


def test_replicas_share_one_session_key(replicas):
    settings = Settings()  # no PDS_SESSION_SECRET
    first, second = (SessionSigner(settings, e) for e in replicas)
    cookie = first.issue("admin")
    session = second.read(cookie)
    assert session is not None and session.login == "admin"
    assert second.check_form_token(session.nonce, first.form_token(session.nonce))
    assert shared_key(replicas[0], "session") == shared_key(replicas[1], "session")
    assert shared_key(replicas[0], "other") != shared_key(replicas[0], "session")


def test_a_configured_session_secret_is_used_as_given(replicas):
    settings = Settings(session_secret="configured")
    cookie = SessionSigner(settings, replicas[0]).issue("admin")
    assert SessionSigner(settings).read(cookie) is not None
    assert SessionSigner(Settings(), replicas[1]).read(cookie) is None
