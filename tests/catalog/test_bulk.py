"""Bulk inserts write what SQLAlchemy's own inserts write: the same stored text for times on
SQLite (so comparisons and ordering in queries agree), the same defaults, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
import sqlalchemy as sa

from catalog.bulk import BulkInsert
from catalog.models import UTCDateTime

TIMES = [
    datetime(2026, 11, 23, 23, 0, tzinfo=UTC),
    datetime(2026, 1, 2, 3, 4, 5, 600, tzinfo=UTC),
    datetime(1, 1, 1, 0, 0, 0, 1, tzinfo=UTC),
    datetime(2026, 6, 1, 1, 30, tzinfo=timezone(timedelta(hours=2))),  # another zone: stored as UTC
    datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
]


@pytest.fixture
def table():
    metadata = sa.MetaData()
    return sa.Table(
        "timed",
        metadata,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("at", UTCDateTime()),
        sa.Column("count", sa.Integer, nullable=False, default=7),
    )


def test_times_and_defaults_are_stored_as_sqlalchemy_stores_them(engine, table):
    table.metadata.create_all(engine)
    with engine.begin() as connection:
        rows = BulkInsert(connection, table, ("id", "at"))
        rows.run((i, rows.convert("at", at)) for i, at in enumerate(TIMES))
        connection.execute(sa.insert(table), [{"id": 100 + i, "at": at} for i, at in enumerate(TIMES)])
        stored = connection.execute(sa.text("SELECT id, at, count FROM timed ORDER BY id")).all()
        read = connection.execute(sa.select(table.c.at).order_by(table.c.id)).scalars().all()
    assert [(i, at, c) for i, at, c in stored[: len(TIMES)]] == [
        (i, at, c) for i, (_, at, c) in enumerate(stored[len(TIMES) :])
    ]  # byte for byte the same as the ORM's inserts
    assert read[: len(TIMES)] == TIMES and read[len(TIMES) :] == TIMES
    with engine.connect() as connection, pytest.raises(ValueError, match="naive"):
        BulkInsert(connection, table, ("id", "at")).convert("at", datetime(2026, 1, 1))
