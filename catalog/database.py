"""Engines, sessions and migrations for SQLite (embedded default) and PostgreSQL (production)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from sqlmodel import Session

MIGRATIONS = Path(__file__).with_name("migrations")

READ_ONLY = "pds_read_only"
"""The execution option of `read_scope`'s connections (SQLite)."""


def make_engine(url: str) -> sa.Engine:
    """An engine tuned for pds's access pattern: one API and several movers writing small rows."""
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(url, connect_args={"check_same_thread": False, "timeout": 60})
        sa.event.listen(engine, "connect", _sqlite_pragmas)
        sa.event.listen(engine, "begin", _sqlite_begin)
        return engine
    return sa.create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=10)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets readers go on while one writer commits; busy_timeout makes writers queue instead
    # of failing with "database is locked" when the API and a mover commit at once.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=60000")
    # Checkpoint the WAL into the database every 10,000 pages (40 MB) rather than 1,000: a
    # checkpoint syncs the disk, and a large registration or a mover's batch of outcomes crossed
    # the default several times a second (0.5-0.8 s of a discovery pass of 100,000 files).
    cursor.execute("PRAGMA wal_autocheckpoint=10000")
    # Temporary tables (a registration's staged page) stay in memory, never in a temporary file.
    cursor.execute("PRAGMA temp_store=MEMORY")
    cursor.close()
    # Let SQLAlchemy, not the driver, open transactions (see _sqlite_begin).
    dbapi_connection.isolation_level = None


def _sqlite_begin(connection: sa.Connection) -> None:
    # A deferred SQLite transaction that reads, then writes after another process committed, fails
    # at once with SQLITE_BUSY_SNAPSHOT whatever the busy timeout. Taking the write lock at BEGIN makes
    # writers queue instead; transactions here are short (never held across a data stream).
    # A read scope begins deferred: in WAL mode it reads its snapshot while a writer holds the lock
    # (an API read no longer waits behind a mover's commit), and `query_only` makes a write in it fail
    # at once rather than queue or hit a stale snapshot.
    read_only = bool(connection.get_execution_options().get(READ_ONLY))
    if connection.info.get(READ_ONLY, False) != read_only:
        connection.exec_driver_sql(f"PRAGMA query_only={'ON' if read_only else 'OFF'}")
        connection.info[READ_ONLY] = read_only  # kept with the pooled connection
    connection.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")


def is_sqlite(engine: sa.Engine) -> bool:
    return engine.dialect.name == "sqlite"


def alembic_config(engine: sa.Engine) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["engine"] = engine
    return config


def migrate(engine: sa.Engine) -> None:
    """Bring the database schema to the newest revision (idempotent)."""
    command.upgrade(alembic_config(engine), "head")


@contextmanager
def read_scope(engine: sa.Engine) -> Iterator[Session]:
    """A session that only reads, and does not wait for a writer; nothing in it is committed.

    On SQLite a deferred transaction on the WAL snapshot, in which a write fails at once (see
    `_sqlite_begin`). PostgreSQL's reads never wait for writers: there it is an ordinary session
    (a READ ONLY transaction cost a third more CPU per session, measured, for no gain)."""
    with Session(engine, expire_on_commit=False) as session:
        if is_sqlite(engine):  # the option the begin hook reads, on the connection this session takes
            session.connection(execution_options=cast(Any, {READ_ONLY: True}))  # a key of our own
        yield session


@contextmanager
def session_scope(engine: sa.Engine) -> Iterator[Session]:
    """A session that commits on success and rolls back on error."""
    with Session(engine, expire_on_commit=False) as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
