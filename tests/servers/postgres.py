"""A throwaway PostgreSQL cluster (Debian's binaries) on a free port; per-test databases."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

import sqlalchemy as sa

from tests.servers._common import free_port, start, stop, wait_until


def _bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if not found:
        raise RuntimeError(f"{name} not found: install the Debian package postgresql (infra/test-deps.sh does)")
    return found[-1]


class PostgresServer:
    def __init__(self, root_dir: Path) -> None:
        # As root, the cluster runs as `postgres`, which cannot enter pytest's private temp tree.
        self.root = Path(tempfile.mkdtemp(prefix="pds-postgres-")) if os.geteuid() == 0 else Path(root_dir)
        self.data = self.root / "data"
        self.port = free_port()
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"
        self.process: subprocess.Popen[bytes] | None = None
        # initdb refuses to run as root: run the cluster as the postgres system user then.
        self._as = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []

    def start(self) -> PostgresServer:
        self.root.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            user = pwd.getpwnam("postgres")
            for path in (self.root,):
                shutil.chown(path, user.pw_uid, user.pw_gid)
        subprocess.run(
            [*self._as, _bin("initdb"), "-D", str(self.data), "-U", "postgres", "-A", "trust", "--no-sync"],
            check=True,
            capture_output=True,
        )
        log = self.root / "postgres.log"
        log.touch()
        if os.geteuid() == 0:
            shutil.chown(log, "postgres", "postgres")
        self.process = start(
            [
                *self._as,
                _bin("postgres"),
                "-D",
                str(self.data),
                "-p",
                str(self.port),
                "-h",
                "127.0.0.1",
                "-k",
                str(self.root),
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "max_connections=200",
            ],
            log,
        )
        engine = sa.create_engine(self.url, isolation_level="AUTOCOMMIT")
        wait_until(lambda: engine.connect().close() is None, 60, "PostgreSQL", log)
        engine.dispose()
        return self

    def create_database(self, name: str) -> str:
        engine = sa.create_engine(self.url, isolation_level="AUTOCOMMIT")
        with engine.connect() as connection:
            connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
        engine.dispose()
        return self.url.rsplit("/", 1)[0] + f"/{name}"

    def stop(self) -> None:
        stop(self.process, grace=10)
