"""Discovery against `rclone lsjson`: the same directory of many files, the same servers, the same run.

Fills one directory with `--count` files (100,000 by default) on OpenSSH SFTP and on an S3 server
(SeaweedFS), then times `rclone lsjson` of it (the anchor) and a full pds discovery pass of it
(streamed listing, filters, dedupe and the registration of every file in a fresh SQLite database),
then a second pass (listing and dedupe only: nothing new). `--rounds` alternating rounds (rclone
first in odd ones), each pds round on a fresh database. Prints every round, the median pds/rclone
ratios (target: a first pass within 1.5× rclone), their spread, and CPU microseconds per listed file
of pds (this process and its listing process, `getrusage` SELF + CHILDREN) and of rclone (its
process, `getrusage` CHILDREN); the servers' CPU is counted on neither side. Not part of the test
suite.

The anchor does the same work as pds, which reads the listing only: over S3 plain `rclone lsjson`
sends a HEAD request per object (for its MIME type and modification time), so the fair anchor is
`rclone lsjson --no-mimetype --use-server-modtime` (one listing request per 1,000 objects);
`--fast-list` is not passed, as it only changes recursive listings and this is one directory.
rclone's default runs beside it in the first `--unfair-rounds` round(s) (default 1, 0 to skip),
labelled NOT FAIR. Over SFTP `rclone lsjson` reads the directory listing only, as pds does.

    .venv/bin/python tests/benchmarks/discovery.py [--count 100000] [--protocols sftp s3] [--rounds 3]
                                                   [--unfair-rounds 1] [--json PATH]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from catalog.acquisition import ListingRuleCreate, add_rule  # noqa: E402
from catalog.config import create_destination, create_host  # noqa: E402
from catalog.database import make_engine, migrate, session_scope  # noqa: E402
from catalog.models import DestinationCreate, Host, HostCreate, HostKind  # noqa: E402
from tasks.discovery import discover_rule  # noqa: E402
from tests.benchmarks._results import Results, add_arguments, anchor_first, children_cpu, own_cpu  # noqa: E402
from tests.servers.seaweedfs import SeaweedS3Server  # noqa: E402
from tests.servers.sshd import SshServer  # noqa: E402

RCLONE = str(Path(sys.executable).with_name("rclone"))

#: Directories this run made, removed when it ends.
WORKDIRS: list[Path] = []


#: rclone lsjson's flags that make it read the listing only, as pds does, by protocol.
FAIR_FLAGS = {
    "sftp": ([], "both read the directory listing only"),
    "s3": (["--no-mimetype", "--use-server-modtime"], "no HEAD per object: both read the listing only"),
}
UNFAIR = {"s3": "rclone's default: a HEAD request per object for its MIME type and modification time"}


def timed(fn, cpu: list[float], *, children_only: bool = False) -> float:  # noqa: ANN001
    """Wall seconds of `fn()`; appends to `cpu` the CPU seconds of its reaped child processes and,
    unless `children_only`, of this process."""

    def used() -> float:
        return children_cpu() + (0.0 if children_only else own_cpu())

    before = used()
    started = time.perf_counter()
    fn()
    elapsed = time.perf_counter() - started
    cpu.append(used() - before)
    return elapsed


def rclone_lsjson(remote: str, flags: list[str]) -> int:
    out = subprocess.run(
        [RCLONE, "--config", "/dev/null", "-q", "lsjson", *flags, remote], check=True, capture_output=True
    )
    return out.stdout.count(b'"Path"')


def discovery_pass(root: Path, host: HostCreate, name: str) -> tuple[float, float, int, float, float]:
    """Seconds of a first and a second pass on a fresh database, the files registered, and the CPU
    seconds of each pass."""
    engine = make_engine(f"sqlite:///{root / f'{name}.db'}")
    migrate(engine)
    with session_scope(engine) as session:
        create_destination(session, DestinationCreate(name="bench"))
        create_host(session, host, known_protocols=frozenset({"sftp", "s3"}))
        rule = add_rule(session, host.name, ListingRuleCreate(destination="bench", directory="many"))
        stored = session.get(Host, host.name)
    assert stored is not None
    outcomes, cpu = [], []
    first = timed(lambda: outcomes.append(discover_rule(engine, stored, rule, by="bench")), cpu)
    second = timed(lambda: outcomes.append(discover_rule(engine, stored, rule, by="bench")), cpu)
    assert outcomes[1].registered == 0
    engine.dispose()
    (root / f"{name}.db").unlink(missing_ok=True)
    return first, second, outcomes[0].registered, cpu[0], cpu[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=100_000)
    parser.add_argument("--protocols", nargs="+", default=["sftp", "s3"])
    parser.add_argument(
        "--unfair-rounds",
        type=int,
        default=1,
        help="rounds that also run rclone's default where it does more work than pds (S3; default 1)",
    )
    add_arguments(parser)
    args = parser.parse_args()
    results = Results("discovery", args)
    root = Path(tempfile.mkdtemp(prefix="pds-bench-discovery-"))
    WORKDIRS.append(root)
    with SshServer(root / "sshd") as sshd, SeaweedS3Server(root / "seaweed") as s3:
        if "sftp" in args.protocols:
            many = sshd.data_dir / "many"
            many.mkdir(parents=True)
            for i in range(args.count):
                (many / f"file-{i:07d}.dat").write_bytes(b"x")
            host = HostCreate(
                name="sftp",
                kind=HostKind.ACQUISITION,
                protocol="sftp",
                address=f"127.0.0.1:{sshd.port}",
                login=sshd.username,
                directory=str(sshd.data_dir),
                options={"key_filename": str(sshd.client_key_path)},
            )
            remote = (
                f":sftp,host=127.0.0.1,port={sshd.port},user={sshd.username},key_file={sshd.client_key_path}:{many}"
            )
            _measure(results, args, root, host, remote)
        if "s3" in args.protocols:
            bucket = f"bench-{uuid.uuid4().hex[:8]}"
            s3.create_bucket(bucket)
            client = s3.client()
            with ThreadPoolExecutor(16) as pool:
                list(
                    pool.map(
                        lambda i: client.put_object(Bucket=bucket, Key=f"many/file-{i:07d}.dat", Body=b"x"),
                        range(args.count),
                    )
                )
            host = HostCreate(
                name="s3",
                kind=HostKind.ACQUISITION,
                protocol="s3",
                address=s3.endpoint_url,
                login=s3.access_key,
                password=s3.secret_key,
                directory=bucket,
            )
            remote = (
                f":s3,provider=Other,endpoint='{s3.endpoint_url}',access_key_id={s3.access_key},"
                f"secret_access_key={s3.secret_key},region={s3.region}:{bucket}/many"
            )
            _measure(results, args, root, host, remote)
    print(f"\n{args.count} files in one directory; target: a first pass within 1.5× the fair anchor")
    results.print()
    results.save()


def _measure(results: Results, args: argparse.Namespace, root: Path, host: HostCreate, remote: str) -> None:
    protocol, count = host.protocol, args.count
    flags, why = FAIR_FLAGS[protocol]
    cpu_note = "pds: this process and its listing process (getrusage); rclone: its process (getrusage)"
    common = {"unit": "file", "units": count, "cpu": cpu_note}
    anchor = " ".join(["rclone lsjson", *flags])
    first = results.row(f"{protocol} discovery, 1st pass", anchor=anchor, fair=True, why=why, **common)
    second = results.row(f"{protocol} discovery, 2nd pass", anchor=anchor, fair=True, why=why, **common)
    for n in range(1, args.rounds + 1):

        def theirs(n: int = n) -> None:
            listed: list[int] = []
            cpu: list[float] = []
            seconds = timed(lambda: listed.append(rclone_lsjson(remote, flags)), cpu, children_only=True)
            assert listed[0] == count, f"rclone listed {listed[0]} entries, not {count}"
            for row in (first, second):
                row.anchor_seconds.append(seconds)
                row.anchor_cpu_seconds.append(cpu[0])
            print(f"round {n} {protocol} {anchor}: {seconds:.2f} s", flush=True)

        def ours(n: int = n) -> None:
            one, two, registered, cpu_one, cpu_two = discovery_pass(root, host, f"{host.name}-{n}")
            assert registered == count, f"pds registered {registered}, not {count}"
            first.pds_seconds.append(one)
            first.pds_cpu_seconds.append(cpu_one)
            second.pds_seconds.append(two)
            second.pds_cpu_seconds.append(cpu_two)
            print(f"round {n} {protocol} pds: 1st pass {one:.2f} s, 2nd {two:.2f} s", flush=True)

        for step in (theirs, ours) if anchor_first(n) else (ours, theirs):
            step()
        if protocol in UNFAIR and n <= args.unfair_rounds:
            default = results.row(
                f"{protocol} discovery, 1st pass, rclone's defaults",
                anchor="rclone lsjson",
                fair=False,
                why=UNFAIR[protocol],
                **common,
            )
            default.pds_seconds, default.pds_cpu_seconds = first.pds_seconds, first.pds_cpu_seconds
            listed: list[int] = []
            cpu: list[float] = []
            seconds = timed(lambda: listed.append(rclone_lsjson(remote, [])), cpu, children_only=True)  # noqa: B023
            assert listed[0] == count, f"rclone listed {listed[0]} entries, not {count}"
            default.anchor_seconds.append(seconds)
            default.anchor_cpu_seconds.append(cpu[0])
            print(f"round {n} {protocol} rclone lsjson (defaults, NOT FAIR): {seconds:.2f} s", flush=True)
        results.sample_load()


if __name__ == "__main__":
    try:
        main()
    finally:  # only this run's directory: others may be running
        for workdir in WORKDIRS:
            shutil.rmtree(workdir, ignore_errors=True)
