"""Scale-out on PostgreSQL: two movers in two processes — one started like `pds up` starts it, the other a
flow run of the `mover` flow in a second Prefect work pool (a continental mover) — share one
destination's queue. No transfer is sent twice, and when one mover is SIGKILLed mid-transfer the
other takes over its transfers and finishes them."""

from __future__ import annotations

import glob
import os
import signal
import subprocess
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa

from catalog.database import make_engine, migrate
from tests.ops.stack import PdsProcesses
from tests.servers._common import spawn, terminate, venv_bin, wait_until
from tests.test_embedded import SiteWatcher

pytestmark = pytest.mark.postgres

ROOT = Path(__file__).resolve().parents[2]
FILES = 60
SIZE = 384 * 1024


@pytest.fixture
def postgres_processes(tmp_path, postgres, prefect_server):
    url = postgres.create_database(f"t_{uuid.uuid4().hex[:12]}")
    engine = make_engine(url)
    migrate(engine)
    stack = PdsProcesses(tmp_path, prefect_server.api_url, database_url=url)
    stack.engine = engine
    stack.start_api()
    yield stack
    stack.stop()
    engine.dispose()


def deploy_continental_mover(stack: PdsProcesses, pool: str, name: str) -> subprocess.Popen[bytes]:
    """A process worker on a second work pool, and a run of the real mover flow through a deployment."""
    from prefect.deployments import run_deployment

    from flows.mover import mover

    env = stack.env | {"PREFECT_WORKER_QUERY_SECONDS": "1", "PREFECT_WORKER_PREFETCH_SECONDS": "1"}
    subprocess.run(
        [venv_bin("prefect", "prefect"), "work-pool", "create", pool, "--type", "process", "--overwrite"],
        env=env,
        check=True,
        capture_output=True,
        timeout=120,
    )
    worker = spawn(
        [venv_bin("prefect", "prefect"), "worker", "start", "--pool", pool, "--type", "process"],
        stack.log("worker"),
        env,
    )
    deployment = mover.from_source(source=str(ROOT), entrypoint="flows/mover.py:mover")
    deployment_id = deployment.deploy(name=pool, work_pool_name=pool, build=False, push=False, print_next_steps=False)
    assert deployment_id
    run_deployment(f"mover/{pool}", parameters={"name": name, "max_runtime_seconds": 600}, timeout=0)
    return worker


def mover_pid(engine: sa.Engine, name: str) -> int:
    with engine.connect() as connection:
        pid = connection.execute(sa.text("SELECT pid FROM mover WHERE name = :n"), {"n": name}).scalar()
    return int(pid or 0)


def test_two_movers_share_a_queue_and_one_takes_over_when_the_other_is_killed(postgres_processes, tmp_path):
    stack = postgres_processes
    client = stack.client
    remote = tmp_path / "site"
    client.create_destination("shared", max_parallel_transfers=6)
    client.create_host("shared-disk", "file", address=str(remote), options={"max_rate": 400_000})
    client.attach_host("shared", "shared-disk")
    files = {f"p{i:03}.bin": os.urandom(SIZE) for i in range(FILES)}
    watcher = SiteWatcher(remote, {name: len(data) for name, data in files.items()})

    main_mover = stack.start_mover("main-1")
    worker = deploy_continental_mover(stack, "pds-continental-test", "continental-1")
    try:
        wait_until(
            lambda: mover_pid(stack.engine, "continental-1") > 0,
            180,
            "the continental mover to start",
            log=stack.log("worker"),
        )
        for name, data in files.items():
            (tmp_path / name).write_bytes(data)
            client.push(tmp_path / name, "shared", name)

        def by_mover(status: str) -> dict[str, int]:
            counts: dict[str, int] = {}
            for t in client.transfers(destination="shared", status=status, limit=1000):
                counts[t["mover"]] = counts.get(t["mover"], 0) + 1
            return counts

        # Both movers are sending; kill the continental one while its files are on the wire.
        wait_until(
            lambda: set(by_mover("Done")) == {"main-1", "continental-1"}
            and by_mover("Transferring").get("continental-1", 0) > 0,
            180,
            "both movers to deliver files and the continental one to be sending",
        )
        os.kill(mover_pid(stack.engine, "continental-1"), signal.SIGKILL)
        done_at_kill = sum(by_mover("Done").values())
        assert done_at_kill < FILES, "everything was done before the kill: the test proves nothing"

        wait_until(
            lambda: len(client.transfers(destination="shared", status="Done", limit=1000)) == FILES,
            300,
            "every transfer Done after the takeover",
            log=stack.log("main-1"),
        )
    finally:
        watcher.stop()
        terminate(worker, grace=15)
    assert main_mover.poll() is None, "the surviving mover kept running"
    for name, data in files.items():
        assert (remote / name).read_bytes() == data, f"{name} differs at the site"
    assert not watcher.partial, f"seen partial under the final name: {sorted(watcher.partial)}"
    assert not watcher.twice, f"written twice under the final name: {sorted(watcher.twice)}"
    assert not glob.glob(str(remote / ".*.tmp"))

    transfers = [client.transfer(t["id"]) for t in client.transfers(destination="shared", limit=1000)]
    taken_over = [t for t in transfers if "Interrupted" in [h["to_status"] for h in t["history"]]]
    assert taken_over, "the kill interrupted no transfer"
    for t in taken_over:
        interrupted = next(h for h in t["history"] if h["to_status"] == "Interrupted")
        assert interrupted["by"] == "main-1" and "continental-1" in interrupted["reason"]
        assert t["mover"] == "main-1" and t["status"] == "Done"
    # Each delivery is one Done transition: none was sent twice.
    for t in transfers:
        assert [h["to_status"] for h in t["history"]].count("Done") == 1
