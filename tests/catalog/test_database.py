"""Migrations create exactly the schema the models declare, on SQLite and PostgreSQL."""

from datetime import UTC, datetime, timedelta, timezone

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlmodel import SQLModel, select

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


def test_sizes_and_byte_counts_hold_more_than_2_gib(engine):
    """PostgreSQL's INTEGER stops at 2 GiB: a transfer of a 6 GiB file records every byte it sent."""
    from catalog.acquisition import Discovered, ListingRule, SourceFile
    from catalog.models import DataTransfer, Destination, Host, TransferAttempt
    from catalog.statuses import TransferStatus
    from catalog.transfers import record_progress

    big, sent = 6 << 30, (5 << 30) + 7
    assert sent > 2**31
    with session_scope(engine) as session:
        session.add_all([Destination(name="site"), Host(name="src", protocol="file", address="/data")])
        data_file = DataFile(name="big.grib", size=big)
        session.add(data_file)
        session.flush()
        transfer = DataTransfer(
            data_file_id=data_file.id, destination_name="site", target="big.grib", status=TransferStatus.TRANSFERRING
        )
        session.add(transfer)
        session.flush()
        transfer_id, file_id = transfer.id, data_file.id
        session.add(TransferAttempt(transfer_id=transfer_id, number=1, mover="m", bytes_sent=sent))
        session.add(SourceFile(data_file_id=file_id, host_name="src", path="/data/big.grib", size=big))
        session.add(Discovered(destination_name="site", target="big.grib", data_file_id=file_id, size=big))
        session.add(ListingRule(host_name="src", destination_name="site", min_size=big, max_size=2 * big))
    with session_scope(engine) as session:
        assert record_progress(session, transfer_id, sent)
    with session_scope(engine) as session:
        assert session.get(DataTransfer, transfer_id).bytes_sent == sent
        assert session.get(DataFile, file_id).size == big
        assert session.exec(select(TransferAttempt.bytes_sent)).one() == sent
        assert session.get(SourceFile, file_id).size == big
        assert session.exec(select(Discovered.size)).one() == big
        assert session.exec(select(ListingRule.min_size, ListingRule.max_size)).one() == (big, 2 * big)


def test_files_of_more_than_2_gib_are_registered_whole(engine, tmp_path):
    """Registration stages its rows in a temporary table: its sizes are 64-bit too."""
    from catalog.acquisition import RegisteredFile, SourceFile, register_files
    from tests.factories import destination, local_host

    big = (3 << 30) + 1
    destination(engine, "site", host=local_host("provider", str(tmp_path)))
    with session_scope(engine) as session:
        (file_id,) = register_files(
            session,
            destination="site",
            host="provider",
            source_root=str(tmp_path),
            group="g",
            files=[RegisteredFile(path=str(tmp_path / "big.grib"), size=big)],
            by="test",
        )
    with session_scope(engine) as session:
        assert session.get(SourceFile, file_id).size == big
        assert session.get(DataFile, file_id).size == big


def test_a_read_scope_reads_what_was_committed_and_on_sqlite_cannot_write(engine):
    import pytest
    from sqlalchemy.exc import DBAPIError

    from catalog.database import is_sqlite, read_scope

    with session_scope(engine) as session:
        session.add(DataFile(name="committed"))
    with read_scope(engine) as session:
        assert [f.name for f in session.exec(select(DataFile))] == ["committed"]
    if is_sqlite(engine):
        with pytest.raises(DBAPIError, match="(?i)read.?only"), read_scope(engine) as session:
            session.add(DataFile(name="written in a read"))
            session.flush()
    else:  # reads there never wait for writers; what a read scope wrote is not committed
        with read_scope(engine) as session:
            session.add(DataFile(name="written in a read"))
            session.flush()
    # The pooled connection goes back to writing for the next ordinary session, and the refused row is not there.
    with session_scope(engine) as session:
        session.add(DataFile(name="written after"))
    with read_scope(engine) as session:
        assert sorted(f.name for f in session.exec(select(DataFile))) == ["committed", "written after"]


def test_on_sqlite_a_read_does_not_wait_for_a_writer_and_a_write_does(tmp_path):
    """WAL lets a reader read while another process holds the write lock; a writer queues for it."""
    import sqlite3
    import threading
    import time

    from catalog.database import make_engine, read_scope

    engine = make_engine(f"sqlite:///{tmp_path / 'pds.db'}")
    migrate(engine)
    with session_scope(engine) as session:
        session.add(DataFile(name="before"))
    other = sqlite3.connect(tmp_path / "pds.db", isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")
    threading.Timer(2.0, other.execute, ["COMMIT"]).start()
    started = time.monotonic()
    with read_scope(engine) as session:
        names = [f.name for f in session.exec(select(DataFile))]
    read_after = time.monotonic() - started
    with session_scope(engine) as session:
        session.add(DataFile(name="after"))
    write_after = time.monotonic() - started
    engine.dispose()
    assert names == ["before"]
    assert read_after < 1.0, f"the read waited {read_after:.2f} s for the writer"
    assert write_after >= 1.9, f"the write did not wait for the other writer ({write_after:.2f} s)"
