"""State the pds API replicas share through the database, so that several of them behind a load balancer
act as one: the key that signs log-in sessions, the proxy's QoS counters and the portal's connection
limits.

On SQLite (the embedded default, one API process) the counters and limits stay in that process's
memory; on PostgreSQL they live here, so a user's quota or connection limit holds however its requests
are spread over the replicas:

- QoS counters: one row per (subject, usage, window), raised by an UPSERT whose condition refuses to
  go past the limit, all of one request's quotas in one transaction (all counted, or none).
- Connection limits: a connection of a data user with `max_connections = N` holds one of N PostgreSQL
  advisory locks for the user, on a database connection of its own; a process that dies loses its
  database connections, and with them its locks, so a crashed replica never leaves slots taken.
"""

from __future__ import annotations

import hashlib
import secrets
import threading

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Field, SQLModel

#: How often (seconds) a process deletes counter rows of windows that have ended.
FORGET_EVERY_SECONDS = 60.0


class SharedKey(SQLModel, table=True):
    """A secret every replica must use alike (made once, at first need)."""

    __tablename__ = "shared_key"
    name: str = Field(primary_key=True, max_length=64)
    value: str = Field(max_length=200)


class QosUsage(SQLModel, table=True):
    """How much of one quota (subject, usage) was used in the window ending at `window_end` (epoch s)."""

    __tablename__ = "qos_usage"
    subject: str = Field(primary_key=True, max_length=120)
    usage: str = Field(primary_key=True, max_length=32)
    window_end: int = Field(primary_key=True, sa_type=sa.BigInteger)
    used: int = Field(default=0, sa_type=sa.BigInteger)


def _insert(engine: sa.Engine, table: sa.Table) -> postgresql.Insert | sqlite.Insert:
    if engine.dialect.name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)


def shared_key(engine: sa.Engine, name: str) -> bytes:
    """The key `name`: made at random by the first process that asks, read by every other."""
    table = SharedKey.__table__  # type: ignore[attr-defined]
    with engine.begin() as connection:
        connection.execute(
            _insert(engine, table).values(name=name, value=secrets.token_hex(32)).on_conflict_do_nothing()
        )
        value: str = connection.execute(sa.select(table.c.value).where(table.c.name == name)).scalar_one()
    return bytes.fromhex(value)


#: One quota's share of a charge: (subject, usage, window_end, limit or None).
Charge = tuple[str, str, int, int | None]


class SharedCounters:
    """QoS counters in the database (PostgreSQL): every replica counts against the same rows."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine
        self._forgotten = 0.0

    def add(self, charges: list[Charge], amount: int, now: float) -> Charge | None:
        """Add `amount` to every charge's counter, or to none: returns the first charge that would go past
        its limit (nothing is counted then), else None."""
        table = QosUsage.__table__  # type: ignore[attr-defined]
        with self.engine.begin() as connection:
            for charge in charges:
                subject, usage, window_end, limit = charge
                if limit is not None and amount > limit:
                    connection.rollback()
                    return charge
                insert = postgresql.insert(table).values(
                    subject=subject, usage=usage, window_end=window_end, used=amount
                )
                upsert = insert.on_conflict_do_update(
                    index_elements=[table.c.subject, table.c.usage, table.c.window_end],
                    set_={"used": table.c.used + insert.excluded.used},
                    where=None if limit is None else (table.c.used + insert.excluded.used <= limit),
                ).returning(table.c.used)
                if connection.execute(upsert).first() is None:  # the condition refused: over the limit
                    connection.rollback()
                    return charge
        if now - self._forgotten > FORGET_EVERY_SECONDS:
            self._forgotten = now
            with self.engine.begin() as connection:
                connection.execute(sa.delete(table).where(table.c.window_end <= int(now)))
        return None


class SharedConnectionSlots:
    """Connection slots of data users held as PostgreSQL advisory locks (see the module's docstring).

    Each held slot keeps a database connection of its own (outside the engine's pool, so that closing it
    really ends the session and its locks): only users with a limit cost one.
    """

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = sa.create_engine(engine.url, poolclass=sa.NullPool)
        self._held: dict[str, list[tuple[sa.Connection, int]]] = {}
        self._lock = threading.Lock()

    @staticmethod
    def lock_id(login: str, slot: int) -> int:
        digest = hashlib.blake2b(f"pds-portal-connection\0{login}\0{slot}".encode(), digest_size=8).digest()
        return int.from_bytes(digest, "big", signed=True)

    def take(self, login: str, limit: int) -> bool:
        """Take one of `login`'s `limit` slots; False when all are held (by any process)."""
        connection = self.engine.connect()
        try:
            for slot in range(limit):
                lock_id = self.lock_id(login, slot)
                if connection.execute(sa.select(sa.func.pg_try_advisory_lock(lock_id))).scalar():
                    connection.commit()  # end the implicit transaction; the session's lock stays
                    with self._lock:
                        self._held.setdefault(login, []).append((connection, lock_id))
                    return True
        except BaseException:
            connection.close()
            raise
        connection.close()
        return False

    def give_back(self, login: str) -> None:
        """Give back one slot `login` holds in this process."""
        with self._lock:
            held = self._held.get(login) or []
            if not held:
                return
            connection, lock_id = held.pop()
        try:
            connection.execute(sa.select(sa.func.pg_advisory_unlock(lock_id)))
        finally:
            connection.close()

    def dispose(self) -> None:
        with self._lock:
            held = [c for connections in self._held.values() for c, _ in connections]
            self._held.clear()
        for connection in held:
            connection.close()
        self.engine.dispose()
