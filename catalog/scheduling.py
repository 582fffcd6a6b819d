"""Scheduling policy as values: what happens to a transfer after an attempt, and in what order.

Nothing here touches the database; `transfers` applies the decisions. Keeping the policy pure lets
tests walk every case without a server.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from catalog.errors import NextAction, TransferError
from catalog.models import DataTransfer, Destination
from catalog.statuses import TransferStatus

#: Queue order: priority 0 first … 99 last, then the oldest queue time, then the oldest id.
QUEUE_ORDER: tuple[Any, ...] = (DataTransfer.priority, DataTransfer.queued_at, DataTransfer.id)


def queue_key(transfer: DataTransfer) -> tuple[int, datetime, int]:
    """The same order as `QUEUE_ORDER`, for transfers already in memory."""
    return (transfer.priority, transfer.queued_at, transfer.id or 0)


@dataclass(frozen=True)
class Decision:
    """Where a transfer goes after a failed attempt."""

    action: str
    status: TransferStatus
    reason: str
    scheduled_at: datetime | None = None


def after_failure(transfer: DataTransfer, destination: Destination, error: TransferError, now: datetime) -> Decision:
    """Decide the next status of a transfer whose attempt (number `start_count`) just failed."""
    message = str(error) or type(error).__name__
    if error.next_action is NextAction.FAIL:
        return Decision("stop", TransferStatus.STOPPED, f"unrecoverable: {message}")
    if transfer.start_count >= destination.max_starts:
        return Decision(
            "fail",
            TransferStatus.FAILED,
            f"failed after {transfer.start_count} attempt(s): {message}",
        )
    retry_at = now + timedelta(seconds=destination.start_frequency_seconds)
    return Decision("retry", TransferStatus.REQUEUED, f"attempt {transfer.start_count} failed: {message}", retry_at)
