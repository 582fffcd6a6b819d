"""A throwaway PostgreSQL cluster (Debian's binaries) on a free port, with per-test databases.

initdb and postgres refuse to run as root, so as root the cluster belongs to the `postgres` system
user and every command goes through `runuser -u postgres --`. That user cannot enter pytest's temp
tree (/tmp/pytest-of-root is mode 0700), so the cluster then lives in a fresh directory under /tmp,
removed again by stop(), and `root_dir` is used only when `postgres` can reach it.
"""

from __future__ import annotations

import glob
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Self

import sqlalchemy as sa

from tests.servers._common import IS_ROOT, Server, free_port, log_tail, require, wait_until

SETTINGS = {
    "fsync": "off",  # throwaway data: durability only costs time
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "300",  # every test engine keeps a pool
}


def pg_bin(name: str) -> str:
    """`name` from the newest /usr/lib/postgresql/<version>/bin (Debian keeps them off PATH)."""
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), key=lambda p: int(p.split("/")[4]))
    if not found:
        raise RuntimeError(f"{name} not found: install the Debian package postgresql (e.g. postgresql-15)")
    return found[-1]


class PostgresServer(Server):
    """A cluster started with `pg_ctl start` and stopped with `pg_ctl stop -m fast`.

    Attributes: `host`, `port`, `url` (SQLAlchemy URL of the database `pds`, psycopg 3 driver);
    `create_database(name)` returns the URL of a new empty database.
    """

    def __init__(self, root_dir: Path) -> None:
        self._requested_root = Path(root_dir).resolve()
        self.root = self._requested_root
        self._own_root = False
        self.host = "127.0.0.1"
        self.port = free_port()
        self.user = "postgres"  # the superuser name given to initdb, not the system user
        self.url = self.database_url("pds")
        self._runuser = ["runuser", "-u", "postgres", "--"] if IS_ROOT else []
        self._started = False

    @property
    def pgdata(self) -> Path:
        return self.root / "data"

    @property
    def log(self) -> Path:
        return self.root / "postgres.log"

    def database_url(self, name: str) -> str:
        return f"postgresql+psycopg://{self.user}@{self.host}:{self.port}/{name}"

    def _run(self, *command: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """Run a PostgreSQL tool as the cluster's owner, from a directory that owner may enter."""
        return subprocess.run(
            [*self._runuser, *command], cwd=self.root, capture_output=True, text=True, timeout=timeout
        )

    def _prepare_root(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        if not IS_ROOT:
            return
        probe = ["runuser", "-u", "postgres", "--", "test", "-x", str(self.root.parent)]
        if subprocess.run(probe, check=False).returncode != 0:
            self.root = Path(tempfile.mkdtemp(prefix="pds-postgres-"))
            self._own_root = True
            (self._requested_root / "cluster-location.txt").write_text(f"{self.root}\n")
        shutil.chown(self.root, "postgres", "postgres")

    def start(self) -> Self:
        if self._started:
            return self
        if IS_ROOT:
            require("runuser", "the Debian package util-linux")
        initdb, pg_ctl = pg_bin("initdb"), pg_bin("pg_ctl")
        self._prepare_root()
        result = self._run(
            initdb, "-D", str(self.pgdata), "-U", self.user, "-A", "trust", "-E", "UTF8", "--locale=C", "--no-sync"
        )
        if result.returncode != 0:
            raise RuntimeError(f"initdb failed:\n{result.stdout}\n{result.stderr}")
        settings = SETTINGS | {
            "listen_addresses": f"'{self.host}'",
            "port": str(self.port),
            "unix_socket_directories": f"'{self.root}'",
        }
        with (self.pgdata / "postgresql.conf").open("a") as conf:
            conf.writelines(f"{key} = {value}\n" for key, value in settings.items())
        self._started = True
        try:
            result = self._run(pg_ctl, "-D", str(self.pgdata), "-l", str(self.log), "-w", "-t", "60", "start")
            if result.returncode != 0:
                raise RuntimeError(f"pg_ctl start failed:\n{result.stdout}{result.stderr}\n{log_tail(self.log)}")
            wait_until(self._accepts_connections, 30, "PostgreSQL", log=self.log)
            self.create_database("pds")
        except BaseException:
            self.stop()
            raise
        return self

    def _accepts_connections(self) -> bool:
        admin = sa.create_engine(self.database_url("postgres"), poolclass=sa.NullPool)
        with admin.connect() as connection:
            return connection.execute(sa.text("select 1")).scalar() == 1

    def create_database(self, name: str) -> str:
        """Create an empty database `name` and return its URL."""
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,62}", name):
            raise ValueError(f"not a plain database name: {name!r}")
        admin = sa.create_engine(self.database_url("postgres"), isolation_level="AUTOCOMMIT")
        try:
            with admin.connect() as connection:
                connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
        finally:
            admin.dispose()
        return self.database_url(name)

    def stop(self) -> None:
        """Fast shutdown (disconnects clients, unlike the default "smart" mode which waits for them)."""
        if self._started:
            self._started = False
            pg_ctl = pg_bin("pg_ctl")
            if self._run(pg_ctl, "-D", str(self.pgdata), "-m", "fast", "-w", "-t", "30", "stop").returncode:
                self._run(pg_ctl, "-D", str(self.pgdata), "-m", "immediate", "-w", "stop")
        if self._own_root:
            shutil.rmtree(self.root, ignore_errors=True)
            self.root, self._own_root = self._requested_root, False
