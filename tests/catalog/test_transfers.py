"""The database as the queue: order, claiming, outcomes and recovery, on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest
from sqlmodel import select

from catalog.database import session_scope
from catalog.errors import Conflict, FailOverToNextHost, FailTransfer, RetryOnSameHost
from catalog.models import DataFile, DataTransfer, Mover, TransferHistory, utcnow
from catalog.statuses import TransferStatus as S
from catalog.transfers import (
    change_status,
    claim,
    expire_due,
    heartbeat,
    record_failure,
    record_success,
    recover,
    transfer_public,
)
from tests.factories import destination, local_host, push
from tests.query_plans import sqlite_plan


@pytest.fixture
def site(engine, tmp_path):
    destination(engine, "site1", host=local_host("h1", str(tmp_path / "remote")), max_parallel_transfers=500)
    return "site1"


def claim_ids(engine, mover="m1", limit=100, **kwargs):
    with session_scope(engine) as session:
        return [t.id for t in claim(session, mover, limit, **kwargs)]


def status(engine, transfer_id):
    with session_scope(engine) as session:
        return transfer_public(session, transfer_id)


def test_claim_follows_priority_then_queue_time_then_id(engine, store, site):
    ids = {}
    for name, priority in [("a", 50), ("b", 0), ("c", 99), ("d", 0), ("e", 50)]:
        ids[name] = push(engine, store, site, f"{name}.bin", priority=priority)[1][0]
    claimed = claim_ids(engine)
    assert claimed == [ids["b"], ids["d"], ids["a"], ids["e"], ids["c"]]
    history = status(engine, ids["b"]).history
    assert [(h.from_status, h.to_status, h.by) for h in history][-1] == ("Queued", "Transferring", "m1")


def test_claim_respects_the_destination_cap_and_max_bytes(engine, store, tmp_path):
    destination(engine, "capped", host=local_host("h2", str(tmp_path / "r2")), max_parallel_transfers=2)
    for i in range(5):
        push(engine, store, "capped", f"{i}.bin")
    assert len(claim_ids(engine)) == 2
    assert claim_ids(engine) == []  # the two running transfers fill the cap
    destination(engine, "wide", host=local_host("h3", str(tmp_path / "r3")), max_parallel_transfers=50)
    for i in range(5):
        push(engine, store, "wide", f"{i}.bin", data=b"x" * 1000)
    assert len(claim_ids(engine, max_bytes=2500)) == 3  # stops once 2,500 bytes are claimed


@pytest.mark.parametrize("blocked_by", ["its cap", "its time window", "its host's connection cap"])
def test_a_destination_that_can_take_nothing_does_not_hold_up_the_others_queued_behind_it(
    engine, store, tmp_path, blocked_by
):
    """Its backlog is longer than a claim's window of candidates (four times the claim's size)."""
    slow = local_host("slow-host", str(tmp_path / "slow"))
    if blocked_by == "its host's connection cap":
        slow.options = {"max_connections": 1}
    # A window closed now: from two hours ahead to one hour ahead, wrapping past midnight if need be.
    later = [(utcnow() + timedelta(hours=h)).strftime("%H:%M") for h in (2, 3)]
    window = {"window_start": later[0], "window_end": later[1]} if blocked_by == "its time window" else {}
    destination(engine, "slow", host=slow, max_parallel_transfers=2, **window)
    destination(engine, "other", host=local_host("other-host", str(tmp_path / "other")), max_parallel_transfers=50)
    backlog = [push(engine, store, "slow", f"{i}.bin")[1][0] for i in range(60)]
    behind = push(engine, store, "other", "behind.bin")[1][0]
    first = claim_ids(engine, limit=5)  # 36 candidates
    second = claim_ids(engine, limit=5)
    allowed = {"its cap": 2, "its time window": 0, "its host's connection cap": 1}[blocked_by]
    assert set(first + second) == set(backlog[:allowed]) | {behind}


def test_a_claim_reads_each_destinations_range_and_no_whole_queue(engine, store, site):
    """What keeps a claim's cost to what the destinations could take: each destination's ready
    transfers through its own range, the candidates by id, no scan of a status's whole queue."""
    if engine.dialect.name != "sqlite":
        pytest.skip("the plan is read from SQLite's planner")
    push(engine, store, site, "one.bin")
    plan = sqlite_plan(engine, lambda: claim_ids(engine), marker="ready_queued")
    assert any("ix_data_transfer_destination_queue (destination_name=? AND status=?)" in step for step in plan), plan
    assert not any("ix_data_transfer_queue" in step or "ix_data_transfer_expiry" in step for step in plan), plan
    assert any(step.startswith("SEARCH data_transfer USING INTEGER PRIMARY KEY") for step in plan), plan


