"""Replication in the database: which data files each replica store location holds, verified.

A `Replica` row is written only after the copy was read back from the location and its MD5 matched
the data file's, so the rows are a list of good copies. A location is named by its URL.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlmodel import Column, Field, Session, SQLModel, col, select

from catalog.models import DataFile, UTCDateTime, utcnow


class Replica(SQLModel, table=True):
    __tablename__ = "replica"
    data_file_id: int = Field(foreign_key="data_file.id", primary_key=True, ondelete="CASCADE")
    location: str = Field(primary_key=True)
    md5: str
    replicated_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))


@dataclass(frozen=True)
class ToReplicate:
    data_file_id: int
    store_key: str
    md5: str
    size: int


def missing_replicas(session: Session, location: str, *, limit: int = 500, after_id: int = 0) -> list[ToReplicate]:
    """Stored data files that `location` does not hold yet, in id order from `after_id`."""
    held = select(Replica.data_file_id).where(Replica.location == location)
    rows = session.exec(
        select(DataFile.id, DataFile.store_key, DataFile.md5, DataFile.size)
        .where(
            col(DataFile.store_key).is_not(None),
            col(DataFile.md5).is_not(None),
            col(DataFile.id) > after_id,
            col(DataFile.id).not_in(held),
        )
        .order_by(col(DataFile.id))
        .limit(limit)
    ).all()
    return [ToReplicate(i, k, m, s or 0) for i, k, m, s in rows if i is not None and k and m]


def record_replica(session: Session, data_file_id: int, location: str, md5: str) -> None:
    if session.get(DataFile, data_file_id) is None:
        return  # purged meanwhile
    session.merge(Replica(data_file_id=data_file_id, location=location, md5=md5))
    session.flush()


def replica_count(session: Session, location: str) -> int:
    return int(session.exec(select(sa.func.count()).where(Replica.location == location)).one())
