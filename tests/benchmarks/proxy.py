"""Benchmark: the proxy serving cached data beside nginx (sendfile) serving the same files, with wrk.

Two measurements, 32 connections each: whole downloads of a cached 1 GiB file (MiB/s), and random
16 KiB ranges of a 100 MiB file (requests/s). The proxy runs its full path (`python -m api`, uvicorn):
HTTP Basic authorisation of a private collection, QoS counting against a quota, cache lookup. Prints
each figure and the proxy/nginx ratios (targets: whole ≥ 1.0×, ranges ≥ 0.15×).

`--rounds` alternating rounds (default 3; nginx first in odd ones) print the median ratio, its spread,
and the CPU each server used per GiB served (whole file) and per request (ranges): psutil's CPU times
of the server's processes (nginx's master and worker; the API's process and its children), deltas
around each wrk run. wrk's own CPU is counted on neither side.

The anchor is nginx with `sendfile on`, one worker, access log off: it serves the same bytes from the
same disk, but does no authorisation, quota counting or cache lookup, which the proxy does; that
difference is what the targets allow for.

    .venv/bin/python tests/benchmarks/proxy.py [--seconds 15] [--big-mib 1024] [--mid-mib 100] [--rounds 3]
                                               [--json PATH]

Needs wrk and nginx (`apt-get install -y wrk nginx`) and the test extras.
"""

from __future__ import annotations

import argparse
import base64
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from catalog.database import make_engine, migrate, session_scope  # noqa: E402
from catalog.models import utcnow  # noqa: E402
from catalog.proxy import inject, register_asset, set_policy, set_quota  # noqa: E402
from catalog.users import ensure_user  # noqa: E402
from tests.benchmarks._results import Results, add_arguments, anchor_first, tree_cpu  # noqa: E402
from tests.servers._common import free_port  # noqa: E402

NGINX = """\
worker_processes 1;
pid {root}/nginx.pid;
error_log {root}/error.log;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    server {{
        listen 127.0.0.1:{port};
        root {www};
    }}
}}
"""

RANGES_LUA = """\
math.randomseed(os.time())
request = function()
  local first = math.random(0, {size} - 16384)
  wrk.headers["Range"] = string.format("bytes=%d-%d", first, first + 16383)
  return wrk.format(nil)
end
"""

UNITS = {"B": 1, "KB": 1024, "MB": 1024**2, "GB": 1024**3}


def make_file(path: Path, mib: int) -> None:
    block = os.urandom(1024 * 1024)
    with path.open("wb") as out:
        for _ in range(mib):
            out.write(block)


def wrk(url: str, seconds: int, headers: dict[str, str], script: Path | None = None) -> tuple[float, float]:
    """(requests/s, MiB/s) of `wrk -t2 -c32`."""
    command = ["wrk", "-t2", "-c32", f"-d{seconds}s", "--timeout", "60s"]
    for name, value in headers.items():
        command += ["-H", f"{name}: {value}"]
    if script:
        command += ["-s", str(script)]
    output = subprocess.run([*command, url], capture_output=True, text=True, check=True).stdout  # noqa: S603
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    if errors:
        answer = httpx.get(url, headers=headers | {"Range": "bytes=0-15"})
        reason = f"{answer.status_code} {answer.text[:200]}"
        raise SystemExit(f"wrk got {errors.group(1)} error answers from {url} (a check now: {reason})")
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))  # type: ignore[union-attr]
    value, unit = re.search(r"Transfer/sec:\s+([\d.]+)(\w+)", output).groups()  # type: ignore[union-attr]
    return rps, float(value) * UNITS[unit] / 1024**2


