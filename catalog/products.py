"""Product status: when a product (a stream, type, time base and step) is expected, started and completed.

A data provider says so with `pds product expected|started|completed` (`ecpds -expected|-started|
-completed`); each call writes a PRS line to the event log and updates the product's row here, so the
monitor can show what is due, what is running and what is late. A product is **late** when its
schedule time has passed and it is not completed.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from sqlmodel import Field, Session, SQLModel, col, select

from catalog.models import DataFile, DataTransfer, UTCDateTime, utcnow


class ProductState(StrEnum):
    EXPECTED = "expected"
    STARTED = "started"
    COMPLETED = "completed"


def _time(*, index: bool = False) -> Any:
    return Field(default=None, sa_column=sa.Column(UTCDateTime(), nullable=True, index=index))


class ProductStatus(SQLModel, table=True):
    """The latest status of one product; empty strings stand for "not given" so the key is unique."""

    __tablename__ = "product_status"
    __table_args__ = (sa.UniqueConstraint("stream", "type", "time_base", "time_step", name="uq_product"),)
    id: int | None = Field(default=None, primary_key=True)
    stream: str = Field(max_length=100, index=True)
    type: str = Field(default="", max_length=100)
    time_base: str = Field(default="", max_length=40)
    time_step: str = Field(default="", max_length=40)
    status: ProductState
    schedule_time: datetime | None = _time(index=True)
    expected_at: datetime | None = _time()
    started_at: datetime | None = _time()
    completed_at: datetime | None = _time()
    updated_at: datetime | None = _time(index=True)
    updated_by: str = Field(default="", max_length=100)

    def is_late(self, now: datetime) -> bool:
        return self.status != ProductState.COMPLETED and self.schedule_time is not None and self.schedule_time < now


def record_product_status(
    session: Session,
    status: ProductState,
    stream: str,
    *,
    type: str | None = None,
    time_base: str | None = None,
    time_step: str | None = None,
    schedule_time: datetime | None = None,
    by: str = "",
    now: datetime | None = None,
) -> ProductStatus:
    """Create or update the product's row; a later schedule time given with the status replaces the older."""
    now = now or utcnow()
    kind, base, step = type or "", time_base or "", time_step or ""
    row = session.exec(
        select(ProductStatus).where(
            ProductStatus.stream == stream,
            ProductStatus.type == kind,
            ProductStatus.time_base == base,
            ProductStatus.time_step == step,
        )
    ).first()
    if row is None:
        row = ProductStatus(stream=stream, type=kind, time_base=base, time_step=step, status=status)
    row.status = status
    if schedule_time is not None:
        row.schedule_time = schedule_time
    setattr(row, f"{status.value}_at", now)
    if status == ProductState.EXPECTED:
        row.started_at = row.completed_at = None  # a product expected again starts a new cycle
    row.updated_at, row.updated_by = now, by
    session.add(row)
    session.flush()
    return row


def list_products(
    session: Session,
    *,
    stream: str | None = None,
    late_only: bool = False,
    limit: int = 200,
    now: datetime | None = None,
    streams: Collection[str] | None = None,
) -> list[ProductStatus]:
    """Products, the most recently updated first; `late_only`: due and not completed; `streams`:
    only these streams (None: all)."""
    now = now or utcnow()
    query = select(ProductStatus)
    if streams is not None:
        query = query.where(col(ProductStatus.stream).in_(sorted(streams)))
    if stream:
        query = query.where(ProductStatus.stream == stream)
    if late_only:
        query = query.where(
            ProductStatus.status != ProductState.COMPLETED,
            col(ProductStatus.schedule_time).is_not(None),
            col(ProductStatus.schedule_time) < now,
        )
    query = query.order_by(col(ProductStatus.updated_at).desc(), col(ProductStatus.id).desc()).limit(limit)
    return list(session.exec(query).all())


def streams_of(session: Session, destinations: Collection[str]) -> set[str]:
    """The streams of the data files queued to these destinations (what their data users may follow)."""
    if not destinations:
        return set()
    rows = session.exec(
        select(DataFile.stream)
        .join(DataTransfer, col(DataTransfer.data_file_id) == col(DataFile.id))
        .where(col(DataTransfer.destination_name).in_(sorted(destinations)), col(DataFile.stream).is_not(None))
        .distinct()
    ).all()
    return {s for s in rows if s}
