"""What operators do to transfers and destinations: requeue, stop, hold, release, change priority,
schedule now, extend lifetime; put a destination on hold and restart it.

Every operation on a transfer is an edge of the status table (`statuses.TRANSITIONS`; the ones that
keep the status are self-edges) and writes a history row naming the user, so the monitor can say
who did what and why.
"""

from __future__ import annotations

from datetime import timedelta

from sqlmodel import Session, col, select

from catalog import attempts, destination_history
from catalog.config import MOVING, get_destination
from catalog.errors import InvalidInput
from catalog.models import DataTransfer, Destination, utcnow
from catalog.statuses import FINAL, TransferStatus
from catalog.submission import check_priority
from catalog.transfers import change_status, destination_state, get_transfer

_FRESH = {"next_host": None, "host_attempts": 0, "pass_hosts_tried": 0}


def requeue(session: Session, transfer_id: int, *, by: str, reason: str = "") -> DataTransfer:
    """Do the transfer (again) now, with its counters of starts and failover afresh."""
    now = utcnow()
    return change_status(
        session,
        transfer_id,
        "requeue",
        TransferStatus.REQUEUED,
        by=by,
        reason=reason or f"requeued by {by}",
        scheduled_at=now,
        start_count=0,
        error=None,
        **_FRESH,
    )


def stop(session: Session, transfer_id: int, *, by: str, reason: str = "") -> DataTransfer:
    """Stop the transfer; one that is Transferring ends its attempt too: the mover sending it sees the
    attempt is over within a few seconds, drops the connection and removes its temporary file."""
    reason = reason or f"stopped by {by}"
    stopped = change_status(session, transfer_id, "stop", TransferStatus.STOPPED, by=by, reason=reason)
    attempts.end(session.connection(), transfer_id, stopped.attempt, TransferStatus.STOPPED.value, error=reason)
    return stopped


def hold(session: Session, transfer_id: int, *, by: str) -> DataTransfer:
    return change_status(session, transfer_id, "hold", TransferStatus.STANDBY, by=by, reason=f"held by {by}")


def release(session: Session, transfer_id: int, *, by: str) -> DataTransfer:
    return change_status(
        session, transfer_id, "release", TransferStatus.QUEUED, by=by, reason=f"released by {by}", scheduled_at=utcnow()
    )


def set_priority(session: Session, transfer_id: int, priority: int, *, by: str) -> DataTransfer:
    value = check_priority(priority)
    current = get_transfer(session, transfer_id)
    return change_status(
        session,
        transfer_id,
        "reprioritise",
        TransferStatus(current.status),
        by=by,
        reason=f"priority {current.priority} → {value}",
        priority=value,
    )


def schedule_now(session: Session, transfer_id: int, *, by: str) -> DataTransfer:
    current = get_transfer(session, transfer_id)
    return change_status(
        session,
        transfer_id,
        "schedule_now",
        TransferStatus(current.status),
        by=by,
        reason=f"scheduled now (was {current.scheduled_at.isoformat()})",
        scheduled_at=utcnow(),
    )


def extend_lifetime(session: Session, transfer_id: int, seconds: int, *, by: str) -> DataTransfer:
    if seconds <= 0:
        raise InvalidInput(f"a lifetime extension must be a positive number of seconds, not {seconds}")
    current = get_transfer(session, transfer_id)
    base = max(current.expires_at or utcnow(), utcnow())
    expires_at = base + timedelta(seconds=seconds)
    return change_status(
        session,
        transfer_id,
        "extend_lifetime",
        TransferStatus(current.status),
        by=by,
        reason=f"lifetime extended to {expires_at.isoformat()}",
        expires_at=expires_at,
    )


def hold_destination(session: Session, name: str, *, by: str) -> Destination:
    """Nothing leaves the destination until it is restarted (transfers under way finish)."""
    destination = get_destination(session, name)
    was_active = destination.active
    destination.active = False
    state = destination_state(session, name)
    state.hold_reason = f"put on hold by {by}"
    session.add_all([destination, state])
    session.flush()
    destination_history.record(
        session, name, "hold", by=by, reason="put on hold" if was_active else "put on hold (it was on hold already)"
    )
    return destination


def restart_destination(session: Session, name: str, *, by: str) -> Destination:
    """Active again, from the primary host, with the count of failed passes cleared."""
    destination = get_destination(session, name)
    state = destination_state(session, name)
    if destination.active:
        reason = "restarted (it was active)"
    else:
        reason = "restarted" + (f" (it was {state.hold_reason})" if state.hold_reason else "")
    destination.active = True
    state.hold_reason, state.failed_passes = None, 0
    state.current_host, state.current_host_since = None, None
    session.add_all([destination, state])
    session.flush()
    destination_history.record(session, name, "restart", by=by, reason=reason)
    return destination


def stop_waiting_transfers(session: Session, destination: str, *, by: str) -> int:
    """Stop every transfer of the destination that waits for something (before a forced delete); the
    ones moving bytes are left to end (a delete under a writer would lose what it records)."""
    get_destination(session, destination)
    waiting = session.exec(
        select(DataTransfer.id).where(
            DataTransfer.destination_name == destination,
            col(DataTransfer.status).not_in([s.value for s in FINAL] + [s.value for s in MOVING]),
        )
    ).all()
    for transfer_id in waiting:
        if transfer_id is not None:
            stop(session, transfer_id, by=by, reason=f"destination {destination} is being deleted")
    return len(waiting)
