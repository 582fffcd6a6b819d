"""OpenECPDS's dissemination semantics as the database applies them: per-host retries, failover
between ordered hosts (next and stay / next and retry, reset frequency), starts and requeues,
putting a destination on hold, active time windows and per-host connection limits."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from catalog import destination_history
from catalog.config import attach_host, create_host
from catalog.database import session_scope
from catalog.errors import FailOverToNextHost, RetryOnSameHost
from catalog.models import Destination, DestinationState, HostCreate, HostKind, utcnow
from catalog.transfers import claim, record_failure, record_success, transfer_public
from tests.factories import destination, push


def site_with_hosts(engine, tmp_path, name, hosts, **settings):
    """A destination with local hosts in this order; each host is (name, options)."""
    destination(engine, name, **settings)
    with session_scope(engine) as session:
        for rank, (host, options) in enumerate(hosts):
            create_host(
                session,
                HostCreate(name=host, protocol="file", address=str(tmp_path / host), options=options),
                known_protocols=frozenset({"file"}),
            )
            attach_host(session, name, host, HostKind.DISSEMINATION, rank=rank)


def claim_one(engine, now=None):
    with session_scope(engine) as session:
        claimed = claim(session, "m1", 10, now=now)
        return [(t.id, t.host_name) for t in claimed]


def fail(engine, tid, error, host):
    with session_scope(engine) as session:
        record_failure(session, tid, error, host=host, by="m1")
    return public(engine, tid)


def succeed(engine, tid, host):
    with session_scope(engine) as session:
        record_success(session, tid, host=host, bytes_sent=1000, by="m1")


def public(engine, tid):
    with session_scope(engine) as session:
        return transfer_public(session, tid)


LATER = timedelta(hours=1)


def test_a_host_is_retried_its_retry_count_then_the_next_host_takes_over(engine, store, tmp_path):
    site_with_hosts(engine, tmp_path, "ha", [("prim", {"retry_count": 2, "retry_frequency": 30}), ("back", {})])
    _, (tid,) = push(engine, store, "ha", "x.bin")
    assert claim_one(engine) == [(tid, "prim")]
    t = fail(engine, tid, RetryOnSameHost("connection reset"), "prim")
    assert t.status == "Requeued" and "retry 1 of 2 on host prim" in t.error
    assert claim_one(engine) == []  # not before the host's retry frequency
    now = utcnow() + timedelta(seconds=31)
    assert claim_one(engine, now) == [(tid, "prim")]
    fail(engine, tid, RetryOnSameHost("connection reset"), "prim")
    assert claim_one(engine, now + timedelta(seconds=31)) == [(tid, "prim")]
    t = fail(engine, tid, RetryOnSameHost("connection reset"), "prim")
    assert "failing over from host prim to back" in t.error
    assert claim_one(engine, now + timedelta(seconds=31)) == [(tid, "back")]  # at once, on the fallback
    succeed(engine, tid, "back")
    t = public(engine, tid)
    assert t.status == "Done" and t.host == "back" and t.start_count == 1  # one start, four attempts
    assert [h.reason for h in t.history if h.action == "claim"] == ["to host prim"] * 3 + ["to host back"]


def test_an_unreachable_host_fails_over_at_once_without_using_its_retries(engine, store, tmp_path):
    site_with_hosts(engine, tmp_path, "hb", [("p1", {"retry_count": 5}), ("b1", {})])
    _, (tid,) = push(engine, store, "hb", "x.bin")
    claim_one(engine)
    t = fail(engine, tid, FailOverToNextHost("connection refused"), "p1")
    assert "failing over from host p1 to b1: connection refused" in t.error
    assert claim_one(engine) == [(tid, "b1")]


def test_next_and_stay_keeps_the_fallback_until_the_reset_frequency(engine, store, tmp_path):
    site_with_hosts(engine, tmp_path, "hc", [("p2", {}), ("b2", {})], reset_frequency_seconds=600)
    _, (first,) = push(engine, store, "hc", "1.bin")
    claim_one(engine)
    fail(engine, first, FailOverToNextHost("down"), "p2")
    claim_one(engine)
    succeed(engine, first, "b2")
    _, (second,) = push(engine, store, "hc", "2.bin")
    assert claim_one(engine) == [(second, "b2")]  # stays on the host that worked
    succeed(engine, second, "b2")
    _, (third,) = push(engine, store, "hc", "3.bin")
    assert claim_one(engine, utcnow() + timedelta(seconds=601)) == [(third, "p2")]  # back to the primary


def test_next_and_retry_starts_every_transfer_on_the_primary(engine, store, tmp_path):
    site_with_hosts(engine, tmp_path, "hd", [("p3", {}), ("b3", {})], on_host_failure="next_and_retry")
    _, (first,) = push(engine, store, "hd", "1.bin")
    claim_one(engine)
    fail(engine, first, FailOverToNextHost("down"), "p3")
    claim_one(engine)
    succeed(engine, first, "b3")
    _, (second,) = push(engine, store, "hd", "2.bin")
    assert claim_one(engine) == [(second, "p3")]


def test_failed_starts_are_requeued_with_their_queue_time_pushed_back_then_fail(engine, store, tmp_path):
    site_with_hosts(engine, tmp_path, "he", [("p4", {})], max_starts=2, max_requeue=1, start_frequency_seconds=60)
    _, (tid,) = push(engine, store, "he", "x.bin")
    queued_at = public(engine, tid).queued_at
    now = utcnow()
    outcomes = []
    for _ in range(4):  # 2 starts, requeue, 2 more starts
        now += timedelta(seconds=61)
        assert claim_one(engine, now) == [(tid, "p4")]
        t = fail(engine, tid, RetryOnSameHost("timeout"), "p4")
        outcomes.append((t.status, t.start_count, t.requeue_count))
    assert outcomes == [("Requeued", 1, 0), ("Requeued", 0, 1), ("Requeued", 1, 1), ("Failed", 2, 1)]
    t = public(engine, tid)
    assert "failed after 1 requeue(s) of 2 start(s): timeout" in t.error
    requeued = next(h for h in t.history if "requeued (1 of 1)" in h.reason)
    assert requeued.to_status == "Requeued"
    with session_scope(engine) as session:
        assert session.get(DestinationState, "he").failed_passes == 4
    assert queued_at < t.queued_at  # pushed behind transfers queued meanwhile


def test_after_n_failed_passes_over_every_host_the_destination_goes_on_hold(engine, store, tmp_path):
    site_with_hosts(
        engine,
        tmp_path,
        "hf",
        [("p5", {}), ("b5", {})],
        max_failed_passes=2,
        start_frequency_seconds=0,
        max_parallel_transfers=1,
    )
    first, waiting = (push(engine, store, "hf", f"{i}.bin")[1][0] for i in range(2))
    for _ in range(2):
        assert claim_one(engine) == [(first, "p5")]
        fail(engine, first, FailOverToNextHost("down"), "p5")
        assert claim_one(engine) == [(first, "b5")]
        fail(engine, first, FailOverToNextHost("down too"), "b5")
    with session_scope(engine) as session:
        held = session.get(Destination, "hf")
        state = session.get(DestinationState, "hf")
        assert not held.active
        assert "2 passes over every host failed in a row" in state.hold_reason
        (last,) = destination_history.history(session, "hf", limit=1)
        assert last.action == "hold" and "2 passes over every host failed in a row" in last.reason
    assert claim_one(engine) == []  # nothing leaves a destination on hold
    assert public(engine, waiting).status == "Queued"


def test_a_success_resets_the_count_of_failed_passes(engine, store, tmp_path):
    site_with_hosts(engine, tmp_path, "hg", [("p6", {})], max_failed_passes=2, start_frequency_seconds=0)
    a, b, c = (push(engine, store, "hg", f"{i}.bin")[1][0] for i in range(3))
    claim_one(engine)
    for tid, ok in ((a, False), (b, True), (c, False)):
        if ok:
            succeed(engine, tid, "p6")
        else:
            fail(engine, tid, RetryOnSameHost("x"), "p6")
    with session_scope(engine) as session:
        assert session.get(Destination, "hg").active
        assert session.get(DestinationState, "hg").failed_passes == 1


def test_transfers_start_only_inside_the_active_time_window(engine, store, tmp_path):
    site_with_hosts(engine, tmp_path, "hw", [("p7", {})], window_start="22:00", window_end="02:00")
    _, (tid,) = push(engine, store, "hw", "x.bin")
    day = datetime(2030, 1, 1, tzinfo=UTC)
    assert claim_one(engine, day.replace(hour=12)) == []
    assert claim_one(engine, day.replace(hour=1, minute=30)) == [(tid, "p7")]  # wraps past midnight


def test_a_host_takes_no_more_than_its_max_connections_across_destinations(engine, store, tmp_path):
    site_with_hosts(engine, tmp_path, "hx", [("shared", {"max_connections": 2})], max_parallel_transfers=10)
    destination(engine, "hy", max_parallel_transfers=10)
    with session_scope(engine) as session:
        attach_host(session, "hy", "shared", HostKind.DISSEMINATION)
    for i in range(3):
        push(engine, store, "hx", f"{i}.bin")
        push(engine, store, "hy", f"{i}.bin")
    assert len(claim_one(engine)) == 2
    assert claim_one(engine) == []
