"""Discovery passes side by side: hosts discovered at once (a slow provider delays only itself), and one
pass per host at a time, held in the database so it holds across processes."""

from __future__ import annotations

import contextvars
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlmodel import Session, func, select

from catalog.acquisition import (
    AcquisitionState,
    Discovered,
    ListingRuleCreate,
    add_rule,
    due_hosts,
    keep_pass,
    release_pass,
    take_pass,
)
from catalog.config import create_destination, create_host
from catalog.database import make_engine, session_scope
from catalog.models import DataFile, DestinationCreate, HostCreate, HostKind
from tests.acquisition.conftest import PROTOCOLS, _local_source, acquisition_setup


def count(engine, model, *where) -> int:
    with Session(engine) as session:
        return session.exec(select(func.count()).select_from(model).where(*where)).one()


def in_thread(function, *args, **kwargs):
    """Run `function` in a thread with the test's context (its Prefect server); a future of its result."""
    pool = ThreadPoolExecutor(1)
    future = pool.submit(contextvars.copy_context().run, function, *args, **kwargs)
    pool.shutdown(wait=False)
    return future


@pytest.fixture
def held_listing(monkeypatch):
    """Listings under a directory named `slow-provider` wait until the test lets them go (`release.set()`)."""
    import tasks.discovery

    release, waiting = threading.Event(), threading.Event()
    walk = tasks.discovery.walk

    def held(block, fs, root, *args, **kwargs):
        if "slow-provider" in root:
            waiting.set()
            assert release.wait(60), "the test never let the slow listing go"
        yield from walk(block, fs, root, *args, **kwargs)

    monkeypatch.setattr(tasks.discovery, "walk", held)
    yield release, waiting
    release.set()


def file_source(tmp_path, name: str, files: int):
    root = tmp_path / name
    source = _local_source(HostCreate(name=name, kind=HostKind.ACQUISITION, protocol="file", address=str(root)), root)
    for i in range(files):
        source.put(f"f{i:03d}.dat", b"x" * 10)
    return source


@pytest.mark.parametrize("rt", ["sqlite"], indirect=True)  # the scheduler's threads, not the database
def test_a_slow_host_does_not_delay_a_fast_hosts_files(rt, prefect_server, tmp_path, held_listing):
    release, waiting = held_listing
    acquisition_setup(rt.engine, file_source(tmp_path, "slow-provider", 5), destination="slow")
    acquisition_setup(rt.engine, file_source(tmp_path, "fast-provider", 7), destination="fast")

    from flows.discovery import acquisition_scheduler

    scheduler = in_thread(acquisition_scheduler, stop_when_idle=True)
    try:
        assert waiting.wait(30), "the slow host's pass never started"
        deadline = time.monotonic() + 30
        while count(rt.engine, Discovered, Discovered.destination_name == "fast") < 7:
            assert time.monotonic() < deadline, "the fast host waited for the slow one"
            time.sleep(0.05)
        assert count(rt.engine, Discovered, Discovered.destination_name == "slow") == 0  # still listing
        assert not scheduler.done()
    finally:
        release.set()
    outcome = scheduler.result(60)
    assert outcome == {"passes": 2, "failed": 0, "skipped": 0}
    assert count(rt.engine, Discovered, Discovered.destination_name == "slow") == 5


def test_of_two_concurrent_passes_of_one_host_one_runs_and_the_other_is_skipped(
    rt, prefect_server, tmp_path, held_listing
):
    release, waiting = held_listing
    acquisition_setup(rt.engine, file_source(tmp_path, "slow-provider", 20), destination="acq")
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    runs_logger = logging.getLogger("prefect.flow_runs")
    runs_logger.addHandler(handler)

    from flows.discovery import discovery

    try:
        first = in_thread(discovery, "slow-provider")
        assert waiting.wait(30), "the first pass never started listing"
        second = in_thread(discovery, "slow-provider")  # while the first one lists
        skipped = second.result(60)
        release.set()
        ran = first.result(60)
    finally:
        runs_logger.removeHandler(handler)
    assert skipped == {"rules": 1, "listed": 0, "registered": 0, "skipped": 1}
    assert ran == {"rules": 1, "listed": 20, "registered": 20, "skipped": 0}
    lines = [r.getMessage() for r in records]
    assert any("discovery of slow-provider skipped: a pass of it is already under way" in line for line in lines)
    assert count(rt.engine, DataFile) == 20 and count(rt.engine, Discovered) == 20
    with Session(rt.engine) as session:
        state = session.get(AcquisitionState, "slow-provider")
        assert state is not None and state.pass_holder is None and state.last_registered == 20
    assert discovery("slow-provider")["skipped"] == 0  # the host is free again


