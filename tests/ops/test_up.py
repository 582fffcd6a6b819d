"""`pds up` as an operator runs it: one instance per data directory, children that never outlive it and
come back when they die, a start that says what is ready, and a stop that leaves Prefect clean.

Stacks report to the session's Prefect server (so their runs can be read after they stop), except the
one that is killed, which runs its own, as `pds up` does by default.
"""

from __future__ import annotations

import base64
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest

from api.client import PdsClient
from tests.servers._common import free_port, wait_until

PDS = str(Path(sys.executable).with_name("pds"))
LONG_LIVED = ["mover", "proxy-fetcher", "retrieval", "acquisition-scheduler", "subscriptions"]
CHILDREN = ["api", "portal-ftp", "portal-sftp", "mover", "proxy-fetcher", "retriever", "acquisition-scheduler"]


class Up:
    """One `pds up` process on its own data directory and ports, its output in a file."""

    def __init__(self, root: Path, prefect_api_url: str | None = None, **settings: str) -> None:
        self.root, self.data_dir = root, root / "data"
        self.api_port, self.prefect_port = free_port(), free_port()
        self.api_url = f"http://127.0.0.1:{self.api_port}"
        self.prefect_api = prefect_api_url or f"http://127.0.0.1:{self.prefect_port}/api"
        self.own_prefect = prefect_api_url is None
        self.env = (
            {k: v for k, v in os.environ.items() if not k.startswith(("PDS_", "PREFECT_"))}
            | {
                "PDS_API_PORT": str(self.api_port),
                "PDS_PREFECT_PORT": str(self.prefect_port),
                "PDS_PORTAL_FTP_PORT": str(free_port()),
                "PDS_PORTAL_SFTP_PORT": str(free_port()),
                "PDS_API_URL": self.api_url,
                "PDS_MOVER_POLL_SECONDS": "0.1",
                "PREFECT_LOGGING_LEVEL": "WARNING",
            }
            | settings
        )
        self.log = root / "pds-up.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.client = PdsClient(self.api_url, user="admin", password="admin")
        self.started = time.time()

    def again(self) -> Up:
        """A second `pds up` on the same data directory, ports and Prefect server (for a restart)."""
        other = Up.__new__(Up)
        other.__dict__ = dict(self.__dict__)
        other.log, other.process, other.started = self.root / "pds-up-again.log", None, time.time()
        return other

    def command(self) -> list[str]:
        command = [PDS, "up", "--data-dir", str(self.data_dir)]
        return command if self.own_prefect else [*command, "--prefect-api-url", self.prefect_api]

    def start(self) -> Up:
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(self.command(), env=self.env, stdout=out, stderr=subprocess.STDOUT)
        return self

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_up(self, timeout: float = 300) -> None:
        wait_until(lambda: "pds is up" in self.output(), timeout, "pds up", log=self.log, process=self.process)

    def pid(self, name: str) -> int:
        return int((self.data_dir / "run" / f"{name}.pid").read_text())

    def interrupt(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGINT)  # what Ctrl-C does

    def runs(self, flows: list[str]) -> list[dict]:
        body = {"flows": {"name": {"any_": flows}}, "flow_runs": {"start_time": {"after_": _iso(self.started)}}}
        return httpx.post(f"{self.prefect_api}/flow_runs/filter", json=body, timeout=10).raise_for_status().json()


def _iso(epoch: float) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(epoch, UTC).isoformat()


def gone(pid: int) -> bool:
    return not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


def slow_destination(up: Up, name: str, site: Path, bytes_per_second: int) -> None:
    """A destination whose host is a local directory written at a capped rate."""
    up.client.create_destination(name)
    up.client.create_host(
        f"{name}-host", "file", address=str(site), directory="$destination", options={"max_rate": bytes_per_second}
    )
    up.client.attach_host(name, f"{name}-host")


def push_and_wait_until_sending(up: Up, tmp_path: Path, destination: str, size: int) -> int:
    source = tmp_path / f"{destination}.bin"
    source.write_bytes(os.urandom(size))
    (transfer,) = up.client.push(source, destination, "big.bin")["transfers"]
    wait_until(
        lambda: up.client.transfer(transfer["id"])["bytes_sent"] > 0, 120, "the transfer to be under way", log=up.log
    )
    return int(transfer["id"])