def wait_http(url: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=2).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise SystemExit(f"{url} did not answer")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=15)
    parser.add_argument("--big-mib", type=int, default=1024)
    parser.add_argument("--mid-mib", type=int, default=100)
    add_arguments(parser)
    args = parser.parse_args()
    results = Results("proxy", args)
    for tool in ("wrk", "nginx"):
        if not shutil.which(tool) and not Path(f"/usr/sbin/{tool}").exists():
            raise SystemExit(f"{tool} is missing: apt-get install -y {tool}")
    work = Path(tempfile.mkdtemp(prefix="pds-proxy-bench-"))
    work.chmod(0o755)  # nginx's workers run as an unprivileged user
    processes: list[subprocess.Popen[bytes]] = []
    try:
        www = work / "www"
        www.mkdir()
        make_file(www / "big.bin", args.big_mib)
        make_file(www / "mid.bin", args.mid_mib)
        data_dir = work / "data"
        engine = make_engine(f"sqlite:///{data_dir / 'pds.db'}")
        migrate(engine)
        cache_dir = data_dir / "proxy-cache"
        with session_scope(engine) as session:
            ensure_user(session, "admin", "admin", is_admin=True)
            for name in ("big", "mid"):
                register_asset(session, "bench", "item", name, f"http://upstream.invalid/{name}.bin")
            set_policy(session, "bench", public=False, readers=["admin"])
            set_quota(session, "user:admin", period_seconds=3600, max_requests=10**12, max_bytes=10**18)
        with session_scope(engine) as session:
            for name in ("big", "mid"):
                inject(session, cache_dir, "bench", "item", name, www / f"{name}.bin", now=utcnow())
        engine.dispose()

        nginx_port, api_port = free_port(), free_port()
        (work / "nginx.conf").write_text(NGINX.format(root=work, port=nginx_port, www=www))
        nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        processes.append(
            subprocess.Popen([nginx, "-c", str(work / "nginx.conf"), "-p", str(work), "-g", "daemon off;"])  # noqa: S603
        )
        env = os.environ | {"PDS_DATA_DIR": str(data_dir), "PDS_API_PORT": str(api_port), "PDS_EVENT_LOG": "off"}
        api_log = (work / "api.log").open("wb")
        processes.append(
            subprocess.Popen([sys.executable, "-m", "api"], cwd=ROOT, env=env, stdout=api_log, stderr=api_log)  # noqa: S603
        )
        nginx_url, api_url = f"http://127.0.0.1:{nginx_port}", f"http://127.0.0.1:{api_port}"
        wait_http(f"{nginx_url}/mid.bin")
        wait_http(f"{api_url}/health")
        auth = {"Authorization": "Basic " + base64.b64encode(b"admin:admin").decode()}
        check = httpx.get(f"{api_url}/proxy/bench/item/mid", headers=auth | {"Range": "bytes=0-15"})
        assert check.status_code == 206, check.text
        lua = work / "ranges.lua"
        lua.write_text(RANGES_LUA.format(size=args.mid_mib * 1024 * 1024))

        pids = {"nginx": processes[0].pid, "proxy": processes[1].pid}
        anchor = "nginx (sendfile on, 1 worker, access log off)"
        why = "the same bytes from the same disk; nginx does no authorisation, quota counting or cache lookup"
        cpu = "psutil CPU times of the server's processes around each wrk run"
        whole = results.row(
            f"whole {args.big_mib} MiB file, wrk -c32",
            anchor=anchor,
            fair=True,
            why=why,
            unit="GiB",
            units=1.0,
            cpu=cpu,
            ratio="anchor/pds",
            timing="wall seconds per GiB served (1 / throughput)",
        )
        ranges = results.row(
            "random 16 KiB ranges, wrk -c32",
            anchor=anchor,
            fair=True,
            why=why,
            unit="request",
            units=1.0,
            cpu=cpu,
            ratio="anchor/pds",
            timing="wall seconds per request (1 / requests per second)",
        )
        for n in range(1, args.rounds + 1):
            for label in ("nginx", "proxy") if anchor_first(n) else ("proxy", "nginx"):
                url, headers = (nginx_url, {}) if label == "nginx" else (api_url, auth)
                big = f"{url}/big.bin" if label == "nginx" else f"{url}/proxy/bench/item/big"
                mid = f"{url}/mid.bin" if label == "nginx" else f"{url}/proxy/bench/item/mid"
                before = tree_cpu(pids[label])
                _, whole_mibs = wrk(big, args.seconds, headers)
                middle = tree_cpu(pids[label])
                ranges_rps, _ = wrk(mid, args.seconds, headers, lua)
                after = tree_cpu(pids[label])
                gibs, requests = whole_mibs * args.seconds / 1024, ranges_rps * args.seconds
                side = "pds" if label == "proxy" else "anchor"
                getattr(whole, f"{side}_seconds").append(1024 / whole_mibs)
                getattr(whole, f"{side}_cpu_seconds").append((middle - before) / gibs)
                getattr(ranges, f"{side}_seconds").append(1 / ranges_rps)
                getattr(ranges, f"{side}_cpu_seconds").append((after - middle) / requests)
                print(
                    f"round {n} {label:6} whole {args.big_mib} MiB file: {whole_mibs:8.1f} MiB/s"
                    f" ({(middle - before) / gibs:.2f} CPU s/GiB)   16 KiB ranges: {ranges_rps:8.0f} req/s"
                    f" ({1000 * (after - middle) / requests:.3f} CPU ms/request)",
                    flush=True,
                )
            results.sample_load()
        print("ratios: proxy's throughput / nginx's (targets: whole file >= 1.0x, ranges >= 0.15x)")
        results.print()
        results.save()
    finally:
        for process in processes:
            process.terminate()
            process.wait(30)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