def an_acquisition_host(engine, name: str = "provider") -> None:
    with session_scope(engine) as session:
        create_destination(session, DestinationCreate(name="acq"))
        host = HostCreate(name=name, kind=HostKind.ACQUISITION, protocol="file", address="/nowhere")
        create_host(session, host, known_protocols=PROTOCOLS)
        add_rule(session, name, ListingRuleCreate(destination="acq"))


def test_a_host_is_held_by_one_pass_across_processes_until_released_or_its_lease_runs_out(engine):
    an_acquisition_host(engine)
    other = make_engine(engine.url.render_as_string(hide_password=False))  # another process's pool
    try:
        with session_scope(engine) as session:
            assert take_pass(session, "provider", "a", 60) is None
        with session_scope(other) as session:
            busy = take_pass(session, "provider", "b", 60)
        assert busy is not None and busy.startswith("a, its lease good for")
        with session_scope(other) as session:
            assert keep_pass(session, "provider", "a", 60)
            release_pass(session, "provider", "b")  # not its own: nothing
            assert take_pass(session, "provider", "b", 60) is not None
            release_pass(session, "provider", "a")
        with session_scope(other) as session:
            assert take_pass(session, "provider", "b", -1) is None  # a lease already run out
        with session_scope(engine) as session:
            assert take_pass(session, "provider", "a", 60) is None  # … is taken over
        with session_scope(other) as session:
            assert not keep_pass(session, "provider", "b", 60)  # and its holder learns it
    finally:
        other.dispose()


def test_a_host_held_by_a_pass_is_not_due_until_it_is_free(engine):
    an_acquisition_host(engine)
    with session_scope(engine) as session:
        assert due_hosts(session) == ["provider"]
        assert take_pass(session, "provider", "elsewhere", 60) is None
    with session_scope(engine) as session:
        assert due_hosts(session) == []  # the scheduler does not start a pass to be skipped
        release_pass(session, "provider", "elsewhere")
    with session_scope(engine) as session:
        assert due_hosts(session) == ["provider"]


def test_of_passes_taking_a_host_at_the_same_moment_one_gets_it(engine):
    an_acquisition_host(engine)
    engines = [make_engine(engine.url.render_as_string(hide_password=False)) for _ in range(6)]
    start = threading.Barrier(len(engines))

    def take(index: int) -> str | None:
        start.wait()
        with session_scope(engines[index]) as session:
            return take_pass(session, "provider", f"pass {index}", 60)

    try:
        with ThreadPoolExecutor(len(engines)) as pool:
            outcomes = list(pool.map(take, range(len(engines))))
    finally:
        for e in engines:
            e.dispose()
    assert outcomes.count(None) == 1


def test_a_running_pass_renews_its_lease_and_lets_it_run_out_once_it_stops(engine):
    from flows.discovery import _Lease

    an_acquisition_host(engine)
    with session_scope(engine) as session:
        assert take_pass(session, "provider", "long pass", 0.6) is None
    lease = _Lease(engine, "provider", "long pass", 0.6, logging.getLogger("test"))
    lease.start()
    try:
        time.sleep(1.5)  # well past the first lease: renewed every 0.2 s
        with session_scope(engine) as session:
            assert take_pass(session, "provider", "other", 60) is not None
    finally:
        lease.stopped.set()
        lease.join()
    assert not lease.lost
    time.sleep(0.8)
    with session_scope(engine) as session:
        assert take_pass(session, "provider", "other", 60) is None