@pytest.fixture(scope="module")
def stack(tmp_path_factory, prefect_server):
    up = Up(tmp_path_factory.mktemp("up"), prefect_server.api_url).start()
    up.wait_up()
    yield up
    if up.process is not None and up.process.poll() is None:
        up.interrupt()
        up.process.wait(120)


def test_the_start_says_each_part_as_it_becomes_ready(stack):
    out = stack.output()
    ready = [line.split()[0] for line in out.splitlines() if "ready after" in line]
    assert ready[0] == "database"
    assert {"API", "portal-ftp", "portal-sftp", *CHILDREN[3:], "subscriptions"} <= set(ready)
    assert out.index("ready after") < out.index("pds is up")
    assert f"home       {stack.api_url}/" in out
    assert f"Portal     {stack.api_url}/portal (HTTP)" in out
    assert httpx.get(f"{stack.api_url}/health").json()["instance"]


def test_a_second_start_on_the_same_data_directory_is_refused_naming_the_first(stack):
    mover = stack.pid("mover")
    began = time.monotonic()
    second = subprocess.run(stack.command(), env=stack.env, capture_output=True, text=True, timeout=30, check=False)
    assert time.monotonic() - began < 5
    assert second.returncode != 0
    lines = second.stderr.strip().splitlines()
    assert len(lines) == 1, second.stderr
    assert f"pid {stack.process.pid}" in lines[0] and str(stack.data_dir) in lines[0]
    assert "pds is up" not in second.stdout
    assert stack.pid("mover") == mover and not gone(mover)  # the first stack's mover is untouched


def test_a_port_in_use_refuses_the_start_before_anything_starts(tmp_path):
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        up = Up(tmp_path, PDS_API_PORT=str(port))
        began = time.monotonic()
        done = subprocess.run(up.command(), env=up.env, capture_output=True, text=True, timeout=30, check=False)
    assert time.monotonic() - began < 5
    assert done.returncode == 1
    assert f"the API (127.0.0.1:{port})" in done.stderr
    assert not (up.data_dir / "logs" / "prefect.log").exists()  # nothing was started
    assert not list((up.data_dir / "run").glob("*.pid"))


def test_a_killed_api_is_started_again(stack):
    killed = stack.pid("api")
    os.kill(killed, signal.SIGKILL)
    wait_until(lambda: stack.pid("api") != killed, 30, "a new API process", log=stack.log)
    wait_until(lambda: httpx.get(f"{stack.api_url}/health").status_code == 200, 60, "the new API", log=stack.log)
    assert "api exited" in stack.output()
    assert stack.process.poll() is None


def test_a_killed_api_worker_brings_the_api_back(stack):
    workers = psutil.Process(stack.pid("api")).children(recursive=True)
    assert workers, "the API serves from worker processes"
    for worker in workers:
        worker.kill()
    wait_until(lambda: all(gone(w.pid) for w in workers), 30, "the workers to die")

    def answers() -> bool:
        return httpx.get(f"{stack.api_url}/health", timeout=2).status_code == 200

    wait_until(answers, 90, "the API to answer again", log=stack.log)
    assert stack.process.poll() is None


def test_a_stop_waits_for_a_transfer_in_flight_and_leaves_prefect_clean(stack, tmp_path):
    slow_destination(stack, "slow-site", tmp_path / "site", 1_000_000)
    transfer_id = push_and_wait_until_sending(stack, tmp_path, "slow-site", 4_000_000)
    stack.interrupt()
    assert stack.process.wait(120) == 0
    out = stack.output()
    assert f"transfer {transfer_id} to slow-site:big.bin" in out and "MiB" in out
    assert (tmp_path / "site" / "slow-site" / "big.bin").stat().st_size == 4_000_000
    runs = [r for r in stack.runs(LONG_LIVED) if r["state_type"] != "SCHEDULED"]  # not started: deployments' own
    assert {r["name"].split()[0] for r in runs} >= {"mover", "retrieval"}
    assert {r["state_type"] for r in runs} == {"COMPLETED"}, [(r["name"], r["state_type"]) for r in runs]
    assert "Traceback" not in out


