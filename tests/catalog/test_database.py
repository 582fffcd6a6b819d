"""Migrations create exactly the schema the models declare, on SQLite and PostgreSQL."""

from datetime import UTC, datetime, timedelta, timezone

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlmodel import SQLModel

from catalog.database import migrate, session_scope
from catalog.models import DataFile


def test_migrations_match_the_models(engine):
    with engine.connect() as connection:
        diff = compare_metadata(MigrationContext.configure(connection), SQLModel.metadata)
    assert diff == []


def test_migrating_twice_changes_nothing(engine):
    migrate(engine)


def test_times_come_back_aware_in_utc(engine):
    paris = timezone(timedelta(hours=1))
    with session_scope(engine) as session:
        data_file = DataFile(name="x", arrived_at=datetime(2026, 1, 1, 13, 0, tzinfo=paris))
        session.add(data_file)
        session.flush()
        file_id = data_file.id
    with session_scope(engine) as session:
        loaded = session.get(DataFile, file_id)
        assert loaded.arrived_at == datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
        assert loaded.arrived_at.tzinfo is not None
