"""A host's `max_connections` across movers on PostgreSQL: two claims for two destinations that share a
capped host, at the same moment, never take more than the cap between them."""

from __future__ import annotations

import threading

import pytest
from sqlmodel import Session

from catalog.config import attach_host
from catalog.database import session_scope
from catalog.models import HostCreate
from catalog.transfers import claim_ids
from tests.factories import destination, push


@pytest.fixture
def shared_host(engine, store, tmp_path):
    if engine.dialect.name != "postgresql":
        pytest.skip("SQLite has one writer: claims cannot overlap there")
    host = HostCreate(name="shared", protocol="file", address=str(tmp_path / "r"), options={"max_connections": 2})
    destination(engine, "dest-a", host=host, max_parallel_transfers=10)
    destination(engine, "dest-b", max_parallel_transfers=10)
    with session_scope(engine) as session:
        attach_host(session, "dest-b", "shared", "dissemination")
    # A claim of one transfer locks the first 20 ready ones as candidates: all of dest-a's, which
    # come first, so the second claim finds only dest-b's and locks no row the first holds.
    for name, count, priority in (("dest-a", 20, 10), ("dest-b", 30, 50)):
        for i in range(count):
            push(engine, store, name, f"{i}.bin", data=b"x", priority=priority)


def test_a_second_claim_waits_for_the_first_and_counts_its_connections(engine, shared_host):
    first = Session(engine)
    taken_first = claim_ids(first, "mover-1", 1)  # not committed yet: mover-1 is between claim and commit
    assert len(taken_first) == 1
    taken_second: list[int] = []

    def second_mover() -> None:
        with session_scope(engine) as session:
            taken_second.extend(claim_ids(session, "mover-2", 10))

    thread = threading.Thread(target=second_mover, daemon=True)
    thread.start()
    thread.join(1.0)
    assert thread.is_alive(), "the second claim counted the host's connections before the first committed"
    first.commit()
    first.close()
    thread.join(10)
    assert not thread.is_alive()
    assert len(taken_second) == 1, f"the host had 1 of its 2 connections left, the second claim took {taken_second}"
