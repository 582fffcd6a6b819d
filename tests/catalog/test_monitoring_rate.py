"""A destination's rate in the monitor is bytes per second while sending, not spread over the window."""

from __future__ import annotations

from datetime import timedelta

import sqlalchemy as sa

from catalog.database import session_scope
from catalog.models import DataTransfer, utcnow
from catalog.monitoring import destinations_overview
from tests.factories import destination, push

MIB = 1024 * 1024


def finish(engine, transfer_id: int, started_ago: float, took: float, size: int) -> None:
    """Record a transfer as Done, sent over [now - started_ago, now - started_ago + took]."""
    now = utcnow()
    started = now - timedelta(seconds=started_ago)
    with session_scope(engine) as session:
        session.execute(
            sa.update(DataTransfer)
            .where(DataTransfer.id == transfer_id)
            .values(
                status="Done",
                started_at=started,
                finished_at=started + timedelta(seconds=took),
                bytes_sent=size,
            )
        )


def test_rate_counts_only_the_time_spent_sending_and_overlaps_once(sqlite_engine, store):
    destination(sqlite_engine, "site1")
    ids = [push(sqlite_engine, store, "site1", f"f{i}.bin", data=b"x")[1][0] for i in range(4)]
    finish(sqlite_engine, ids[0], 100, 10, 200 * MIB)  # alone, 10 s
    finish(sqlite_engine, ids[1], 20, 10, 100 * MIB)  # these two in parallel over the same 10 s
    finish(sqlite_engine, ids[2], 18, 8, 100 * MIB)
    finish(sqlite_engine, ids[3], 3600, 10, 900 * MIB)  # an hour ago: outside the window
    with session_scope(sqlite_engine) as session:
        (view,) = destinations_overview(session)
    assert view.recent_done == 3
    assert abs(view.rate - 400 * MIB / 20) < MIB / 10  # 400 MiB in 20 s of sending: 20 MiB/s


def test_a_short_burst_shows_its_own_rate(sqlite_engine, store):
    destination(sqlite_engine, "site1")
    (transfer_id,) = push(sqlite_engine, store, "site1", "big.bin", data=b"x")[1]
    finish(sqlite_engine, transfer_id, 12, 10, 200 * MIB)
    with session_scope(sqlite_engine) as session:
        (view,) = destinations_overview(session)
    assert abs(view.rate - 20 * MIB) < MIB / 10  # not 200 MiB / 600 s = 0.33 MiB/s


def test_no_transfer_done_lately_is_a_rate_of_zero(sqlite_engine, store):
    destination(sqlite_engine, "site1")
    with session_scope(sqlite_engine) as session:
        (view,) = destinations_overview(session)
    assert view.rate == 0
