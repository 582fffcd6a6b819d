"""A host's `max_connections` holds across movers on PostgreSQL: two movers in two processes send two
destinations' files to one SFTP host capped at 2, and the server never sees more than 2 sessions."""

from __future__ import annotations

import os
import threading
import time
import uuid

import psutil
import pytest

from catalog.database import make_engine, migrate
from tests.ops.stack import PdsProcesses
from tests.servers._common import wait_until

pytestmark = pytest.mark.postgres

CAP = 2
FILES = 6  # per destination: a free place goes to either mover, so one taking all 12 is 2**-11 likely
MOVERS = ("cap-mover-1", "cap-mover-2")
#: Above the mover's large-file size: each file is sent alone, over a connection of its own, so the
#: sessions at the server are the transfers running (small files would share one batch connection).
SIZE = 33 * 1024 * 1024


@pytest.fixture
def postgres_processes(tmp_path, postgres, prefect_server):
    url = postgres.create_database(f"t_{uuid.uuid4().hex[:12]}")
    engine = make_engine(url)
    migrate(engine)
    engine.dispose()
    stack = PdsProcesses(tmp_path, prefect_server.api_url, database_url=url)
    stack.start_api()
    yield stack
    stack.stop()


class SessionCounter:
    """Counts, every few milliseconds, the TCP connections established to the server's port: what the
    server sees, whichever mover opened them."""

    def __init__(self, port: int) -> None:
        self.port, self.most = port, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._count, daemon=True)
        self._thread.start()

    def _count(self) -> None:
        while not self._stop.is_set():
            open_now = sum(
                1
                for c in psutil.net_connections(kind="tcp")
                if c.laddr and c.laddr.port == self.port and c.status == psutil.CONN_ESTABLISHED
            )
            self.most = max(self.most, open_now)
            time.sleep(0.01)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


def test_two_movers_never_open_more_sessions_than_the_host_allows(postgres_processes, sshd, tmp_path):
    stack, client = postgres_processes, postgres_processes.client
    client.create_host(
        "capped-sftp",
        "sftp",
        address=f"{sshd.host}:{sshd.port}",
        login=sshd.username,
        directory=f"{sshd.data_dir}/$destination",
        options={
            "key_filename": str(sshd.client_key_path),
            "known_hosts": str(sshd.known_hosts_path),
            "max_connections": CAP,
            "max_rate": 10_000_000,  # slow enough that the two movers' claims overlap
        },
    )
    names = {}
    for destination in ("cap-a", "cap-b"):
        client.create_destination(destination, max_parallel_transfers=8)
        client.attach_host(destination, "capped-sftp")
        client.hold_destination(destination)  # released once both movers claim: both must be there
        for i in range(FILES):
            path = tmp_path / f"{destination}-{i:02}.bin"
            path.write_bytes(os.urandom(SIZE))
            names[client.push(path, destination, path.name)["data_file_id"]] = (destination, path.name)
    # A take-over is not what this test is about: on a loaded machine a mover can miss the tests' 4 s.
    for name in MOVERS:
        stack.start_mover(name, PDS_MOVER_STALE_SECONDS="60", PREFECT_LOGGING_LEVEL="INFO")
    for name in MOVERS:
        wait_until(
            lambda name=name: "claims transfers" in stack.log(name).read_text(),
            120,
            f"{name} claims",
            log=stack.log(name),
        )
    counter = SessionCounter(sshd.port)
    for destination in ("cap-a", "cap-b"):
        client.restart_destination(destination)
    try:

        def done() -> int:
            return sum(len(client.transfers(destination=d, status="Done", limit=1000)) for d in ("cap-a", "cap-b"))

        wait_until(lambda: done() == 2 * FILES, 300, "every transfer Done", log=stack.log(MOVERS[0]))
    finally:
        counter.stop()
    movers = {
        t["mover"] for d in ("cap-a", "cap-b") for t in client.transfers(destination=d, status="Done", limit=1000)
    }
    logs = "\n".join(stack.log(name).read_text()[-3000:] for name in MOVERS)
    assert movers == set(MOVERS), f"both movers sent files: the test proves nothing otherwise\n{logs}"
    assert 0 < counter.most <= CAP, f"{counter.most} sessions open at once at the server, cap {CAP}"
    for destination, name in names.values():
        assert (sshd.data_dir / destination / name).exists()
    print(f"\nat most {counter.most} sessions at the server (cap {CAP}), movers {sorted(movers)}")
