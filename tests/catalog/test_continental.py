"""Continental movers in the database: who may claim a proxied transfer, and what is due for
pre-replication, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import timedelta

import pytest

from catalog.config import attach_host, create_host
from catalog.continental import (
    due_for_pre_replication,
    lead_time,
    proxy_host,
    record_pre_replication,
)
from catalog.database import session_scope
from catalog.errors import InvalidInput
from catalog.models import Host, HostCreate, HostKind, utcnow
from catalog.transfers import claim, heartbeat, transfer_public
from tests.factories import destination, local_host, push

STALE = timedelta(seconds=30)


@pytest.fixture
def proxied(engine, tmp_path):
    """Destination `far` served by the continental mover of proxy host `eu-west`; `near` by the main movers."""
    destination(engine, "far", host=local_host("far-disk", str(tmp_path / "far")), max_parallel_transfers=50)
    destination(engine, "near", host=local_host("near-disk", str(tmp_path / "near")), max_parallel_transfers=50)
    with session_scope(engine) as session:
        create_host(
            session,
            HostCreate(
                name="eu-west",
                kind=HostKind.PROXY,
                protocol="file",
                address=str(tmp_path / "eu"),
                options={"lead_seconds": 600},
            ),
            known_protocols=frozenset({"file"}),
        )
        attach_host(session, "far", "eu-west", HostKind.PROXY)
    return "far"


def claim_ids(engine, mover, **kwargs):
    with session_scope(engine) as session:
        return sorted(t.id for t in claim(session, mover, 100, stale_after=STALE, **kwargs))


def beat(engine, mover, proxy=None, at=None):
    with session_scope(engine) as session:
        heartbeat(session, mover, starting=True, proxy_host=proxy)
    if at is not None:
        with engine.begin() as connection:
            from sqlalchemy import text

            connection.execute(text("UPDATE mover SET heartbeat_at = :at WHERE name = :n"), {"at": at, "n": mover})


def due(engine, now=None):
    with session_scope(engine) as session:
        host = proxy_host(session, "eu-west")
        return due_for_pre_replication(session, "eu-west", lead=lead_time(host), now=now)


def record(engine, items, error=None):
    with session_scope(engine) as session:
        for item in items:
            record_pre_replication(session, item, "eu-west", error=error, mover="continental-1")


def test_files_are_due_for_pre_replication_within_the_lead_time(engine, store, proxied):
    now = utcnow()
    soon = push(engine, store, "far", "soon.bin", delay_seconds=300)[1][0]
    push(engine, store, "far", "later.bin", delay_seconds=3600)
    push(engine, store, "near", "elsewhere.bin")
    items = due(engine, now)
    assert [i.transfer_id for i in items] == [soon], "only the far destination's file due within 600 s"
    record(engine, items)
    assert due(engine, now) == [], "a file copied once is not copied again"
    assert [i.transfer_id for i in due(engine, now + timedelta(seconds=3100))] != []


def test_the_continental_mover_claims_only_what_it_pre_replicated(engine, store, proxied):
    far_1 = push(engine, store, "far", "a.bin")[1][0]
    far_2 = push(engine, store, "far", "b.bin")[1][0]
    near = push(engine, store, "near", "c.bin")[1][0]
    beat(engine, "continental-1", "eu-west")
    record(engine, [i for i in due(engine) if i.transfer_id == far_1])
    assert claim_ids(engine, "main-1") == [near], "the main mover leaves a live continental mover's transfers"
    assert claim_ids(engine, "continental-1", proxy_host="eu-west") == [far_1]
    assert transfer_public_of(engine, far_1).proxy_host == "eu-west"
    assert claim_ids(engine, "continental-1", proxy_host="eu-west") == [], f"{far_2} is not copied yet"


def test_main_movers_take_over_when_the_continental_mover_is_silent(engine, store, proxied):
    far = push(engine, store, "far", "a.bin")[1][0]
    beat(engine, "continental-1", "eu-west", at=utcnow() - STALE - timedelta(seconds=1))
    record(engine, due(engine))
    assert claim_ids(engine, "main-1") == [far]
    taken = transfer_public_of(engine, far)
    assert taken.proxy_host is None and taken.mover == "main-1"
    assert "takeover from proxy host eu-west (its continental mover is silent)" in taken.history[-1].reason


def test_main_movers_send_what_failed_to_pre_replicate(engine, store, proxied):
    good = push(engine, store, "far", "good.bin")[1][0]
    bad = push(engine, store, "far", "bad.bin")[1][0]
    beat(engine, "continental-1", "eu-west")
    items = {i.transfer_id: i for i in due(engine)}
    record(engine, [items[good]])
    record(engine, [items[bad]], error="OSError: disk full")
    assert claim_ids(engine, "main-1") == [bad]
    assert "(its pre-replication of the file failed)" in transfer_public_of(engine, bad).history[-1].reason
    assert claim_ids(engine, "continental-1", proxy_host="eu-west") == [good]


def test_a_destination_has_one_proxy_host_and_bad_settings_are_refused(engine, proxied, tmp_path):
    with session_scope(engine) as session:
        create_host(
            session,
            HostCreate(name="us-east", kind=HostKind.PROXY, protocol="file", address=str(tmp_path / "us")),
            known_protocols=frozenset({"file"}),
        )
        attach_host(session, "far", "us-east", HostKind.PROXY)
    from catalog.config import list_destination_hosts

    with session_scope(engine) as session:
        assert [h.host_name for h in list_destination_hosts(session, "far", HostKind.PROXY)] == ["us-east"]
        with pytest.raises(InvalidInput, match="no active host 'nowhere'"):
            proxy_host(session, "nowhere")
    with pytest.raises(InvalidInput, match="lead_seconds must be a number"):
        lead_time(Host(name="x", kind=HostKind.PROXY, protocol="file", options={"lead_seconds": "soon"}))


def transfer_public_of(engine, transfer_id):
    with session_scope(engine) as session:
        return transfer_public(session, transfer_id)
