"""One process per mover name: the `mover` row is a lease, as PostgreSQL's postmaster.pid is for a data
directory.

A mover (or retriever) that starts under a name takes over that name's transfers in flight: it marks
them Interrupted and sends them again. Were the name's previous holder still running, two processes
would write the same file. So a process takes the name only when nobody holds it:

- nobody ever used it, or its last holder let it go on a clean exit (`pid` 0);
- its last holder stopped beating for `stale_after` (it died, or its machine did);
- its last holder ran on this machine and that process is gone (no need to wait for the heartbeat to
  go stale after a crash or a SIGKILL);
- its last holder is this very process (an earlier run of the flow in it).

Otherwise the start is refused with one line naming the holder. The take is a compare-and-swap on the
previous holder's pid and machine, so of two processes starting at once only one gets the name; each
heartbeat is conditional on still holding it, so a process whose name was taken (its heartbeat went
stale while it was frozen, say) learns it at its next beat and stops claiming.
"""

from __future__ import annotations

import os
import socket
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlmodel import Session, col, update

from catalog.database import session_scope
from catalog.errors import Conflict
from catalog.models import Mover, utcnow


class MoverNameTaken(Conflict):
    """Another live process holds this mover name."""


def process_alive(pid: int) -> bool:
    """Whether a process with this id runs on this machine (one we may not signal counts as running; a
    zombie, dead but not yet reaped by its parent, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            state = stat.read().rsplit(b")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True  # no /proc here: a process we could signal is running
    return state not in (b"Z", b"X")


def _holder(row: Mover, machine: str, pid: int, stale_after: timedelta, now: datetime) -> str | None:
    """Who holds the name in `row`, in words, or None if it may be taken."""
    if row.pid == 0 or row.heartbeat_at < now - stale_after:
        return None
    if row.machine == machine and (row.pid == pid or not process_alive(row.pid)):
        return None
    silent = (now - row.heartbeat_at).total_seconds()
    where = f"pid {row.pid} on {row.machine}" if row.machine else f"pid {row.pid}"
    return f"{where}, last heartbeat {silent:.0f} s ago"


def take_name(
    session: Session,
    mover: str,
    *,
    machine: str,
    pid: int,
    stale_after: timedelta,
    proxy_host: str | None = None,
) -> None:
    """Hold `mover` for the process `pid` on `machine`, or raise `MoverNameTaken` naming the holder."""
    now = utcnow()
    row = session.get(Mover, mover)
    if row is None:
        row = Mover(name=mover, started_at=now, heartbeat_at=now, machine=machine, pid=pid, proxy_host=proxy_host)
        session.add(row)
        try:
            session.flush()
        except sa.exc.IntegrityError:
            session.rollback()
            raise MoverNameTaken(f"mover {mover}: another process took this name at the same moment") from None
        return
    holder = _holder(row, machine, pid, stale_after, now)
    if holder is not None:
        wait = stale_after.total_seconds()
        raise MoverNameTaken(
            f"mover {mover} is already running ({holder}): stop it, start this one under another name, "
            f"or wait until it has been silent for {wait:.0f} s"
        )
    previous_pid, previous_machine = row.pid, row.machine
    session.expunge(row)
    taken = session.exec(
        update(Mover)
        .where(col(Mover.name) == mover, col(Mover.pid) == previous_pid, col(Mover.machine) == previous_machine)
        .values(started_at=now, heartbeat_at=now, machine=machine, pid=pid, proxy_host=proxy_host)
    )
    if taken.rowcount != 1:
        raise MoverNameTaken(f"mover {mover}: another process took this name at the same moment")


def keep_name(session: Session, mover: str, *, machine: str, pid: int) -> bool:
    """Record that the holder of `mover` is alive; False if another process has taken the name."""
    kept = session.exec(
        update(Mover)
        .where(col(Mover.name) == mover, col(Mover.pid) == pid, col(Mover.machine) == machine)
        .values(heartbeat_at=utcnow())
    )
    return bool(kept.rowcount == 1)


def release_name(session: Session, mover: str, *, machine: str, pid: int) -> None:
    """Let the name go on a clean exit, so the next start need not wait for the heartbeat to go stale."""
    session.exec(
        update(Mover)
        .where(col(Mover.name) == mover, col(Mover.pid) == pid, col(Mover.machine) == machine)
        .values(pid=0)
    )


def take_name_or_exit(engine: sa.Engine, name: str, stale_after: timedelta) -> None:
    """For a mover or retriever started as a command: hold `name` for this process before its flow run
    starts (the run then finds the name already its own), or end with one line naming the holder, so a
    refused start leaves no failed run in the Prefect UI."""
    try:
        with session_scope(engine) as session:
            take_name(session, name, machine=socket.gethostname(), pid=os.getpid(), stale_after=stale_after)
    except MoverNameTaken as exc:
        raise SystemExit(f"pds: {exc}") from None
