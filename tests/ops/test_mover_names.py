"""Two mover processes under one name: the second refuses to start and touches nothing, the first goes
on sending the transfer it had in flight, whole and once."""

from __future__ import annotations

import os

import pytest

from catalog.database import make_engine
from tests.ops.stack import PdsProcesses
from tests.ops.test_scale_out import mover_pid
from tests.servers._common import wait_until
from tests.test_embedded import SiteWatcher

SIZE = 24 * 1024 * 1024


@pytest.fixture
def stack(tmp_path, prefect_server):
    stack = PdsProcesses(tmp_path, prefect_server.api_url)
    stack.start_api()
    yield stack
    stack.stop()


def test_a_second_mover_under_a_taken_name_refuses_and_the_first_goes_on(stack, tmp_path):
    client = stack.client
    site = tmp_path / "site"
    client.create_destination("slow")
    client.create_host("slow-disk", "file", address=str(site), options={"max_rate": 2_000_000})  # ~12 s
    client.attach_host("slow", "slow-disk")
    data = os.urandom(SIZE)
    (tmp_path / "big.bin").write_bytes(data)
    watcher = SiteWatcher(site, {"big.bin": SIZE})
    engine = make_engine(f"sqlite:///{tmp_path / 'data' / 'pds.db'}")
    try:
        first = stack.start_mover("mover-1")
        pushed = client.push(tmp_path / "big.bin", "slow", "big.bin")
        wait_until(
            lambda: client.transfers(destination="slow", status="Transferring"),
            120,
            "the first mover to be sending",
            log=stack.log("mover-1"),
        )
        holder = mover_pid(engine, "mover-1")
        assert holder == first.pid

        second = stack.start_mover("mover-1", log_name="mover-1-again")
        assert second.wait(timeout=120) != 0, "the second mover under the same name ran"
        log = stack.log("mover-1-again").read_text()
        assert "mover mover-1 is already running" in log and f"pid {first.pid}" in log

        assert mover_pid(engine, "mover-1") == first.pid, "the refused start took the name"
        assert first.poll() is None, "the first mover stopped"
        (transfer,) = client.wait_for_data_file(pushed["data_file_id"], timeout=180)
        assert transfer["status"] == "Done"
        history = [h["to_status"] for h in client.transfer(transfer["id"])["history"]]
        assert "Interrupted" not in history and history.count("Done") == 1
    finally:
        watcher.stop()
        engine.dispose()
    assert (site / "big.bin").read_bytes() == data
    assert not watcher.partial and not watcher.twice
