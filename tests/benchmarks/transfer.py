"""Throughput of pds's transfer layer against rclone, same files, same servers, same run.

    .venv/bin/python tests/benchmarks/transfer.py --size-mib 1024 [--protocols sftp ftp s3] [--rounds 3]
                                                  [--unfair-rounds 1] [--json PATH]

Starts OpenSSH sshd, pyftpdlib and moto S3 on 127.0.0.1, then for each protocol copies one file
disk → server and server → disk with rclone (the anchor) and with pds, and prints MiB/s and the
pds/rclone ratio (target ≥ 0.9) with the peak RSS growth of this process during the pds copies, the
CPU seconds per GiB each client used (rclone's from its process, pds's from this one: the servers'
are not counted) and the 1-minute load average. pds's rows:

- `up`: `send_data_file` from the Data Store to the host (what dissemination does);
- `down`: the host block's streamed read (`open_stream`, as retrieval uses it) written to a local
  file — the same work as rclone's `copyto` server → disk, which computes no checksum over FTP or
  SFTP: this is the row the target applies to;
- `down+store`: the same read into the Data Store (`put_stream`), which also computes MD5 and
  Adler-32 of every byte, as a retrieval does. Its ratio is against the same rclone copy, so it
  shows what integrity costs; rclone does nothing comparable.

On a shared machine one copy's ratio moves with the load of the moment: `--rounds` (default 3) repeats
each set of copies (who goes first alternating) and prints every round, the median ratio per row, its
spread and the CPU seconds per GiB of both sides.

The anchor does the same work as pds. Over SFTP pds checks sizes, while rclone by default runs a
remote `md5sum` of the file after the copy (both directions): the fair anchor runs with
`--sftp-disable-hashcheck`. Over S3 pds sends a large file in parts without hashing it (it knows its
MD5 from the Data Store, and a multipart ETag is no MD5), while rclone by default reads the whole
file to compute an MD5 before a multipart upload and checks it after a download: the fair anchor runs
with `--s3-disable-checksum`. Over FTP rclone has no hash to check. rclone's defaults run beside the
fair anchor in the first `--unfair-rounds` round(s) (default 1, 0 to skip), labelled NOT FAIR.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from blocks.registry import block_for  # noqa: E402
from catalog.models import Host  # noqa: E402
from catalog.store import DataStore  # noqa: E402
from tasks.delivery import Delivery  # noqa: E402
from tasks.transfer import send_data_file  # noqa: E402
from tests.benchmarks._results import Results, add_arguments  # noqa: E402
from tests.servers.ftp import FtpServer  # noqa: E402
from tests.servers.s3 import S3Server  # noqa: E402
from tests.servers.sshd import SshServer  # noqa: E402

RCLONE = str(Path(sys.executable).with_name("rclone"))


class PeakRss:
    def __init__(self) -> None:
        self.process = psutil.Process()
        self.base = self.peak = self.process.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(0.05):
            self.peak = max(self.peak, self.process.memory_info().rss)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def growth_mib(self) -> float:
        return (self.peak - self.base) / 2**20


def timed(fn, cpu: list[float] | None = None) -> float:  # noqa: ANN001
    """Wall seconds of `fn()`; with `cpu`, append the CPU seconds it used here and in child
    processes (rclone)."""
    before = _cpu_seconds()
    started = time.perf_counter()
    fn()
    elapsed = time.perf_counter() - started
    if cpu is not None:
        cpu.append(_cpu_seconds() - before)
    return elapsed


def _cpu_seconds() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def rclone(*args: str) -> None:
    subprocess.run([RCLONE, "--config", "/dev/null", "-q", *args], check=True)


#: rclone's flags that make it do pds's work, by protocol, and why; and what its defaults add.
FAIR_FLAGS = {
    "sftp": (["--sftp-disable-hashcheck"], "pds checks the size; rclone's remote md5sum is off"),
    "ftp": ([], "rclone has no hash to check over FTP"),
    "s3": (["--s3-disable-checksum"], "pds does not hash a multipart upload; rclone's MD5 of the file is off"),
}
UNFAIR = {
    "sftp": "rclone's default: a remote md5sum over SSH after the copy, which pds does not run",
    "s3": "rclone's default: an MD5 of the whole file before a multipart upload, checked after a download",
}


def main(root: Path) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--protocols", nargs="+", default=["sftp", "ftp", "s3"])
    parser.add_argument(
        "--unfair-rounds",
        type=int,
        default=1,
        help="rounds that also run rclone's defaults where they do more work than pds (SFTP, S3; default 1)",
    )
    add_arguments(parser)
    args = parser.parse_args()
    results = Results("transfer", args)
    store = DataStore.from_url(str(root / "store"))
    # The file is written once, into the Data Store, and rclone uploads that object's file: the same
    # bytes from the same disk, without a second copy (a 10 GiB run needs four times its size on disk).
    stored = store.put_stream(os.urandom(1 << 20) for _ in range(args.size_mib))
    source = Path(store.root) / stored.key
    size = source.stat().st_size
    obscured = subprocess.run(
        [RCLONE, "obscure", FtpServer.password], capture_output=True, text=True, check=True
    ).stdout.strip()
    rows = []
    with SshServer(root / "sshd") as sshd, FtpServer(root / "ftp") as ftp, S3Server() as s3:
        bucket = f"bench-{uuid.uuid4().hex[:8]}"
        s3.create_bucket(bucket)
        setups = {
            "sftp": (
                Host(
                    name="sftp",
                    protocol="sftp",
                    address=f"127.0.0.1:{sshd.port}",
                    login=sshd.username,
                    directory=str(sshd.data_dir),
                    options={"key_filename": str(sshd.client_key_path)},
                ),
                f":sftp,host=127.0.0.1,port={sshd.port},user={sshd.username},key_file={sshd.client_key_path}:"
                f"{sshd.data_dir}",
            ),
            "ftp": (
                Host(
                    name="ftp",
                    protocol="ftp",
                    address=f"127.0.0.1:{ftp.port}",
                    login=ftp.username,
                    password=ftp.password,
                    directory="/",
                ),
                f":ftp,host=127.0.0.1,port={ftp.port},user={ftp.username},pass={obscured}:",
            ),
            "s3": (
                Host(
                    name="s3",
                    protocol="s3",
                    address=s3.endpoint_url,
                    login=s3.access_key,
                    password=s3.secret_key,
                    directory=bucket,
                    options={"region": s3.region},
                ),
                f":s3,provider=Other,endpoint='{s3.endpoint_url}',access_key_id={s3.access_key},"
                f"secret_access_key={s3.secret_key},region={s3.region},no_check_bucket=true:{bucket}",
            ),
        }
        for protocol in args.protocols:
            host, remote = setups[protocol]
            flags, why = FAIR_FLAGS[protocol]
            block = block_for(host)
            fs = block.filesystem()
            for n in range(1, args.rounds + 1):
                # Who goes first alternates, so neither side always meets the other's dirty pages.
                pds_first = n % 2 == 0
                delivery = Delivery(
                    n, stored.key, stored.size, stored.md5, block, block.join(host.directory, f"pds-{n}.bin")
                )
                theirs = f"{remote}/rclone-{n}.bin"  # new names each round: rclone skips identical files

                theirs_default = f"{remote}/rclone-{n}-defaults.bin"  # rclone's defaults, when they run

                def up_rclone(flags: list[str] = flags, target: str = theirs) -> None:
                    rclone("copyto", *flags, str(source), target)

                def up_pds() -> None:
                    send_data_file(store, delivery)  # noqa: B023

                def down_rclone(flags: list[str] = flags, target: str = theirs) -> None:
                    rclone("copyto", *flags, target, str(root / "down-rclone.bin"))

                def down_pds() -> None:
                    with (
                        block.open_stream(fs, delivery.remote_path) as f,  # noqa: B023
                        (root / "down-pds.bin").open("wb") as out,
                    ):
                        while chunk := f.read(8 << 20):
                            out.write(chunk)
                    assert (root / "down-pds.bin").stat().st_size == size, "download differs"

                def down_store_pds() -> None:
                    with block.open_stream(fs, delivery.remote_path) as f:  # noqa: B023
                        got = store.put_stream(iter(lambda: f.read(8 << 20), b""))  # noqa: B023
                    store.delete(got.key)
                    assert got.md5 == stored.md5, "download differs"

                def clear_downloads() -> None:
                    for name in ("down-rclone.bin", "down-pds.bin"):
                        (root / name).unlink(missing_ok=True)

                gib = size / 2**30
                for theirs_fn, ours_fns in (
                    (up_rclone, [("up", up_pds)]),
                    (down_rclone, [("down", down_pds), ("down+store", down_store_pds)]),
                ):
                    # One rclone copy per direction and round is the anchor of every pds row of
                    # that direction; the pds copies go before or after it, alternating by round.
                    ours = []

                    def run_ours() -> None:
                        for label, fn in ours_fns:  # noqa: B023
                            rss, cpu_p = PeakRss(), []
                            with rss:
                                p = timed(fn, cpu_p)
                            clear_downloads()  # at once, so that disk space stays at one download
                            ours.append((label, p, cpu_p[0], rss.growth_mib))  # noqa: B023

                    cpu_r: list[float] = []
                    if pds_first:
                        run_ours()
                        r = timed(theirs_fn, cpu_r)
                        clear_downloads()
                    else:
                        r = timed(theirs_fn, cpu_r)
                        clear_downloads()
                        run_ours()
                    for label, p, cpu_p, growth in ours:
                        rows.append(
                            (protocol, label, n, size / r / 2**20, size / p / 2**20, r / p, growth)
                            + (cpu_r[0] / gib, cpu_p / gib, os.getloadavg()[0])
                        )
                        row = results.row(
                            f"{protocol} {label}",
                            anchor=" ".join(["rclone copyto", *flags]),
                            fair=label != "down+store",
                            why=why if label != "down+store" else "pds also computes MD5 and Adler-32 of every byte",
                            unit="GiB",
                            units=gib,
                            cpu="getrusage SELF + CHILDREN around each copy (pds: this process; rclone: its own)",
                            ratio="anchor/pds",
                        )
                        row.pds_seconds.append(p)
                        row.pds_cpu_seconds.append(cpu_p)
                        row.anchor_seconds.append(r)
                        row.anchor_cpu_seconds.append(cpu_r[0])
                    if protocol in UNFAIR and n <= args.unfair_rounds:
                        # rclone's defaults, once more in this direction, beside the fair anchor.
                        direction = ours_fns[0][0]
                        fair_row = results.rows[f"{protocol} {direction}"]
                        default = results.row(
                            f"{protocol} {direction}, rclone's defaults",
                            anchor="rclone copyto",
                            fair=False,
                            why=UNFAIR[protocol],
                            unit="GiB",
                            units=gib,
                            cpu=fair_row.cpu,
                            ratio="anchor/pds",
                        )
                        default.pds_seconds, default.pds_cpu_seconds = fair_row.pds_seconds, fair_row.pds_cpu_seconds
                        cpu_d: list[float] = []
                        default.anchor_seconds.append(
                            timed(lambda fn=theirs_fn, target=theirs_default: fn([], target), cpu_d)
                        )
                        default.anchor_cpu_seconds.append(cpu_d[0])
                        clear_downloads()
                    results.sample_load()
                fs.rm(delivery.remote_path)
                rclone("deletefile", theirs)
                if protocol in UNFAIR and n <= args.unfair_rounds:
                    rclone("deletefile", theirs_default)
    version = subprocess.run([RCLONE, "version"], capture_output=True, text=True).stdout.split()[1]
    print(f"file {size / 2**20:.0f} MiB, rclone {version}")
    header = f"{'protocol':8} {'dir':10} {'round':>5} {'rclone MiB/s':>12} {'pds MiB/s':>10} {'pds/rclone':>10}"
    print(f"{header} {'pds RSS +MiB':>12} {'CPU s/GiB rclone':>16} {'pds':>5} {'load':>5}")
    for protocol, direction, n, r, p, ratio, rss, cpu_r, cpu_p, load in rows:
        print(
            f"{protocol:8} {direction:10} {n:5} {r:12.1f} {p:10.1f} {ratio:10.2f} {rss:12.1f}"
            f" {cpu_r:16.2f} {cpu_p:5.2f} {load:5.1f}"
        )
    print("ratios: rclone's seconds / pds's (pds's speed / rclone's: above 1, pds is faster); target ≥ 0.9")
    results.print()
    results.save()


if __name__ == "__main__":
    workdir = Path(tempfile.mkdtemp(prefix="pds-bench-transfer-"))
    try:
        main(workdir)
    finally:  # benchmark files run to gigabytes: never leave them behind (only this run's: others may be running)
        shutil.rmtree(workdir, ignore_errors=True)
