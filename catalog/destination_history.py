"""A destination's history: every hold, restart, edit and change of its hosts and aliases, with the
user who made it and when, as a transfer's history rows record its status changes.

`record` is called in the transaction that makes the change, so a change is never without its row.
"""

from __future__ import annotations

from typing import Any

from sqlmodel import Session, col, select

from catalog.models import DestinationHistory, DestinationHistoryPublic, utcnow

#: Who changed a destination when no user is named (set up in code, by tests or tools).
SYSTEM = "pds"


def record(session: Session, destination: str, action: str, *, by: str, reason: str = "") -> None:
    session.add(DestinationHistory(destination_name=destination, action=action, at=utcnow(), by=by, reason=reason))


def history(session: Session, destination: str, *, limit: int = 1000) -> list[DestinationHistoryPublic]:
    """The destination's latest `limit` changes, oldest first."""
    rows = session.exec(
        select(DestinationHistory)
        .where(DestinationHistory.destination_name == destination)
        .order_by(col(DestinationHistory.at).desc(), col(DestinationHistory.id).desc())
        .limit(limit)
    ).all()
    return [DestinationHistoryPublic.model_validate(row, from_attributes=True) for row in reversed(rows)]


def describe_changes(before: dict[str, Any], after: dict[str, Any]) -> str:
    """`max_starts 3 → 5, comment '' → 'night runs'`: the settings that changed, old and new."""
    return ", ".join(
        f"{key} {before[key]!r} → {after[key]!r}" for key in sorted(after) if before.get(key) != after[key]
    )
