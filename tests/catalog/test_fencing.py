"""The attempt number as a fencing token, on SQLite and PostgreSQL: once a transfer was stopped and
claimed again, the earlier attempt's writer can record nothing — no progress, no Done, no failure."""

from __future__ import annotations

import pytest

from catalog import attempts
from catalog.database import session_scope
from catalog.errors import Conflict, RetryOnSameHost
from catalog.operations import requeue, stop
from catalog.transfers import Success, claim, record_failure, record_progress, record_successes, transfer_public
from tests.factories import destination, local_host, push


def test_a_late_writer_of_an_earlier_attempt_changes_nothing(engine, store, tmp_path):
    destination(engine, "fenced", host=local_host("fh", str(tmp_path / "r")))
    (tid,) = push(engine, store, "fenced", "f.bin")[1]
    with session_scope(engine) as session:
        (first,) = claim(session, "mover-1", 1)
    assert first.attempt == 1
    with session_scope(engine) as session:
        stop(session, tid, by="alice")
        requeue(session, tid, by="alice")
    with session_scope(engine) as session:
        (second,) = claim(session, "mover-2", 1)
    assert second.attempt == 2
    with session_scope(engine) as session:
        assert record_progress(session, tid, 999, attempt=1) is False
        assert attempts.still_running(session, tid, 1) is False
        assert attempts.still_running(session, tid, 2) is True
        recorded = record_successes(session, [Success(tid, host="fh", bytes_sent=1, attempt=1)], by="mover-1")
        assert recorded.done == [] and tid in recorded.refused
        with pytest.raises(Conflict, match="attempt 1 is over"):
            record_failure(session, tid, RetryOnSameHost("late"), host="fh", by="mover-1", attempt=1)
    with session_scope(engine) as session:
        view = transfer_public(session, tid)
        assert view.status == "Transferring" and view.bytes_sent == 0
        assert [(a.number, a.mover, a.outcome) for a in view.attempts] == [
            (1, "mover-1", "Stopped"),
            (2, "mover-2", None),
        ]
        assert record_successes(session, [Success(tid, host="fh", bytes_sent=1, attempt=2)], by="mover-2").done
