"""A destination's history: holds, restarts, edits, hosts and aliases, each with who and when."""

from __future__ import annotations

from sqlmodel import select

from catalog import config, destination_history, operations
from catalog.database import session_scope
from catalog.models import DestinationCreate, DestinationHistory, HostCreate, HostKind


def rows(engine, name="site"):
    with session_scope(engine) as session:
        return [(h.action, h.by, h.reason) for h in destination_history.history(session, name)]


def test_every_change_of_a_destination_is_recorded_with_its_user(engine):
    with session_scope(engine) as session:
        config.create_destination(session, DestinationCreate(name="site"), by="alice")
        config.create_destination(session, DestinationCreate(name="mirror"), by="alice")
        for host in ("h1", "h2"):
            config.create_host(session, HostCreate(name=host, protocol="file", address="/x"), known_protocols={"file"})
    with session_scope(engine) as session:
        config.update_destination(session, "site", {"max_starts": 5, "comment": "night runs"}, by="alice")
        config.update_destination(session, "site", {"max_starts": 5}, by="alice")  # nothing changes: no row
        config.attach_host(session, "site", "h1", HostKind.DISSEMINATION, by="alice")
        config.attach_host(session, "site", "h2", HostKind.DISSEMINATION, 0, by="alice")
        config.detach_host(session, "site", "h1", HostKind.DISSEMINATION, by="bob")
        config.add_alias(session, "site", "mirror", pattern=r"\.grib$", delay_seconds=60, by="bob")
    with session_scope(engine) as session:
        operations.hold_destination(session, "site", by="carol")
    with session_scope(engine) as session:
        operations.restart_destination(session, "site", by="dave")
    assert rows(engine) == [
        ("create", "alice", ""),
        ("update", "alice", "comment '' → 'night runs', max_starts 3 → 5"),
        ("attach_host", "alice", "dissemination host h1 at rank 0"),
        ("attach_host", "alice", "dissemination host h2 at rank 0"),
        ("detach_host", "bob", "dissemination host h1"),
        ("add_alias", "bob", r"alias mirror (pattern '\\.grib$', delay 60 s)"),
        ("hold", "carol", "put on hold"),
        ("restart", "dave", "restarted (it was put on hold by carol)"),
    ]
    with session_scope(engine) as session:
        times = [h.at for h in destination_history.history(session, "site")]
        assert times == sorted(times) and all(t.tzinfo is not None for t in times)
        assert [h.action for h in destination_history.history(session, "site", limit=2)] == ["hold", "restart"]
    # The history goes with its destination.
    with session_scope(engine) as session:
        config.delete_destination(session, "site")
    with session_scope(engine) as session:
        assert session.exec(select(DestinationHistory.destination_name).distinct()).all() == ["mirror"]
