"""The README's run command, end to end: `pds up`, then push large files to real SFTP and S3 servers.

Also: a mover killed mid-transfer leaves nothing under the final name and finishes after its restart;
the API's and the mover's memory stay flat; Ctrl-C stops every process `pds up` started.
"""

from __future__ import annotations

import glob
import hashlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

import httpx
import psutil
import pytest

from api.client import PdsClient
from catalog.events import parse_line
from tests.servers._common import free_port, wait_until

BIG = 200 * 1024 * 1024


class Stack:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.data_dir = root / "data"
        self.api_url = f"http://127.0.0.1:{free_port()}"
        self.prefect_port = free_port()
        self.prefect_api = f"http://127.0.0.1:{self.prefect_port}/api"
        self.env = dict(os.environ) | {
            "PDS_API_PORT": self.api_url.rsplit(":", 1)[1],
            "PDS_PREFECT_PORT": str(self.prefect_port),
            "PDS_PORTAL_FTP_PORT": str(free_port()),
            "PDS_PORTAL_SFTP_PORT": str(free_port()),
            "PDS_API_URL": self.api_url,
            "PDS_USER": "admin",
            "PDS_PASSWORD": "admin",
        }
        self.env.pop("PREFECT_API_URL", None)
        self.process: subprocess.Popen[bytes] | None = None
        self.client = PdsClient(self.api_url, user="admin", password="admin")

    def pds(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(Path(sys.executable).with_name("pds")), *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )

    def pid(self, name: str) -> int:
        return int((self.data_dir / "run" / f"{name}.pid").read_text())

    def rss(self, name: str) -> int:
        """Resident memory of the process and its children (granian serves the API from a worker)."""
        process = psutil.Process(self.pid(name))
        return sum(p.memory_info().rss for p in [process, *process.children(recursive=True)])

    def wait_done(self, data_file_id: int, timeout: float = 300) -> dict:
        (transfer,) = self.client.wait_for_data_file(data_file_id, timeout=timeout)
        return self.client.transfer(transfer["id"])


