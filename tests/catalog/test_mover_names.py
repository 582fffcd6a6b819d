"""One process per mover name (`catalog.mover_names`): a second start is refused while the holder lives,
and allowed as soon as it is known to be gone."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from datetime import timedelta

import pytest
from sqlmodel import Session

from catalog.database import session_scope
from catalog.models import Mover, utcnow
from catalog.mover_names import MoverNameTaken, keep_name, release_name, take_name

STALE = timedelta(seconds=30)


def take(engine, name: str, machine: str, pid: int) -> None:
    with session_scope(engine) as session:
        take_name(session, name, machine=machine, pid=pid, stale_after=STALE)


def holder(engine, name: str) -> tuple[str, int]:
    with Session(engine) as session:
        row = session.get(Mover, name)
        assert row is not None
        return row.machine, row.pid


@pytest.fixture
def sleeper():
    """A live process on this machine, to stand for a running mover."""
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield process
    process.kill()
    process.wait()


def test_a_live_holder_on_another_machine_keeps_its_name(engine):
    take(engine, "mover-1", "box-a", 4242)

    with pytest.raises(MoverNameTaken) as refused:
        take(engine, "mover-1", "box-b", 777)

    message = str(refused.value)
    assert "mover-1 is already running" in message and "pid 4242 on box-a" in message
    assert holder(engine, "mover-1") == ("box-a", 4242)
    take(engine, "mover-2", "box-b", 777)  # another name is free


def test_a_live_process_on_this_machine_keeps_its_name(engine, sleeper):
    here = socket.gethostname()
    take(engine, "mover-1", here, sleeper.pid)

    with pytest.raises(MoverNameTaken):
        take(engine, "mover-1", here, sleeper.pid + 100_000)
    assert holder(engine, "mover-1") == (here, sleeper.pid)


def test_a_dead_process_on_this_machine_frees_its_name_at_once(engine):
    """A SIGKILLed mover's next start need not wait for its heartbeat to go stale; an unreaped
    (zombie) process counts as dead."""
    here = socket.gethostname()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    while dead.poll() is None:  # poll reaps it; the zombie case follows
        pass
    take(engine, "mover-1", here, dead.pid)
    take(engine, "mover-1", here, 1_000_001)
    assert holder(engine, "mover-1") == (here, 1_000_001)

    zombie = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        take(engine, "mover-z", here, zombie.pid)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # exited but not waited for: a zombie
            with open(f"/proc/{zombie.pid}/stat", "rb") as stat:
                if stat.read().rsplit(b")", 1)[1].split()[0] == b"Z":
                    break
            time.sleep(0.05)
        take(engine, "mover-z", here, os.getpid())
    finally:
        zombie.wait()


def test_a_stale_heartbeat_or_a_clean_exit_frees_the_name(engine):
    take(engine, "mover-1", "box-a", 4242)
    with session_scope(engine) as session:
        row = session.get(Mover, "mover-1")
        assert row is not None
        row.heartbeat_at = utcnow() - STALE - timedelta(seconds=1)
    take(engine, "mover-1", "box-b", 777)  # box-a's mover went silent
    assert holder(engine, "mover-1") == ("box-b", 777)

    with session_scope(engine) as session:
        release_name(session, "mover-1", machine="box-b", pid=777)
    take(engine, "mover-1", "box-c", 9)  # box-b's mover ended cleanly: no wait
    assert holder(engine, "mover-1") == ("box-c", 9)


def test_a_holder_whose_name_was_taken_learns_it_at_its_next_beat(engine):
    take(engine, "mover-1", "box-a", 4242)
    with session_scope(engine) as session:
        assert keep_name(session, "mover-1", machine="box-a", pid=4242)
        session.get(Mover, "mover-1").heartbeat_at = utcnow() - STALE * 2  # frozen past the stale time
    take(engine, "mover-1", "box-b", 777)

    with session_scope(engine) as session:
        assert not keep_name(session, "mover-1", machine="box-a", pid=4242)
        release_name(session, "mover-1", machine="box-a", pid=4242)  # a late release lets nothing go
    assert holder(engine, "mover-1") == ("box-b", 777)


def test_of_two_processes_starting_at_once_one_gets_the_name(engine):
    take(engine, "mover-1", "box-a", 4242)
    with session_scope(engine) as session:
        release_name(session, "mover-1", machine="box-a", pid=4242)
    outcomes: list[str] = []
    start = threading.Barrier(8)

    def start_one(i: int) -> None:
        start.wait()
        try:
            take(engine, "mover-1", f"box-{i}", 1000 + i)
            outcomes.append("took")
        except MoverNameTaken:
            outcomes.append("refused")
        except Exception as exc:  # noqa: BLE001 — SQLite's single writer may also say "locked"
            outcomes.append(f"error: {exc}")

    threads = [threading.Thread(target=start_one, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert outcomes.count("took") == 1, outcomes
    assert outcomes.count("refused") == 7, outcomes