def test_a_second_ctrl_c_interrupts_at_once_and_the_transfer_resumes_at_the_next_start(tmp_path, prefect_server):
    up = Up(tmp_path, prefect_server.api_url).start()
    up.wait_up()
    slow_destination(up, "slower-site", tmp_path / "site", 500_000)
    transfer_id = push_and_wait_until_sending(up, tmp_path, "slower-site", 30_000_000)
    up.interrupt()
    wait_until(lambda: f"transfer {transfer_id} to slower-site" in up.output(), 30, "the in-flight line", log=up.log)
    began = time.monotonic()
    up.interrupt()
    assert up.process.wait(60) == 0
    assert time.monotonic() - began < 20
    assert "interrupted: stopped mover" in up.output()
    runs = up.runs(LONG_LIVED)
    assert "CRASHED" not in {r["state_type"] for r in runs}
    mover_runs = [r for r in runs if r["name"].startswith("mover")]
    assert mover_runs and {r["state_type"] for r in mover_runs} == {"CANCELLED"}
    # The next start sends it again, from the start, and it arrives whole.
    restarted = up.again().start()
    restarted.wait_up()
    try:
        transfer = up.client.transfer(transfer_id)
        statuses = [h["to_status"] for h in transfer["history"]]
        assert "Interrupted" in statuses
        wait_until(lambda: up.client.transfer(transfer_id)["status"] == "Done", 120, "the resent transfer")
    finally:
        restarted.interrupt()
        restarted.process.wait(120)


def test_killing_pds_up_kills_its_children_and_the_next_start_ends_their_runs(tmp_path):
    up = Up(tmp_path).start()
    up.wait_up()
    children = {name: up.pid(name) for name in [*CHILDREN, "prefect"]}
    os.kill(up.process.pid, signal.SIGKILL)
    up.process.wait()
    wait_until(lambda: all(gone(pid) for pid in children.values()), 30, "the children to die")
    again = up.again().start()
    again.wait_up()
    try:
        assert "marked Crashed" in again.output()
        runs = httpx.post(f"{again.prefect_api}/flow_runs/filter", json={}).json()
        old = [r for r in runs if r["start_time"] and r["start_time"] < _iso(again.started)]
        assert old and all(r["state_type"] in ("CRASHED", "COMPLETED") for r in old), old
    finally:
        stopping = time.monotonic()
        again.interrupt()
        assert again.process.wait(120) == 0
    # Nothing was in flight: 10 s is the target on a quiet machine (tests/benchmarks/startup.py measures
    # it); this bound only allows for a loaded test machine.
    assert time.monotonic() - stopping < 20


def test_an_upload_left_arriving_by_a_dead_api_fails_at_the_next_start(tmp_path, prefect_server):
    up = Up(tmp_path, prefect_server.api_url).start()
    up.wait_up()
    up.client.create_destination("portal-bucket")
    host, port = "127.0.0.1", up.api_port
    auth = base64.b64encode(b"admin:admin").decode()
    with socket.create_connection((host, port)) as s:
        s.sendall(
            f"PUT /portal/portal-bucket/half.bin HTTP/1.1\r\nHost: {host}\r\nAuthorization: Basic {auth}\r\n"
            "Content-Length: 10000000\r\n\r\n".encode()
            + b"x" * 100_000
        )
        wait_until(
            lambda: [t["status"] for t in up.client.transfers(destination="portal-bucket")] == ["Arriving"],
            30,
            "the upload to register",
        )
        # The API process dies with the upload half done: nobody is left to fail it.
        api = up.pid("api")
        os.killpg(api, signal.SIGKILL)
        wait_until(lambda: gone(api), 30, "the API to die")
    wait_until(lambda: httpx.get(f"{up.api_url}/health").status_code == 200, 60, "the API again", log=up.log)
    assert [t["status"] for t in up.client.transfers(destination="portal-bucket")] == ["Arriving"]
    up.interrupt()
    assert up.process.wait(120) == 0
    again = up.again().start()
    again.wait_up()
    try:
        assert "1 upload(s) left unfinished marked Failed" in again.output()
        (transfer,) = up.client.transfers(destination="portal-bucket")
        assert transfer["status"] == "Failed" and "upload broke off" in transfer["error"]
    finally:
        again.interrupt()
        again.process.wait(120)
