"""How long `pds up` takes to start and to stop, now and at an earlier commit, in alternating rounds.

    python tests/benchmarks/startup.py [--rounds 3] [--baseline REV] [--json PATH]

Each round starts each version on a fresh data directory (a first start: migrations, Prefect's
database), stops it with SIGINT, then starts and stops it again on the same directory (a restart). It
watches from outside, as a user would: when the API answers /health, when the mover's flow run is
Running in Prefect, when all five long-lived flow runs are, and how long the stop takes. With
`--baseline`, the `api/up.py` of that commit runs in place of today's (the rest of the code is
today's), so the difference is the supervisor's alone: the baseline is the anchor, and the versions
alternate (the baseline first in odd rounds). Medians are printed per version, and with a baseline the
median ratio current/baseline, its spread and the CPU seconds per start (getrusage(RUSAGE_CHILDREN)
around each start and stop: `pds up` and every process it started and reaped) per measure.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.benchmarks._results import Results, add_arguments, children_cpu  # noqa: E402
from tests.servers._common import free_port  # noqa: E402

LONG_LIVED = ["mover", "proxy-fetcher", "retrieval", "acquisition-scheduler", "subscriptions"]
TIMEOUT = 400.0


def command(version: str, workdir: Path) -> list[str]:
    if version == "current":
        return [str(Path(sys.executable).with_name("pds")), "up", "--data-dir"]
    source = subprocess.run(["git", "show", f"{version}:api/up.py"], cwd=ROOT, capture_output=True, check=True).stdout
    path = workdir / f"up_{version}.py"
    path.write_bytes(source)
    loader = (
        "import importlib.util, sys; "
        f"spec = importlib.util.spec_from_file_location('up_baseline', {str(path)!r}); "
        "m = importlib.util.module_from_spec(spec); sys.modules['up_baseline'] = m; spec.loader.exec_module(m); "
        "sys.exit(m.run_embedded(data_dir=sys.argv[1]))"
    )
    return [sys.executable, "-c", loader]


def running_flows(prefect_api: str) -> set[str]:
    body = {"flow_runs": {"state": {"type": {"any_": ["RUNNING"]}}}}
    runs = httpx.post(f"{prefect_api}/flow_runs/filter", json=body, timeout=5).json()
    flows = {f["id"]: f["name"] for f in httpx.post(f"{prefect_api}/flows/filter", json={}, timeout=5).json()}
    return {flows.get(r["flow_id"], "") for r in runs}


def one_start(base: list[str], data_dir: Path, log: Path) -> dict[str, float]:
    api_port, prefect_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PDS_", "PREFECT_"))} | {
        "PDS_API_PORT": str(api_port),
        "PDS_PREFECT_PORT": str(prefect_port),
        "PDS_PORTAL_FTP_PORT": str(free_port()),
        "PDS_PORTAL_SFTP_PORT": str(free_port()),
    }
    prefect_api = f"http://127.0.0.1:{prefect_port}/api"
    times: dict[str, float] = {}
    began = time.monotonic()
    with log.open("ab") as out:
        process = subprocess.Popen([*base, str(data_dir)], env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        while "all flows running" not in times and time.monotonic() - began < TIMEOUT:
            if process.poll() is not None:
                tail = log.read_text(errors="replace")[-3000:]
                raise SystemExit(f"pds up exited {process.returncode}:\n{tail}")
            now = time.monotonic() - began
            try:
                if "API answers" not in times and httpx.get(f"http://127.0.0.1:{api_port}/health").status_code == 200:
                    times["API answers"] = now
                running = running_flows(prefect_api)
                if "mover running" not in times and "mover" in running:
                    times["mover running"] = now
                if set(LONG_LIVED) <= running:
                    times["all flows running"] = now
            except (httpx.HTTPError, ValueError):
                pass
            time.sleep(0.2)
    finally:
        stopping = time.monotonic()
        process.send_signal(signal.SIGINT)
        process.wait(120)
        times["stop"] = time.monotonic() - stopping
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", help="a commit whose api/up.py to compare with (e.g. HEAD~3)")
    add_arguments(parser)
    args = parser.parse_args()
    versions = ["current"] + ([args.baseline] if args.baseline else [])
    results: dict[tuple[str, str], dict[str, list[float]]] = {}
    cpu: dict[tuple[str, str], list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="pds-bench-startup-") as tmp:
        workdir = Path(tmp)
        bases = {v: command(v, workdir) for v in versions}
        for round_number in range(args.rounds):
            for version in reversed(versions) if round_number % 2 == 0 else versions:
                data_dir = workdir / f"{version}-{round_number}"
                for kind in ("first start", "restart"):
                    used = children_cpu()
                    measured = one_start(bases[version], data_dir, workdir / f"{version}.log")
                    cpu.setdefault((version, kind), []).append(children_cpu() - used)
                    print(f"round {round_number + 1} {version:<10} {kind:<12} {measured}", flush=True)
                    for name, value in measured.items():
                        results.setdefault((version, kind), {}).setdefault(name, []).append(value)
    print(f"\nmedians over {args.rounds} round(s), seconds since the start (stop: since SIGINT)")
    for (version, kind), measures in results.items():
        line = ", ".join(f"{name} {statistics.median(values):.1f}" for name, values in measures.items())
        print(f"{version:<10} {kind:<12} {line}, CPU {statistics.median(cpu[version, kind]):.1f}")
    record = Results("startup", args)
    record.extra["medians_seconds"] = {
        f"{version} {kind}": {name: statistics.median(values) for name, values in measures.items()}
        for (version, kind), measures in results.items()
    }
    if args.baseline:
        for kind in ("first start", "restart"):
            for name in results["current", kind]:
                row = record.row(
                    f"{kind}: {name}",
                    anchor=f"api/up.py of {args.baseline}",
                    fair=True,
                    why="the same code but the supervisor",
                    unit="start",
                    units=1,
                    cpu="getrusage(RUSAGE_CHILDREN) around each start and stop (pds up and what it reaped)",
                )
                row.pds_seconds = results["current", kind][name]
                row.anchor_seconds = results[args.baseline, kind].get(name, [])
                row.pds_cpu_seconds, row.anchor_cpu_seconds = cpu["current", kind], cpu[args.baseline, kind]
                if not row.anchor_seconds:
                    del record.rows[row.case]
        record.print()
    record.save()


if __name__ == "__main__":
    main()
