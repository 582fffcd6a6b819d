"""SFTP discovery's listing process against OpenSSH: it walks, filters and names exactly what the
in-process walk does, reports a missing directory the same way, leaves no process behind when the
walk is abandoned, and discovery still works (in process) when the child cannot start."""

from __future__ import annotations

import os
import uuid
from datetime import UTC, datetime

import psutil
import pytest

from blocks.registry import block_for
from blocks.sftp_lister import ListingProcess
from catalog.models import Host, HostKind
from catalog.selection import Selection
from tasks.discovery import listing_process, selected_pages
from tests.blocks.conftest import sftp_host


@pytest.fixture
def tree(sshd):
    """A directory tree on the server: files at three depths, names that are awkward or cannot be
    targets, sizes and ages to filter on."""
    root = sshd.data_dir / f"tree-{uuid.uuid4().hex[:8]}"
    old = datetime(2026, 1, 1, tzinfo=UTC).timestamp()
    files = {
        "a.grib": 10,
        "b.grib": 2000,
        "notes.txt": 5,
        "with space é.grib": 30,
        "bad\x01name.grib": 7,  # a control character: never a target
        "sub/c.grib": 40,
        "sub/deeper/d.grib": 50,
        "sub/deeper/deepest/e.grib": 60,
    }
    for name, size in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x" * size)
    os.utime(root / "a.grib", (old, old))
    return root


def host_for(sshd, root) -> Host:
    return sftp_host(sshd, root, name="lister", kind=HostKind.ACQUISITION)


class Rule:
    """The attributes of a listing rule that a walk reads."""

    def __init__(self, **fields):
        self.id, self.listing_format, self.wildcard, self.pattern = None, "", None, None
        self.min_size = self.max_size = self.min_age_seconds = self.max_age_seconds = None
        self.max_depth, self.target_prefix = 0, ""
        self.__dict__.update(fields)


def walked(host, rule, now, *, in_process):
    block = block_for(host)
    lister = None if in_process else listing_process(block, rule)
    try:
        if lister is not None:
            assert lister.available()
        pages = list(selected_pages(block, str(host.directory), rule, now, lister))
    finally:
        if lister is not None:
            lister.close()
    listed = pages[-1][0]
    return listed, sorted((e.path, e.target, e.size, e.modified) for _, page in pages for e in page)


@pytest.mark.parametrize(
    "fields",
    [
        {},
        {"max_depth": 2, "target_prefix": "in/coming"},
        {"max_depth": 5, "pattern": r"\.grib$", "min_size": 20, "max_size": 1000},
        {"max_depth": 1, "wildcard": "*.grib", "min_age_seconds": 3600},
        {"max_age_seconds": 86400},
    ],
)
def test_the_listing_process_selects_what_the_in_process_walk_selects(sshd, tree, fields):
    host, rule = host_for(sshd, tree), Rule(**fields)
    now = datetime.now(UTC)
    child = walked(host, rule, now, in_process=False)
    assert child == walked(host, rule, now, in_process=True)
    listed, files = child
    assert listed > 0
    names = [target for _, target, _, _ in files]
    assert not any("\x01" in n for n in names)
    if fields.get("target_prefix"):
        assert "in/coming/sub/deeper/d.grib" in names and "in/coming/sub/deeper/deepest/e.grib" not in names
    if not fields:
        assert sorted(names) == ["a.grib", "b.grib", "notes.txt", "with space é.grib"]
        (a,) = [f for f in files if f[1] == "a.grib"]
        assert (a[2], a[3]) == (10, datetime(2026, 1, 1, tzinfo=UTC))


def test_a_missing_directory_is_reported_as_in_process(sshd, tree):
    host, rule = host_for(sshd, tree / "nowhere"), Rule()
    now = datetime.now(UTC)
    with pytest.raises(FileNotFoundError) as in_process:
        walked(host, rule, now, in_process=True)
    with pytest.raises(FileNotFoundError) as in_child:
        walked(host, rule, now, in_process=False)
    assert str(in_child.value) == str(in_process.value) and "nowhere" in str(in_child.value)


def test_an_abandoned_walk_leaves_no_process(sshd, tree):
    for i in range(1500):
        (tree / f"many-{i:04}.dat").write_bytes(b"m")
    block = block_for(host_for(sshd, tree))
    lister = listing_process(block, Rule())
    assert isinstance(lister, ListingProcess) and lister.available()
    child = psutil.Process(lister._process.pid)
    pages = lister.walk(str(tree), 0, str(tree) + "/", Selection(), 100)
    next(pages)
    pages.close()  # the caller stops after one page
    child.wait(timeout=10)
    assert not child.is_running()


def test_discovery_lists_in_process_when_the_child_cannot_start(sshd, tree, monkeypatch, caplog):
    monkeypatch.setattr("blocks.sftp_lister.sys.executable", "/nonexistent/python")
    host, rule = host_for(sshd, tree), Rule()
    block = block_for(host)
    lister = listing_process(block, rule)
    assert lister is not None and not lister.available()
    assert "listing in process instead" in caplog.text
    pages = list(selected_pages(block, str(tree), rule, datetime.now(UTC), lister))
    assert sorted(e.target for _, page in pages for e in page) == ["a.grib", "b.grib", "notes.txt", "with space é.grib"]


def test_a_rule_that_lists_a_small_directory_is_listed_in_process_next_time(sshd, tree, sqlite_engine):
    from catalog.acquisition import ListingRule
    from catalog.config import create_destination
    from catalog.database import session_scope
    from catalog.models import DestinationCreate
    from tasks import discovery

    host = host_for(sshd, tree)
    with session_scope(sqlite_engine) as session:
        create_destination(session, DestinationCreate(name="small"))
        session.add(host)
        session.flush()
        session.add(ListingRule(id=4242, host_name=host.name, destination_name="small"))
    with session_scope(sqlite_engine) as session:
        rule = session.get(ListingRule, 4242)
        stored = session.get(Host, host.name)
    block = block_for(stored)
    first = listing_process(block, rule)  # not known yet: a listing process
    assert first is not None
    first.close()
    outcome = discovery.discover_rule(sqlite_engine, stored, rule, by="test")
    assert (outcome.listed, outcome.registered) == (5, 4)  # the control-character name is never a target
    assert listing_process(block, rule) is None  # 5 entries: in process from now on
    discovery._last_listed[4242] = discovery.LISTING_PROCESS_FROM
    again = listing_process(block, rule)
    assert again is not None
    again.close()
