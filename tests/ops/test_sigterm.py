"""A service manager stops a mover with SIGTERM: the file on the wire arrives whole and once, the process
exits 0 and its flow run ends Completed, not Crashed. The other long-lived flows end Completed too."""

from __future__ import annotations

import os
import signal
import sys
from datetime import UTC, datetime

import httpx
import pytest

from tests.servers._common import spawn, terminate, wait_until

SIZE = 8 * 1024 * 1024  # about 4 s at the host's rate


def flow_runs(prefect_api_url: str, flow: str, since: datetime) -> list[dict]:
    """The runs of `flow` started from a command since `since` (the Prefect server is shared with other
    tests, some of which serve deployments of the same flows)."""
    runs = {"deployment_id": {"is_null_": True}, "start_time": {"after_": since.isoformat()}}
    body = {"flows": {"name": {"any_": [flow]}}, "flow_runs": runs}
    return httpx.post(f"{prefect_api_url}/flow_runs/filter", json=body, timeout=10).raise_for_status().json()


def test_sigterm_lets_the_transfer_on_the_wire_finish_and_ends_the_run_completed(processes, tmp_path, prefect_server):
    stack, client = processes, processes.client
    site = tmp_path / "site"
    client.create_destination("stopping")
    client.create_host("stopping-disk", "file", address=str(site), options={"max_rate": 2_000_000})
    client.attach_host("stopping", "stopping-disk")
    data = os.urandom(SIZE)
    (tmp_path / "big.bin").write_bytes(data)
    since = datetime.now(UTC)
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
    runs = flow_runs(prefect_server.api_url, "mover", since)
    assert [run["state"]["type"] for run in runs] == ["COMPLETED"], runs


@pytest.mark.parametrize(
    ("module", "flow"),
    [
        ("flows.discovery", "acquisition-scheduler"),
        ("flows.retrieval", "retrieval"),
        ("flows.proxy_fetch", "proxy-fetcher"),
        ("flows.subscription", "subscriptions"),
    ],
)
def test_sigterm_ends_each_long_lived_flow_completed(processes, prefect_server, module, flow):
    log, since = processes.log(module), datetime.now(UTC)
    process = spawn([sys.executable, "-m", module], log, processes.env)
    try:
        wait_until(
            lambda: any(r["state"]["type"] == "RUNNING" for r in flow_runs(prefect_server.api_url, flow, since)),
            120,
            f"a running {flow} flow run",
            log=log,
        )
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0, log.read_text()[-3000:]
    finally:
        terminate(process)
    assert "Crash detected" not in log.read_text(), log.read_text()[-3000:]
    assert [r["state"]["type"] for r in flow_runs(prefect_server.api_url, flow, since)] == ["COMPLETED"]
