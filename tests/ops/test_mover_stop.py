"""A service manager stops a mover with SIGTERM: the file on the wire arrives whole and once, the process
exits 0 and its flow run ends Completed, not Crashed."""

from __future__ import annotations

import os
import signal

import httpx
import pytest

from tests.ops.stack import PdsProcesses
from tests.servers._common import wait_until

SIZE = 8 * 1024 * 1024  # about 4 s at the host's rate


@pytest.fixture
def stack(tmp_path, prefect_server):
    stack = PdsProcesses(tmp_path, prefect_server.api_url)
    stack.start_api()
    yield stack
    stack.stop()


def test_sigterm_lets_the_transfer_on_the_wire_finish_and_ends_the_run_completed(stack, tmp_path, prefect_server):
    client = stack.client
    site = tmp_path / "site"
    client.create_destination("stopping")
    client.create_host("stopping-disk", "file", address=str(site), options={"max_rate": 2_000_000})
    client.attach_host("stopping", "stopping-disk")
    data = os.urandom(SIZE)
    (tmp_path / "big.bin").write_bytes(data)
    mover = stack.start_mover("mover-sigterm")
    (transfer,) = client.push(tmp_path / "big.bin", "stopping", "big.bin")["transfers"]
    wait_until(
        lambda: client.transfer(transfer["id"])["bytes_sent"] > 0,
        120,
        "the file on the wire",
        log=stack.log("mover-sigterm"),
    )

    mover.send_signal(signal.SIGTERM)  # the process alone, as systemd's KillMode=mixed does
    assert mover.wait(timeout=120) == 0, stack.log("mover-sigterm").read_text()[-3000:]

    log = stack.log("mover-sigterm").read_text()
    assert "Crash detected" not in log and "TerminationSignal" not in log, log[-3000:]
    sent = client.transfer(transfer["id"])
    assert sent["status"] == "Done", sent
    history = [h["to_status"] for h in sent["history"]]
    assert "Interrupted" not in history and history.count("Done") == 1, history
    assert (site / "big.bin").read_bytes() == data
    runs = (
        httpx.post(
            f"{prefect_server.api_url}/flow_runs/filter",
            json={"flow_runs": {"name": {"any_": ["mover mover-sigterm"]}}},
            timeout=10,
        )
        .raise_for_status()
        .json()
    )
    assert [run["state"]["type"] for run in runs] == ["COMPLETED"], runs