def mover_running(prefect_api: str) -> bool:
    runs = httpx.post(
        f"{prefect_api}/flow_runs/filter", json={"flow_runs": {"state": {"type": {"any_": ["RUNNING"]}}}}
    ).json()
    return any(r["name"].startswith("mover") for r in runs)


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    stack = Stack(tmp_path_factory.mktemp("stack"))
    log = (stack.root / "pds-up.log").open("wb")
    stack.process = subprocess.Popen(
        [str(Path(sys.executable).with_name("pds")), "up", "--data-dir", str(stack.data_dir)],
        env=stack.env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    wait_until(
        lambda: (stack.data_dir / "run" / "mover.pid").exists()
        and httpx.get(f"{stack.api_url}/health").status_code == 200,
        240,
        "pds up",
        log=stack.root / "pds-up.log",
        process=stack.process,
    )
    # Memory baselines are taken once the mover has finished starting: its flow run is running.
    wait_until(lambda: mover_running(stack.prefect_api), 120, "the mover flow run", log=stack.root / "pds-up.log")
    yield stack
    children = [stack.pid(n) for n in ("prefect", "api", "mover", "portal-ftp", "portal-sftp")]
    stack.process.send_signal(signal.SIGINT)  # what Ctrl-C does
    assert stack.process.wait(60) == 0
    for pid in children:
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


def big_file(path: Path, size: int = BIG) -> str:
    digest = hashlib.md5()
    with path.open("wb") as f:
        for _ in range(size // (8 << 20)):
            chunk = os.urandom(8 << 20)
            digest.update(chunk)
            f.write(chunk)
    return digest.hexdigest()


def md5_of(path: Path) -> str:
    digest = hashlib.md5()
    with path.open("rb") as f:
        while chunk := f.read(8 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def sftp_destination(stack: Stack, sshd, name: str, *options: str) -> Path:
    """A destination whose one host is the SFTP server; `options` are extra `-o KEY=VALUE` pairs."""
    remote = sshd.data_dir / name
    assert stack.pds("destination", "add", name).returncode == 0
    extra = [arg for option in options for arg in ("-o", option)]
    r = stack.pds(
        "host",
        "add",
        f"{name}-host",
        "--protocol",
        "sftp",
        "--address",
        f"{sshd.host}:{sshd.port}",
        "--login",
        sshd.username,
        "--directory",
        f"{sshd.data_dir}/$destination",
        "-o",
        f"key_filename={sshd.client_key_path}",
        "-o",
        f"known_hosts={sshd.known_hosts_path}",
        *extra,
        "--destination",
        name,
    )
    assert r.returncode == 0, r.stderr
    return remote


def assert_dispatch_in_prefect(stack: Stack, transfer: dict) -> None:
    def dispatch_run() -> dict:
        return httpx.get(f"{stack.prefect_api}/flow_runs/{transfer['flow_run_id']}").raise_for_status().json()

    run = dispatch_run()
    assert run["name"].startswith("dispatch")
    # The dispatch waits a while for the mover's next claim (flows.dispatch.SLOT_IDLE_SECONDS), then ends.
    wait_until(lambda: dispatch_run()["state_type"] != "RUNNING", 60, "the dispatch run to end")
    assert dispatch_run()["state_type"] == "COMPLETED"
    assert run["parent_task_run_id"] is not None  # a subflow of the long-lived mover run
    tasks = httpx.post(
        f"{stack.prefect_api}/task_runs/filter", json={"flow_runs": {"id": {"any_": [transfer["flow_run_id"]]}}}
    ).json()
    assert any(t["name"].startswith("send") and t["state_type"] == "COMPLETED" for t in tasks)


def test_push_200_mib_to_sftp_arrives_whole_with_flat_memory(stack, sshd, tmp_path):
    remote = sftp_destination(stack, sshd, "sftp-site")
    source = tmp_path / "big.grib"
    md5 = big_file(source)
    before = {n: stack.rss(n) for n in ("api", "mover")}
    r = stack.pds("push", str(source), "--destination", "sftp-site", "--target", "2026/big.grib", "--priority", "10")
    assert r.returncode == 0, r.stderr
    data_file_id = int(r.stdout.strip())
    transfer = stack.wait_done(data_file_id)
    assert transfer["status"] == "Done", transfer
    assert md5_of(remote / "2026" / "big.grib") == md5
    assert [h["to_status"] for h in transfer["history"]] == ["Arriving", "Queued", "Transferring", "Done"]
    assert transfer["bytes_sent"] == BIG and transfer["host"] == "sftp-site-host"
    assert_dispatch_in_prefect(stack, transfer)
    for name, rss in before.items():
        assert stack.rss(name) - rss < 100 * 1024 * 1024, f"{name} grew by {(stack.rss(name) - rss) >> 20} MiB"


def test_push_200_mib_to_s3_arrives_whole(stack, s3_server, tmp_path):
    bucket = f"site-{uuid.uuid4().hex[:8]}"
    s3_server.create_bucket(bucket)
    client = stack.client
    client.create_destination("s3-site")
    client.create_host(
        "s3-host",
        "s3",
        address=s3_server.endpoint_url,
        login=s3_server.access_key,
        password=s3_server.secret_key,
        directory=f"{bucket}/$destination",
        options={"region": s3_server.region},
    )
    client.attach_host("s3-site", "s3-host")
    source = tmp_path / "big.nc"
    md5 = big_file(source)
    result = client.push(source, "s3-site", "in/big.nc")
    transfer = stack.wait_done(result["data_file_id"])
    assert transfer["status"] == "Done", transfer
    body = s3_server.client().get_object(Bucket=bucket, Key="s3-site/in/big.nc")["Body"]
    digest = hashlib.md5()
    for chunk in iter(lambda: body.read(8 << 20), b""):
        digest.update(chunk)
    assert digest.hexdigest() == md5
    assert_dispatch_in_prefect(stack, transfer)


def test_a_killed_mover_leaves_no_partial_file_and_finishes_after_restart(stack, sshd, tmp_path):
    remote = sftp_destination(stack, sshd, "crash-site")
    source = tmp_path / "crash.bin"
    md5 = big_file(source, 400 * 1024 * 1024)
    result = stack.client.push(source, "crash-site", "crash.bin")
    transfer_id = result["transfers"][0]["id"]
    # Kill once bytes are flowing into the temporary file at the site.
    wait_until(
        lambda: any(os.path.getsize(p) > 0 for p in glob.glob(str(remote / ".crash.bin.pds-*.tmp"))),
        120,
        "the transfer to start",
    )
    killed = stack.pid("mover")
    os.kill(killed, signal.SIGKILL)
    dying = stack.client.transfer(transfer_id)
    assert dying["status"] == "Transferring" and dying["flow_run_id"]
    assert not (remote / "crash.bin").exists()
    transfer = stack.wait_done(result["data_file_id"], timeout=300)
    assert stack.pid("mover") != killed  # pds up started a new mover
    statuses = [h["to_status"] for h in transfer["history"]]
    assert statuses == ["Arriving", "Queued", "Transferring", "Interrupted", "Queued", "Transferring", "Done"]
    assert md5_of(remote / "crash.bin") == md5
    assert glob.glob(str(remote / ".crash.bin.pds-*.tmp")) == []
    # In the Prefect UI the killed dispatch says Crashed (not Running for ever); the new one completed.
    assert transfer["flow_run_id"] != dying["flow_run_id"]
    assert_dispatch_in_prefect(stack, transfer)
    dead = httpx.get(f"{stack.prefect_api}/flow_runs/{dying['flow_run_id']}").raise_for_status().json()
    assert dead["state_type"] == "CRASHED" and "took over what it was sending" in dead["state"]["message"]


class SiteWatcher:
    """Looks at the site's directory every few milliseconds while transfers run, and remembers any
    file seen under its final name with the wrong size (a partial file) or written twice (its inode
    changed after it was complete)."""

    def __init__(self, directory: Path, sizes: dict[str, int]) -> None:
        self.directory, self.sizes = directory, sizes
        self.inodes: dict[str, int] = {}
        self.partial: set[str] = set()
        self.twice: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        while not self._stop.is_set():
            try:
                entries = list(os.scandir(self.directory))
            except FileNotFoundError:
                entries = []
            for entry in entries:
                if entry.name.startswith(".") or entry.name not in self.sizes:
                    continue
                try:
                    stat = entry.stat()
                except FileNotFoundError:
                    continue
                if stat.st_size != self.sizes[entry.name]:
                    self.partial.add(entry.name)
                if self.inodes.setdefault(entry.name, stat.st_ino) != stat.st_ino:
                    self.twice.add(entry.name)
            time.sleep(0.005)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


def test_sigkill_during_100_transfers_loses_none_sends_none_twice(stack, sshd, tmp_path):
    remote = sftp_destination(stack, sshd, "kill-100", "max_rate=1500000")
    files = {f"p{i:03}.bin": os.urandom(512 * 1024) for i in range(100)}
    watcher = SiteWatcher(remote, {name: len(data) for name, data in files.items()})
    data_file_ids = {}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
        data_file_ids[name] = stack.client.push(tmp_path / name, "kill-100", name)["data_file_id"]

    def done() -> int:
        return len(stack.client.transfers(destination="kill-100", status="Done", limit=1000))

    def transferring() -> int:
        return len(stack.client.transfers(destination="kill-100", status="Transferring", limit=1000))

    # Kill while files are on the wire (between two claims nothing may be Transferring).
    wait_until(lambda: done() >= 20 and transferring() > 0, 120, "20 transfers done and more under way")
    killed = stack.pid("mover")
    os.kill(killed, signal.SIGKILL)
    at_kill = done()
    assert at_kill < 100, "every transfer finished before the kill: the test proves nothing"
    transfers = [stack.wait_done(i, timeout=300) for i in data_file_ids.values()]
    watcher.stop()
    assert stack.pid("mover") != killed
    assert all(t["status"] == "Done" for t in transfers), [t for t in transfers if t["status"] != "Done"]
    for name, data in files.items():
        assert (remote / name).read_bytes() == data, f"{name} differs at the site"
    assert not watcher.partial, f"seen partial under the final name: {sorted(watcher.partial)}"
    assert not watcher.twice, f"written twice under the final name: {sorted(watcher.twice)}"
    assert not glob.glob(str(remote / ".*.tmp"))
    interrupted = [t for t in transfers if "Interrupted" in [h["to_status"] for h in t["history"]]]
    assert interrupted, "the kill interrupted no transfer"
    # Every delivery accounted for: one UPH line per Done transfer, whatever the kill cut short.
    done_ids = {str(t["id"]) for t in transfers}

    def uph_lines() -> Counter[str]:
        log = (stack.data_dir / "logs" / "events.log").read_text().splitlines()
        return Counter(
            dict(pairs)["DataTransferId"]
            for category, pairs in map(parse_line, log)
            if category == "UPH" and dict(pairs)["DataTransferId"] in done_ids
        )

    wait_until(lambda: set(uph_lines()) == done_ids, 30, "a UPH line for every Done transfer")
    assert all(n == 1 for n in uph_lines().values()), "a transfer with two UPH lines"


def test_an_upload_that_breaks_off_fails_its_transfer_and_queues_nothing(stack, tmp_path):
    import base64
    import socket

    stack.client.create_destination("broken-site")
    host, port = stack.api_url.removeprefix("http://").split(":")
    auth = base64.b64encode(b"admin:admin").decode()
    with socket.create_connection((host, int(port))) as s:
        s.sendall(
            f"PUT /portal/broken-site/half.bin HTTP/1.1\r\nHost: {host}\r\nAuthorization: Basic {auth}\r\n"
            "Content-Length: 10000000\r\n\r\n".encode()
            + b"x" * 100_000
        )
        wait_until(
            lambda: [t["status"] for t in stack.client.transfers(destination="broken-site")] == ["Arriving"],
            30,
            "the upload to register",
        )
    # The client is gone with 9.9 MB missing.
    wait_until(lambda: stack.client.transfers(destination="broken-site")[0]["status"] == "Failed", 30, "failure")
    (transfer,) = stack.client.transfers(destination="broken-site")
    assert "upload broke off" in transfer["error"]
    data_file = stack.client.data_file(transfer["data_file_id"])
    assert data_file["size"] is None and data_file["md5"] is None
    assert list((stack.data_dir / "store" / "tmp").iterdir()) == []
    # A client that goes away is the client's doing, not a server error.
    assert "unexpected error" not in (stack.data_dir / "logs" / "api.log").read_text()


def test_pds_up_prints_where_everything_is_and_registers_the_deployments(stack):
    log = stack.root / "pds-up.log"
    printed = log.read_text()
    assert f"monitor    {stack.api_url}/monitor" in printed
    assert f"Prefect UI http://127.0.0.1:{stack.prefect_port}" in printed
    monitor = httpx.get(f"{stack.api_url}/monitor", follow_redirects=False)
    assert monitor.status_code == 303 and monitor.headers["location"].startswith("/monitor/login")
    assert "pds_queue_depth" in httpx.get(f"{stack.api_url}/metrics").text
    wait_until(lambda: re.search(r"deployments +ready after", log.read_text()), 300, "the deployments", log=log)
    deployments = httpx.post(f"{stack.prefect_api}/deployments/filter", json={}).json()
    by_name = {d["name"]: d for d in deployments}
    assert {"mover", "continental", "drain", "dispatch-now"} <= set(by_name)
    # The embedded stack supervises its own mover: the movers' schedules are registered paused; the
    # worker runs the periodic purge.
    assert all(not s["active"] for s in by_name["mover"]["schedules"])
    assert by_name["purge"]["schedules"] and all(s["active"] for s in by_name["purge"]["schedules"])
    assert stack.pid("worker") > 0
