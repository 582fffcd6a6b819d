"""How long a `pds` command takes, against the bare interpreter and curl doing the same requests.

    python tests/benchmarks/commands.py [--rounds 20] [--url http://127.0.0.1:8440] [--json PATH]

Without `--url` it starts an API of its own on a temporary data directory (no Prefect server is needed
for these commands), adds a destination and pushes one file so `pds status` has a data file to show.
Each round runs every command once, one after the other (in reverse order in even rounds), so a busy
machine slows all of them alike; it prints the median wall time of each, the median ratio and its
spread over rounds, and each command's CPU milliseconds (`getrusage(RUSAGE_CHILDREN)` around it: the
command's process; the API's CPU for the requests is not counted). Targets: `pds --help` and a usage
error within 3× the bare interpreter (`python -c pass`, the same interpreter: the anchor, which starts
the interpreter and does nothing else), `pds status N` and `pds destination list` within 5×. `curl`
doing the same HTTP requests is a second anchor for those two, which starts no interpreter.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from api.client import PdsClient  # noqa: E402
from tests.benchmarks._results import Results, add_arguments, children_cpu  # noqa: E402
from tests.servers._common import free_port, spawn, terminate, wait_until  # noqa: E402

PDS = str(Path(sys.executable).with_name("pds"))
TARGETS = {"pds --help": 3.0, "pds (usage error)": 3.0, "pds status N": 5.0, "pds destination list": 5.0}


def start_api(root: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PDS_", "PREFECT_"))} | {
        "PDS_DATA_DIR": str(root / "data"),
        "PDS_API_PORT": str(port),
    }
    api = spawn([sys.executable, "-m", "api"], root / "api.log", env)
    client = PdsClient(url, user="admin", password="admin")

    def healthy() -> bool:
        return client._request("GET", "/health")["status"] == "ok"

    wait_until(healthy, 120, "the API", log=root / "api.log", process=api)
    return api, url


def sample_data(url: str, root: Path) -> int:
    client = PdsClient(url, user="admin", password="admin")
    if "bench-site" not in {d["destination"]["name"] for d in client.destinations()}:
        client.create_destination("bench-site")
    product = root / "bench.bin"
    product.write_bytes(b"x" * 1024)
    return int(client.push(product, "bench-site", "bench.bin", if_exists="force")["data_file_id"])


def commands(url: str, data_file_id: int) -> dict[str, list[str]]:
    curl = shutil.which("curl")
    auth = ["-u", "admin:admin"]
    status_urls = [f"{url}/datafiles/{data_file_id}", f"{url}/transfers?data_file_id={data_file_id}"]
    table = {
        "python -c pass": [sys.executable, "-c", "pass"],
        "pds --help": [PDS, "--help"],
        "pds (usage error)": [PDS, "status", "not-a-number"],
        "pds status N": [PDS, "--url", url, "status", str(data_file_id)],
        "pds destination list": [PDS, "--url", url, "destination", "list"],
    }
    if curl:
        table["curl (status's requests)"] = [curl, "-sf", *auth, *status_urls]
        table["curl (destination list's)"] = [curl, "-sf", *auth, f"{url}/destinations"]
    return table


def run_rounds(
    table: dict[str, list[str]], rounds: int, cpu: dict[str, list[float]] | None = None
) -> dict[str, list[float]]:
    """Wall seconds of each command, one per round; with `cpu`, its CPU seconds are appended there."""
    env = dict(os.environ) | {"PDS_USER": "admin", "PDS_PASSWORD": "admin"}
    times: dict[str, list[float]] = {name: [] for name in table}
    for n in range(rounds):
        for name, command in table.items() if n % 2 == 0 else reversed(table.items()):
            used = children_cpu()
            began = time.perf_counter()
            done = subprocess.run(command, env=env, capture_output=True, check=False)
            times[name].append(time.perf_counter() - began)
            if cpu is not None:
                cpu.setdefault(name, []).append(children_cpu() - used)
            expected = 2 if name == "pds (usage error)" else 0
            if done.returncode != expected:
                raise SystemExit(f"{name} exited {done.returncode}: {done.stderr.decode()[-500:]}")
    return times


def report(times: dict[str, list[float]], rounds: int) -> None:
    medians = {name: statistics.median(values) for name, values in times.items()}
    anchor = medians["python -c pass"]
    print(f"median of {rounds} alternating rounds; python {sys.version.split()[0]}, {os.cpu_count()} CPU(s)")
    print(f"{'command':<28}{'median ms':>10}{'× python':>10}{'target':>8}")
    for name, median in medians.items():
        target = TARGETS.get(name)
        verdict = "" if target is None else (f"≤{target:.0f}×" + (" ok" if median / anchor <= target else " MISSED"))
        print(f"{name:<28}{median * 1000:>10.1f}{median / anchor:>10.2f}  {verdict}")
    for pds_name, curl_name in (
        ("pds status N", "curl (status's requests)"),
        ("pds destination list", "curl (destination list's)"),
    ):
        if curl_name in medians:
            print(f"{pds_name} / {curl_name}: {medians[pds_name] / medians[curl_name]:.2f}×")


def record(results: Results, times: dict[str, list[float]], cpu: dict[str, list[float]]) -> None:
    """The pds commands against the bare interpreter, and the two that send requests against curl."""
    pairs = [(name, "python -c pass") for name in TARGETS]
    pairs += [("pds status N", "curl (status's requests)"), ("pds destination list", "curl (destination list's)")]
    for ours, anchor in pairs:
        if anchor not in times:
            continue
        why = (
            "the same interpreter, started and doing nothing"
            if anchor.startswith("python")
            else "the same HTTP requests, without starting an interpreter"
        )
        row = results.row(
            f"{ours} against {anchor}",
            anchor=anchor,
            fair=True,
            why=why,
            unit="command",
            units=1,
            cpu="getrusage(RUSAGE_CHILDREN) around each command",
        )
        row.pds_seconds, row.anchor_seconds = times[ours], times[anchor]
        row.pds_cpu_seconds, row.anchor_cpu_seconds = cpu[ours], cpu[anchor]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="a running pds API (PDS_USER/PDS_PASSWORD admin/admin); default: start one")
    add_arguments(parser, rounds=20)
    args = parser.parse_args()
    results = Results("commands", args)
    with tempfile.TemporaryDirectory(prefix="pds-bench-commands-") as tmp:
        root = Path(tmp)
        api = None
        url = args.url
        if url is None:
            api, url = start_api(root)
        try:
            data_file_id = sample_data(url, root)
            cpu: dict[str, list[float]] = {}
            times = run_rounds(commands(url, data_file_id), args.rounds, cpu)
            report(times, args.rounds)
            record(results, times, cpu)
            results.print()
            results.save()
        finally:
            terminate(api)


if __name__ == "__main__":
    main()
