"""Dissemination against rclone: many small files, and how fast a push starts moving.

    .venv/bin/python tests/benchmarks/dissemination.py [--files 2000] [--size-kib 64] [--protocols sftp s3]
                                                       [--pushes 200] [--cold] [--rounds 3]
                                                       [--unfair-rounds 1] [--json PATH]

1. Small files: starts a Prefect server, OpenSSH sshd and an S3 server (SeaweedFS by default, a Go
   server; `--s3-server moto` for moto, whose own CPU use dominates on two cores); queues `--files`
   files of `--size-kib` to a destination on each server and times the mover (in this process,
   against the Prefect server) from queued to all Done (the last transfer's `finished_at`). The mover
   is warm, as a long-lived mover is: running, and it has sent a file; the files are held in StandBy
   and released to it in one transaction. `--cold` starts the mover for the files instead (its
   first batch then also loads the transfer modules and Prefect's engine). Then it times
   `rclone copy` of the same files to the same server (its default 4 transfers and 8 checkers; the
   mover runs up to 4 dispatches at once, each with up to 8 (SFTP) or 4 (S3) small files in flight).
   `--rounds` alternating rounds (rclone first in odd ones), each to new directories; prints every
   round, the median pds/rclone ratio (target ≤ 1.5), its spread, and the CPU milliseconds per file
   of the mover (this process's CPU from the release to the last Done: the mover runs here, in a
   thread) and of rclone (`getrusage(RUSAGE_CHILDREN)` around it). The servers' CPU is counted on neither side.

   The anchor does the same work as pds: over SFTP pds checks the size of what it wrote, while
   rclone by default runs a remote `md5sum` over SSH after every file, so the fair anchor runs with
   `--sftp-disable-hashcheck`; rclone's default runs beside it in the first `--unfair-rounds`
   round(s) (default 1, 0 to skip it: it is about 40 times slower), labelled NOT FAIR. Over S3,
   `rclone copy` sends one PUT per file, as pds does.
2. Push latency: starts `pds up` (its own Prefect server, API and mover), keeps the mover busy with
   other work (4 MiB files pushed one after another to a second destination, which may run 2 at once),
   pushes `--pushes` small files one after another through the API, and prints p50/p99 of push start →
   Transferring, read from each transfer's history (target p50 ≤ 0.5 s, p99 ≤ 2 s).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from sqlmodel import select  # noqa: E402

from catalog.database import migrate, session_scope  # noqa: E402
from catalog.models import DataTransfer, HostCreate  # noqa: E402
from catalog.operations import release  # noqa: E402
from tests.benchmarks._results import Results, add_arguments, anchor_first, children_cpu  # noqa: E402
from tests.factories import destination, push  # noqa: E402
from tests.servers.prefect import PrefectServer  # noqa: E402
from tests.servers.s3 import S3Server  # noqa: E402
from tests.servers.seaweedfs import SeaweedS3Server  # noqa: E402
from tests.servers.sshd import SshServer  # noqa: E402

RCLONE = str(Path(sys.executable).with_name("rclone"))


#: Directories this run made, removed when it ends.
WORKDIRS: list[Path] = []


def small_files(root: Path, count: int, size: int) -> dict[str, bytes]:
    root.mkdir(parents=True, exist_ok=True)
    files = {f"f{i:05}.bin": os.urandom(size) for i in range(count)}
    for name, data in files.items():
        (root / name).write_bytes(data)
    return files


def pds_small_files(
    root: Path, protocol: str, host: HostCreate, files: dict[str, bytes], *, cold: bool = False, tag: str = ""
) -> tuple[float, float, float]:
    """Seconds from all transfers queued to all Done (the last transfer's `finished_at`), and to the
    end of the mover's flow run, through the mover flow in this process; and the CPU seconds this
    process used meanwhile (the mover's, which runs in it). `tag` names this round's data directory.

    By default the mover is warm, as a long-lived mover is when products arrive: it is already
    running and has sent a file, so the files are queued (released from StandBy in one transaction)
    to a mover that only has to claim them. With `cold`, the mover starts for the files instead, and
    its first batch also pays for loading the transfer modules and Prefect's flow engine (about a
    second on this machine)."""
    os.environ["PDS_DATA_DIR"] = str(root / f"data-{protocol}{tag}")
    os.environ["PDS_EVENT_LOG"] = str(root / f"events-{protocol}{tag}.log")
    from tasks import runtime as runtime_module

    runtime_module.runtime.cache_clear()
    rt = runtime_module.runtime()
    migrate(rt.engine)
    name = f"bench-{protocol}"
    # A high-volume destination: many files may be in flight; the mover still runs 4 dispatches at once.
    destination(rt.engine, name, host=host, max_parallel_transfers=1000)
    for file_name, data in files.items():
        push(rt.engine, rt.store, name, file_name, data=data, standby=not cold)
    from flows import mover as mover_module

    if cold:
        started_at, started, cpu = datetime.now(UTC), time.perf_counter(), time.process_time()
        mover_module.mover(name=name, stop_when_idle=True)
        elapsed = time.perf_counter() - started
    else:
        (warm_up,) = push(rt.engine, rt.store, name, "warm-up.bin", data=b"w" * 1024)[1]
        runner = threading.Thread(target=mover_module.mover, kwargs={"name": name, "max_runtime_seconds": 600})
        runner.start()
        while _status(rt, warm_up) != "Done":
            time.sleep(0.05)
        with session_scope(rt.engine) as session:
            held = session.exec(select(DataTransfer.id).where(DataTransfer.status == "StandBy")).all()
            for transfer_id in held:
                release(session, transfer_id, by="bench")
        started_at, started, cpu = datetime.now(UTC), time.perf_counter(), time.process_time()
        while _done(rt) < len(files) + 1:
            time.sleep(0.05)
        mover_module.request_stop()
        runner.join()
        mover_module._stop.clear()
        elapsed = time.perf_counter() - started
    cpu = time.process_time() - cpu
    with session_scope(rt.engine) as session:
        transfers = session.exec(select(DataTransfer).where(DataTransfer.target != "warm-up.bin")).all()
        statuses = [t.status for t in transfers]
        last_done = max(t.finished_at for t in transfers if t.finished_at)
    done = statuses.count("Done")
    if done != len(files):
        raise SystemExit(f"{protocol}: only {done} of {len(files)} transfers Done: {set(statuses)}")
    shutil.rmtree(root / f"data-{protocol}{tag}", ignore_errors=True)  # its Data Store: disk stays small
    return (last_done - started_at).total_seconds(), elapsed, cpu


def _status(rt, transfer_id: int) -> str:  # noqa: ANN001
    with session_scope(rt.engine) as session:
        transfer = session.get(DataTransfer, transfer_id)
        return transfer.status if transfer else ""


def _done(rt) -> int:  # noqa: ANN001
    with session_scope(rt.engine) as session:
        return len(session.exec(select(DataTransfer.id).where(DataTransfer.status == "Done")).all())


def rclone_copy(source: Path, remote: str, flags: list[str]) -> tuple[float, float]:
    """Wall seconds and CPU seconds of `rclone copy` (its process's, from getrusage)."""
    cpu = children_cpu()
    started = time.perf_counter()
    subprocess.run([RCLONE, "--config", "/dev/null", "-q", "copy", *flags, str(source), remote], check=True)
    return time.perf_counter() - started, children_cpu() - cpu


#: The other work the mover is busy with while the pushes are timed: files of this size pushed one
#: after another to a second destination, sent by the same mover.
BUSY_FILE_BYTES = 4 * 1024 * 1024


def push_latency(root: Path, pushes: int) -> tuple[list[float], int]:
    """Seconds from the start of each push (its transfer's creation) to the mover's claim, while the
    mover also sends a stream of larger files to another destination; and how many of those it sent."""
    import httpx

    from api.client import PdsClient
    from tests.servers._common import wait_until
    from tests.test_embedded import Stack, mover_running

    stack = Stack(root / "stack")
    log = (root / "pds-up.log").open("wb")
    stack.process = subprocess.Popen(
        [str(Path(sys.executable).with_name("pds")), "up", "--data-dir", str(stack.data_dir)],
        env=stack.env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_until(
            lambda: httpx.get(f"{stack.api_url}/health").status_code == 200 and mover_running(stack.prefect_api),
            240,
            "pds up",
            log=root / "pds-up.log",
        )
        client = stack.client
        for name in ("latency", "busy"):
            client.create_destination(name, max_parallel_transfers=100 if name == "latency" else 2)
            client.create_host(f"{name}-host", "file", address=str(root / f"site-{name}"))
            client.attach_host(name, f"{name}-host")
        sample, large = root / "sample.bin", root / "busy.bin"
        sample.write_bytes(os.urandom(1024))
        large.write_bytes(os.urandom(BUSY_FILE_BYTES))
        timing = threading.Event()
        busy: list[int] = []

        def keep_busy() -> None:
            other = PdsClient(stack.api_url, user="admin", password="admin")  # a client per thread
            while not timing.is_set():
                busy.append(other.push(large, "busy", f"b{len(busy):05}.bin")["transfers"][0]["id"])

        pusher = threading.Thread(target=keep_busy, daemon=True)
        pusher.start()
        wait_until(lambda: len(busy) >= 4, 60, "the mover to be busy")
        ids = []
        for i in range(pushes):
            ids.append(client.push(sample, "latency", f"p{i:04}.bin")["transfers"][0]["id"])
            time.sleep(0.05)  # pushes arrive one by one, as products do
        timing.set()
        pusher.join(60)
        latencies = []
        for tid in ids:
            wait_until(lambda: client.transfer(tid)["status"] == "Done", 120, f"transfer {tid}")  # noqa: B023
            history = client.transfer(tid)["history"]
            created = datetime.fromisoformat(history[0]["at"])
            claimed = datetime.fromisoformat(next(h["at"] for h in history if h["to_status"] == "Transferring"))
            latencies.append((claimed - created).total_seconds())
        wait_until(lambda: client.transfer(busy[-1])["status"] == "Done", 300, "the other work")
        return latencies, len(busy)
    finally:
        stack.process.send_signal(2)
        stack.process.wait(60)


#: rclone's flags that make it do pds's work, by protocol, and why; and what its defaults add.
FAIR_FLAGS = {
    "sftp": (["--sftp-disable-hashcheck"], "pds checks the size of what it wrote; rclone's hash check is off"),
    "s3": ([], "one PUT per file on both sides"),
}
UNFAIR = {"sftp": "rclone's default: a remote md5sum over SSH after every file, which pds does not run"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=2000)
    parser.add_argument("--size-kib", type=int, default=64)
    parser.add_argument("--protocols", nargs="+", default=["sftp", "s3"])
    parser.add_argument("--pushes", type=int, default=200)
    parser.add_argument("--s3-server", choices=["seaweedfs", "moto"], default="seaweedfs")
    parser.add_argument(
        "--cold", action="store_true", help="start the mover for the files (default: a running, warm mover)"
    )
    parser.add_argument(
        "--unfair-rounds",
        type=int,
        default=1,
        help="rounds that also run rclone's default where it does more work than pds (SFTP; default 1)",
    )
    add_arguments(parser)
    args = parser.parse_args()
    results = Results("dissemination", args)
    root = Path(tempfile.mkdtemp(prefix="pds-bench-dissemination-"))
    WORKDIRS.append(root)
    files = small_files(root / "src", args.files, args.size_kib * 1024)
    s3_server = SeaweedS3Server(root / "seaweedfs") if args.s3_server == "seaweedfs" else S3Server()
    mover_state = "cold: started for the files" if args.cold else "warm: running, released to it"
    cpu_note = "pds: this process's CPU (the mover runs in it); rclone: getrusage of its process"
    with PrefectServer(root / "prefect") as prefect, SshServer(root / "sshd") as sshd, s3_server as s3:
        os.environ["PREFECT_API_URL"] = prefect.api_url
        os.environ.pop("PREFECT_HOME", None)
        for protocol in args.protocols:
            run = uuid.uuid4().hex[:8]
            if protocol == "s3":
                s3.create_bucket(f"bench-{run}")

            def target(n: int, protocol: str = protocol, run: str = run) -> tuple[HostCreate, str]:
                """Round n's host for pds and remote for rclone: new directories every round."""
                if protocol == "sftp":
                    host = HostCreate(
                        name=f"sftp-{run}-{n}",
                        protocol="sftp",
                        address=f"127.0.0.1:{sshd.port}",
                        login=sshd.username,
                        directory=str(sshd.data_dir / f"pds-{run}-{n}"),
                        options={"key_filename": str(sshd.client_key_path)},
                    )
                    remote = (
                        f":sftp,host=127.0.0.1,port={sshd.port},user={sshd.username},"
                        f"key_file={sshd.client_key_path}:{sshd.data_dir}/rclone-{run}-{n}"
                    )
                    return host, remote
                bucket = f"bench-{run}"
                host = HostCreate(
                    name=f"s3-{run}-{n}",
                    protocol="s3",
                    address=s3.endpoint_url,
                    login=s3.access_key,
                    password=s3.secret_key,
                    directory=f"{bucket}/pds-{n}",
                    options={"region": s3.region},
                )
                remote = (
                    f":s3,provider=Other,endpoint='{s3.endpoint_url}',access_key_id={s3.access_key},"
                    f"secret_access_key={s3.secret_key},region={s3.region},no_check_bucket=true:{bucket}/rclone-{n}"
                )
                return host, remote

            flags, why = FAIR_FLAGS[protocol]
            case = f"{protocol} small files"
            common = {"unit": "file", "units": args.files, "cpu": cpu_note}
            fair = results.row(case, anchor=" ".join(["rclone copy", *flags]), fair=True, why=why, **common)
            to_done = results.row(
                f"{case} (until the mover saw the last Done)",
                anchor=fair.anchor,
                fair=True,
                why=why,
                **common,
            )
            for n in range(1, args.rounds + 1):
                host, remote = target(n)

                for side in ("rclone", "pds") if anchor_first(n) else ("pds", "rclone"):
                    if side == "pds":
                        seconds, run_seconds, cpu = pds_small_files(
                            root, protocol, host, files, cold=args.cold, tag=f"-{n}"
                        )
                        fair.pds_seconds.append(seconds)
                        to_done.pds_seconds.append(run_seconds)
                        for row in (fair, to_done):
                            row.pds_cpu_seconds.append(cpu)
                        label = "pds"
                    else:
                        seconds, cpu = rclone_copy(root / "src", remote, flags)
                        for row in (fair, to_done):
                            row.anchor_seconds.append(seconds)
                            row.anchor_cpu_seconds.append(cpu)
                        label = fair.anchor
                    print(f"round {n} {protocol} {label}: {seconds:.2f} s, CPU {1000 * cpu / args.files:.2f} ms/file")
                if protocol in UNFAIR and n <= args.unfair_rounds:
                    default = results.row(
                        f"{case}, rclone's defaults", anchor="rclone copy", fair=False, why=UNFAIR[protocol], **common
                    )
                    default.pds_seconds, default.pds_cpu_seconds = fair.pds_seconds, fair.pds_cpu_seconds
                    seconds, cpu = rclone_copy(root / "src", remote.replace("/rclone-", "/rclone-default-"), [])
                    default.anchor_seconds.append(seconds)
                    default.anchor_cpu_seconds.append(cpu)
                    print(f"round {n} {protocol} rclone copy (defaults, NOT FAIR): {seconds:.2f} s", flush=True)
                results.sample_load()
            print(f"load average after {protocol}: {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    print(f"{args.files} files of {args.size_kib} KiB, queued → all Done (S3: {args.s3_server}; mover {mover_state})")
    print("target pds/rclone ≤ 1.5 against the fair anchor; 'until the mover saw the last Done' (cold: until its")
    print("flow run ended) adds the mover's own polling to pds's time")
    results.print()
    if args.pushes:
        latencies, busy = push_latency(root, args.pushes)
        latencies.sort()
        p50 = statistics.median(latencies)
        p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
        print(
            f"push → Transferring over {len(latencies)} pushes: p50 {p50:.2f} s, p99 {p99:.2f} s, "
            f"max {latencies[-1]:.2f} s, while the mover sent {busy} files of {BUSY_FILE_BYTES >> 20} MiB to another "
            "destination (targets p50 ≤ 0.5 s, p99 ≤ 2 s)"
        )
        results.extra["push_to_transferring_seconds"] = {
            "pushes": len(latencies),
            "p50": p50,
            "p99": p99,
            "max": latencies[-1],
            "busy_files": busy,
            "busy_file_bytes": BUSY_FILE_BYTES,
        }
    results.save()


if __name__ == "__main__":
    try:
        main()
    finally:  # benchmark files run to gigabytes: never leave them behind (only this run's: others may be running)
        for workdir in WORKDIRS:
            shutil.rmtree(workdir, ignore_errors=True)