def test_portal_buckets_future_and_held_transfers_are_not_claimed(engine, store, site):
    destination(engine, "bucket")  # no dissemination host: transfers wait to be pulled
    push(engine, store, "bucket", "pulled.bin")
    push(engine, store, site, "later.bin", delay_seconds=3600)
    push(engine, store, site, "held.bin", standby=True)
    assert claim_ids(engine) == []
    assert len(claim_ids(engine, now=utcnow() + timedelta(hours=2))) == 1


def test_concurrent_movers_never_claim_the_same_transfer(engine, store, site):
    for i in range(120):
        push(engine, store, site, f"{i}.bin", data=b"x")
    claimed: dict[str, list[int]] = {f"m{i}": [] for i in range(4)}
    errors = []
    start = threading.Barrier(4)

    def mover(name):
        mine = claimed[name]
        start.wait()
        try:
            while batch := claim_ids(engine, name, limit=3):
                mine.extend(batch)
                time.sleep(0.005)  # a mover does work between claims; the others get their turn
        except Exception as exc:  # a failure here must fail the test, not vanish in a thread
            errors.append(exc)

    threads = [threading.Thread(target=mover, args=(f"m{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    everything = [tid for ids in claimed.values() for tid in ids]
    assert len(everything) == 120
    assert len(set(everything)) == 120
    assert sum(1 for ids in claimed.values() if ids) >= 2  # the work was really shared
    with session_scope(engine) as session:
        claims = session.exec(select(TransferHistory).where(TransferHistory.action == "claim")).all()
    assert len(claims) == 120


def test_success_records_bytes_host_and_times(engine, store, site):
    _, (tid,) = push(engine, store, site, "ok.bin")
    claim_ids(engine)
    with session_scope(engine) as session:
        record_success(session, tid, host="h1", bytes_sent=1000, by="m1")
    t = status(engine, tid)
    assert (t.status, t.bytes_sent, t.host, t.error) == ("Done", 1000, "h1", None)
    assert t.finished_at >= t.started_at
    assert [h.to_status for h in t.history] == ["Arriving", "Queued", "Transferring", "Done"]


def test_failures_retry_later_then_fail_and_unrecoverable_errors_stop(engine, store, tmp_path):
    destination(
        engine,
        "retry",
        host=local_host("hr", str(tmp_path / "rr")),
        max_starts=2,
        max_requeue=0,
        start_frequency_seconds=600,
    )
    _, (tid,) = push(engine, store, "retry", "x.bin")
    claim_ids(engine)
    with session_scope(engine) as session:
        record_failure(session, tid, RetryOnSameHost("timeout talking to site"), host="hr", by="m1")
    t = status(engine, tid)
    assert t.status == "Requeued" and "timeout talking to site" in t.error
    assert t.scheduled_at > utcnow() + timedelta(seconds=500)  # not retried before the start frequency
    assert claim_ids(engine) == []
    assert claim_ids(engine, now=utcnow() + timedelta(seconds=700)) == [tid]
    with session_scope(engine) as session:
        record_failure(session, tid, FailOverToNextHost("refused"), host="hr", by="m1")
    t = status(engine, tid)
    assert t.status == "Failed" and "failed after 0 requeue(s) of 2 start(s)" in t.error

    _, (tid2,) = push(engine, store, "retry", "y.bin")
    claim_ids(engine)
    with session_scope(engine) as session:
        record_failure(session, tid2, FailTransfer("bad credentials"), host="hr", by="m1")
    t = status(engine, tid2)
    assert t.status == "Stopped" and "bad credentials" in t.history[-1].reason


def test_forbidden_transitions_raise_and_write_nothing(engine, store, site):
    _, (tid,) = push(engine, store, site, "x.bin")
    with session_scope(engine) as session:
        before = len(session.exec(select(TransferHistory)).all())
    with pytest.raises(Conflict, match="Queued"), session_scope(engine) as session:
        change_status(session, tid, "complete", S.DONE, by="test")
    with session_scope(engine) as session:
        assert len(session.exec(select(TransferHistory)).all()) == before
    assert status(engine, tid).status == "Queued"


def test_recovery_interrupts_only_transfers_of_dead_or_restarting_movers(engine, store, site):
    ids = [push(engine, store, site, f"{i}.bin")[1][0] for i in range(3)]
    with session_scope(engine) as session:
        for name in ("restarting", "alive", "dead"):
            heartbeat(session, name)
        dead = session.get(Mover, "dead")
        dead.heartbeat_at = utcnow() - timedelta(minutes=10)
        session.add(dead)
    for tid, mover in zip(ids, ("restarting", "alive", "dead"), strict=True):
        assert claim_ids(engine, mover, limit=1) == [tid]
    with session_scope(engine) as session:
        recovered = recover(session, "restarting", stale_after=timedelta(seconds=30))
    assert sorted(recovered) == [ids[0], ids[2]]
    assert status(engine, ids[1]).status == "Transferring"
    t = status(engine, ids[0])
    assert t.status == "Queued"
    assert [h.to_status for h in t.history][-3:] == ["Transferring", "Interrupted", "Queued"]


def test_a_running_mover_takes_over_only_the_transfers_of_silent_movers(engine, store, site):
    ids = [push(engine, store, site, f"{i}.bin")[1][0] for i in range(3)]
    with session_scope(engine) as session:
        for name in ("running", "alive", "dead"):
            heartbeat(session, name)
        dead = session.get(Mover, "dead")
        dead.heartbeat_at = utcnow() - timedelta(minutes=10)
        session.add(dead)
    for tid, mover in zip(ids, ("running", "alive", "dead"), strict=True):
        assert claim_ids(engine, mover, limit=1) == [tid]
    with session_scope(engine) as session:
        taken = recover(session, "running", stale_after=timedelta(seconds=30), only_stale=True)
    assert taken == [ids[2]]
    assert [status(engine, i).status for i in ids] == ["Transferring", "Transferring", "Queued"]
    interrupted = [h for h in status(engine, ids[2]).history if h.to_status == "Interrupted"]
    assert interrupted[0].by == "running" and "dead" in interrupted[0].reason


def test_expired_transfers_fail_with_the_openecpds_reason(engine, store, site):
    _, (tid,) = push(engine, store, site, "x.bin", lifetime_seconds=60)
    with session_scope(engine) as session:
        assert expire_due(session, by="m1", now=utcnow() + timedelta(seconds=61)) == [tid]
    t = status(engine, tid)
    assert (t.status, t.error) == ("Failed", "not transferred before expiration")


def test_expiry_reads_the_expired_waiting_transfers_only(engine, store, site):
    """Run before every claim: through its index, whatever the number of transfers waiting."""
    if engine.dialect.name != "sqlite":
        pytest.skip("the plan is read from SQLite's planner")

    def expire() -> None:
        with session_scope(engine) as session:
            expire_due(session, by="m1")

    plan = sqlite_plan(engine, expire, marker="expires_at <")
    assert any("ix_data_transfer_expiry (status=? AND expires_at>? AND expires_at<?)" in step for step in plan), plan


def test_aliases_queue_the_same_data_file_elsewhere(engine, store, site, tmp_path):
    from catalog.models import DestinationAlias

    destination(engine, "mirror")
    destination(engine, "gribs-only")
    with session_scope(engine) as session:
        session.add(DestinationAlias(destination_name=site, alias_name="mirror", priority=5))
        session.add(DestinationAlias(destination_name=site, alias_name="gribs-only", pattern=r"\.grib$"))
    data_file_id, ids = push(engine, store, site, "a.bin")
    with session_scope(engine) as session:
        rows = session.exec(select(DataTransfer).where(DataTransfer.data_file_id == data_file_id)).all()
        assert sorted((r.destination_name, r.priority, r.status) for r in rows) == [
            ("mirror", 5, "Queued"),
            ("site1", 99, "Queued"),
        ]
        assert session.get(DataFile, data_file_id).size == 1000
    _, ids = push(engine, store, site, "b.grib")
    assert len(ids) == 3
