"""Memory while pushing and disseminating one large file through `pds up` to a real SFTP server.

    python tests/benchmarks/memory.py --size-gib 2

Starts its own stack (Prefect server, API, mover) and OpenSSH sshd in a temporary directory, samples the
RSS of the API and the mover every 0.1 s, and prints the peak growth of each over its RSS before the push.
The target is < 100 MB whatever the size (streaming everywhere).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from api.client import PdsClient  # noqa: E402
from tests.servers._common import free_port, wait_until  # noqa: E402
from tests.servers.sshd import SshServer  # noqa: E402
from tests.test_embedded import big_file, md5_of, mover_running  # noqa: E402


def tree_rss(process: psutil.Process) -> int:
    """Resident memory of a process and its children (granian serves the API from a worker)."""
    return sum(p.memory_info().rss for p in [process, *process.children(recursive=True)])


def main(root: Path) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-gib", type=float, default=2.0)
    args = parser.parse_args()
    size = int(args.size_gib * 2**30)
    api_port, prefect_port = free_port(), free_port()
    env = dict(os.environ) | {"PDS_API_PORT": str(api_port), "PDS_PREFECT_PORT": str(prefect_port)}
    env.pop("PREFECT_API_URL", None)
    pds_bin = str(Path(sys.executable).with_name("pds"))
    with SshServer(root / "sshd") as sshd:
        up = subprocess.Popen(
            [pds_bin, "up", "--data-dir", str(root / "data")],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            url = f"http://127.0.0.1:{api_port}"
            wait_until(
                lambda: (root / "data/run/mover.pid").exists() and httpx.get(f"{url}/health").status_code == 200,
                240,
                "pds up",
            )
            prefect_api = f"http://127.0.0.1:{prefect_port}/api"
            wait_until(lambda: mover_running(prefect_api), 120, "the mover flow run")  # baseline after start-up
            client = PdsClient(url, user="admin", password="admin", timeout=3600)
            client.create_destination("bench")
            client.create_host(
                "bench-sftp",
                "sftp",
                address=f"{sshd.host}:{sshd.port}",
                login=sshd.username,
                directory=str(sshd.data_dir),
                options={"key_filename": str(sshd.client_key_path)},
            )
            client.attach_host("bench", "bench-sftp")
            source = root / "big.bin"
            md5 = big_file(source, size)
            procs = {n: psutil.Process(int((root / f"data/run/{n}.pid").read_text())) for n in ("api", "mover")}
            base = {n: tree_rss(p) for n, p in procs.items()}
            peak = dict(base)
            done = threading.Event()

            def sample() -> None:
                while not done.wait(0.1):
                    for n, p in procs.items():
                        peak[n] = max(peak[n], tree_rss(p))

            threading.Thread(target=sample, daemon=True).start()
            started = time.monotonic()
            result = client.push(source, "bench", "big.bin")
            pushed = time.monotonic() - started
            transfers = client.wait_for_data_file(result["data_file_id"], timeout=3600)
            total = time.monotonic() - started
            done.set()
            print(
                f"file: {size / 2**30:.2f} GiB; status {transfers[0]['status']}; "
                f"md5 {'matches' if md5_of(sshd.data_dir / 'big.bin') == md5 else 'DIFFERS'}"
            )
            print(
                f"push (API, into the store): {pushed:.1f} s, {size / pushed / 2**20:.0f} MiB/s; "
                f"push + SFTP dissemination: {total:.1f} s"
            )
            for n in procs:
                print(
                    f"{n:5s} RSS before {base[n] / 2**20:6.1f} MiB, peak {peak[n] / 2**20:6.1f} MiB, "
                    f"growth {(peak[n] - base[n]) / 2**20:6.1f} MiB (target < 100 MB)"
                )
        finally:
            up.send_signal(signal.SIGINT)
            up.wait(60)


if __name__ == "__main__":
    workdir = Path(tempfile.mkdtemp(prefix="pds-bench-"))
    try:
        main(workdir)
    finally:  # benchmark files run to gigabytes: never leave them behind (only this run's: others may be running)
        shutil.rmtree(workdir, ignore_errors=True)
