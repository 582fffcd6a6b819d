"""Transfer attempts: one row per claim, so every attempt can be followed (mover, Prefect flow run,
host, start, end, bytes, outcome, error) and the attempt number serves as a fencing token.

A transfer's `attempt` is the number of its latest attempt. A mover carries the number it claimed
with, and its writes (progress, Done, a failure) apply only while the transfer is still Transferring
under that number: an attempt that was stopped, or taken over after its mover went silent, can
neither record an outcome nor mark Done what a newer attempt is sending.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session, col, select

from catalog.models import AttemptPublic, DataTransfer, TransferAttempt, utcnow
from catalog.statuses import TransferStatus


def _table() -> sa.Table:
    table: sa.Table = TransferAttempt.__table__  # type: ignore[attr-defined]
    return table


def start(connection: sa.Connection, rows: Sequence[dict[str, Any]]) -> None:
    """Open attempts: rows of transfer_id, number, mover, host, started_at."""
    if rows:
        connection.execute(sa.insert(_table()), [{"bytes_sent": 0, **row} for row in rows])


def link_flow_run(session: Session, transfer_ids: Sequence[int], flow_run_id: str) -> None:
    """The open attempts of `transfer_ids` run in this Prefect flow run."""
    table = _table()
    session.connection().execute(
        sa.update(table)
        .where(table.c.transfer_id.in_(list(transfer_ids)), table.c.ended_at.is_(None))
        .values(flow_run_id=flow_run_id)
    )


def link_task_runs(session: Session, task_runs: dict[str, Sequence[tuple[int, int | None]]]) -> None:
    """The attempts each Prefect task run sends, as (transfer id, attempt number; None: the transfer's
    open attempt), ran in that task run. Linked by number where it is known: the link is written once
    the task runs are submitted, and an attempt may have ended by then (a refused connection fails
    within milliseconds)."""
    table = _table()
    for task_run_id, sent in task_runs.items():
        numbered = [(transfer_id, number) for transfer_id, number in sent if number is not None]
        unnumbered = [transfer_id for transfer_id, number in sent if number is None]
        which: list[sa.ColumnElement[bool]] = []
        if numbered:
            which.append(sa.tuple_(table.c.transfer_id, table.c.number).in_(numbered))
        if unnumbered:
            which.append(sa.and_(table.c.transfer_id.in_(unnumbered), table.c.ended_at.is_(None)))
        if which:
            session.connection().execute(sa.update(table).where(sa.or_(*which)).values(task_run_id=task_run_id))


def end(
    connection: sa.Connection,
    transfer_id: int,
    number: int | None,
    outcome: str,
    *,
    error: str | None = None,
    bytes_sent: int | None = None,
    at: datetime | None = None,
) -> None:
    """Close attempt `number` of the transfer (its open attempt when None); an attempt already closed
    keeps its first outcome."""
    table = _table()
    which = table.c.number == number if number is not None else sa.true()
    values: dict[str, Any] = {"ended_at": at or utcnow(), "outcome": outcome, "error": error}
    if bytes_sent is not None:
        values["bytes_sent"] = bytes_sent
    connection.execute(
        sa.update(table).where(table.c.transfer_id == transfer_id, which, table.c.ended_at.is_(None)).values(**values)
    )


def end_many(connection: sa.Connection, ended: Sequence[tuple[int, int, int]], outcome: str, *, at: datetime) -> None:
    """`end` for a batch of transfers, `(transfer_id, number, bytes_sent)` each, in one statement
    executed for all (a batch of small files is recorded Done at once)."""
    if not ended:
        return
    table = _table()
    statement = (
        sa.update(table)
        .where(
            table.c.transfer_id == sa.bindparam("b_transfer_id"),
            table.c.number == sa.bindparam("b_number"),
            table.c.ended_at.is_(None),
        )
        .values(ended_at=at, outcome=outcome, error=None, bytes_sent=sa.bindparam("b_bytes_sent"))
    )
    connection.execute(
        statement,
        [{"b_transfer_id": tid, "b_number": number, "b_bytes_sent": sent} for tid, number, sent in ended],
    )


def still_running(session: Session, transfer_id: int, number: int) -> bool:
    """Whether attempt `number` is still the transfer's current one, Transferring (the writer's check)."""
    return transfer_id in still_running_among(session, {transfer_id: number})


def still_running_among(session: Session, numbers: dict[int, int]) -> set[int]:
    """Of `numbers` (transfer id → attempt number), the transfers whose attempt is still their current
    one, Transferring: `still_running` for a batch's files in one query."""
    if not numbers:
        return set()
    rows = session.exec(
        select(DataTransfer.id, DataTransfer.status, DataTransfer.attempt).where(col(DataTransfer.id).in_(numbers))
    )
    return {
        transfer_id
        for transfer_id, status, attempt in rows
        if transfer_id is not None and status == TransferStatus.TRANSFERRING.value and numbers[transfer_id] == attempt
    }


def of_transfer(session: Session, transfer_id: int, prefect_ui: str | None = None) -> list[AttemptPublic]:
    """The transfer's attempts, first first; with `prefect_ui` (the Prefect UI's base URL), the links to
    each attempt's flow run and task run there."""
    rows = session.exec(
        select(TransferAttempt).where(TransferAttempt.transfer_id == transfer_id).order_by(col(TransferAttempt.number))
    )
    found = [AttemptPublic.model_validate(row, from_attributes=True) for row in rows]
    if prefect_ui:
        for a in found:
            a.flow_run_url = f"{prefect_ui}/runs/flow-run/{a.flow_run_id}" if a.flow_run_id else None
            a.task_run_url = f"{prefect_ui}/runs/task-run/{a.task_run_id}" if a.task_run_id else None
    return found
