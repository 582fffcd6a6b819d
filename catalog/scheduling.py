"""Scheduling policy as values: what happens to a transfer after an attempt, and in what order.

Nothing here touches the database; `transfers` applies the decisions. Keeping the policy pure lets
tests walk every case without a server.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, time, timedelta
from typing import Any

from catalog.errors import NextAction, TransferError
from catalog.models import DataTransfer, Destination, DestinationState, OnHostFailure
from catalog.statuses import TransferStatus

#: Queue order: priority 0 first … 99 last, then the oldest queue time, then the oldest id.
QUEUE_ORDER: tuple[Any, ...] = (DataTransfer.priority, DataTransfer.queued_at, DataTransfer.id)


def queue_key(transfer: DataTransfer) -> tuple[int, datetime, int]:
    """The same order as `QUEUE_ORDER`, for transfers already in memory."""
    return (transfer.priority, transfer.queued_at, transfer.id or 0)


@dataclass(frozen=True)
class HostRetry:
    """A host's own retry policy: `retry_count` more attempts on it after a retryable error,
    `retry_frequency` seconds apart (host options of the same names)."""

    count: int = 0
    frequency_seconds: float = 30.0

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> HostRetry:
        return cls(int(options.get("retry_count", 0)), float(options.get("retry_frequency", 30)))


@dataclass(frozen=True)
class Decision:
    """Where a transfer goes after a failed attempt, and what changes with it."""

    action: str
    status: TransferStatus
    reason: str
    fields: dict[str, Any] = field(default_factory=dict)
    """Transfer columns to set with the status change (next host, counters, times)."""
    pass_failed: bool = False
    """Every host of the destination failed this transfer in one pass."""


def after_failure(
    transfer: DataTransfer,
    destination: Destination,
    error: TransferError,
    now: datetime,
    *,
    hosts: list[str],
    host: str | None,
    retry: HostRetry,
) -> Decision:
    """Decide what follows a failed attempt of `transfer` on `host` (one of the ordered `hosts`).

    1. An unrecoverable error (bad credentials, permission denied) stops the transfer.
    2. A retryable error is tried again on the same host, `retry.count` times, `retry.frequency` apart.
    3. Then — or at once for an unreachable or full host — the next host of the destination.
    4. When every host failed in this pass, the start failed: the next start comes after the
       destination's `start_frequency_seconds`. After `max_starts` starts the transfer is requeued
       (its queue time pushed back, starts counted afresh); after `max_requeue` requeues it fails.
    """
    message = str(error) or type(error).__name__
    where = f" on host {host}" if host else ""
    if error.next_action is NextAction.FAIL:
        return Decision("stop", TransferStatus.STOPPED, f"unrecoverable{where}: {message}", _pass_reset(now))
    if host is not None and error.next_action is NextAction.RETRY and transfer.host_attempts < retry.count:
        attempt = transfer.host_attempts + 1
        return Decision(
            "retry",
            TransferStatus.REQUEUED,
            f"retry {attempt} of {retry.count}{where} in {retry.frequency_seconds:g} s: {message}",
            {
                "next_host": host,
                "host_attempts": attempt,
                "scheduled_at": now + timedelta(seconds=retry.frequency_seconds),
                "finished_at": now,
            },
        )
    tried = transfer.pass_hosts_tried + 1
    if host is not None and host in hosts and tried < len(hosts):
        following = hosts[(hosts.index(host) + 1) % len(hosts)]
        return Decision(
            "retry",
            TransferStatus.REQUEUED,
            f"failing over from host {host} to {following}: {message}",
            {"next_host": following, "host_attempts": 0, "pass_hosts_tried": tried, "scheduled_at": now},
        )
    every = "every host" if len(hosts) > 1 else f"host {host}" if host else "the destination"
    if transfer.start_count < destination.max_starts:
        return Decision(
            "retry",
            TransferStatus.REQUEUED,
            f"start {transfer.start_count} of {destination.max_starts} failed on {every}: {message}",
            _pass_reset(now, scheduled_at=now + timedelta(seconds=destination.start_frequency_seconds)),
            pass_failed=True,
        )
    if transfer.requeue_count < destination.max_requeue:
        later = now + timedelta(seconds=destination.start_frequency_seconds)
        return Decision(
            "retry",
            TransferStatus.REQUEUED,
            f"requeued ({transfer.requeue_count + 1} of {destination.max_requeue}) after "
            f"{transfer.start_count} failed starts: {message}",
            _pass_reset(now, scheduled_at=later)
            | {"queued_at": later, "start_count": 0, "requeue_count": transfer.requeue_count + 1},
            pass_failed=True,
        )
    return Decision(
        "fail",
        TransferStatus.FAILED,
        f"failed after {transfer.requeue_count} requeue(s) of {destination.max_starts} start(s): {message}",
        _pass_reset(now),
        pass_failed=True,
    )


def _pass_reset(now: datetime, scheduled_at: datetime | None = None) -> dict[str, Any]:
    values: dict[str, Any] = {"next_host": None, "host_attempts": 0, "pass_hosts_tried": 0, "finished_at": now}
    if scheduled_at is not None:
        values["scheduled_at"] = scheduled_at
    return values


def first_host(hosts: list[str], destination: Destination, state: DestinationState | None, now: datetime) -> str | None:
    """The host a new start of a transfer goes to: the primary, or — with next_and_stay, within the
    reset frequency — the fallback that last worked."""
    if not hosts:
        return None
    if (
        destination.on_host_failure == OnHostFailure.NEXT_AND_STAY
        and state is not None
        and state.current_host in hosts
        and state.current_host_since is not None
        and now - state.current_host_since < timedelta(seconds=destination.reset_frequency_seconds)
    ):
        return state.current_host
    return hosts[0]


def parse_clock(value: str) -> time:
    """ "HH:MM" (24 h) → a time; ValueError with the reason otherwise."""
    try:
        hours, minutes = value.split(":")
        return time(int(hours), int(minutes))
    except ValueError:
        raise ValueError(f"a time of day must be HH:MM (00:00 to 23:59), not {value!r}") from None


def in_window(destination: Destination, now: datetime) -> bool:
    """Whether the destination's active time window (UTC) is open at `now`; no window: always."""
    return window_open(destination.window_start, destination.window_end, now)


def window_open(window_start: str | None, window_end: str | None, now: datetime) -> bool:
    """Whether the time window from `window_start` to `window_end` (UTC, HH:MM) is open at `now`."""
    if not window_start or not window_end:
        return True
    start, end, current = parse_clock(window_start), parse_clock(window_end), now.time()
    if start <= end:
        return start <= current < end
    return current >= start or current < end  # the window wraps past midnight
