"""Discovery against `rclone lsjson`: the same directory of many files, the same servers, the same run.

Fills one directory with `--count` files (100,000 by default) on OpenSSH SFTP and on an S3 server
(SeaweedFS), then times `rclone lsjson` of it (the anchor) and a full pds discovery pass of it
(streamed listing, filters, dedupe and the registration of every file in a fresh SQLite database),
then a second pass (listing and dedupe only: nothing new). Prints seconds and the pds/rclone ratios;
the target is a first pass within 1.5× rclone. Not part of the test suite.

    .venv/bin/python tests/benchmarks/discovery.py [--count 100000] [--protocols sftp s3]
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
from tests.servers.seaweedfs import SeaweedS3Server  # noqa: E402
from tests.servers.sshd import SshServer  # noqa: E402

RCLONE = str(Path(sys.executable).with_name("rclone"))


def timed(fn) -> float:  # noqa: ANN001
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def rclone_lsjson(remote: str) -> int:
    out = subprocess.run([RCLONE, "--config", "/dev/null", "-q", "lsjson", remote], check=True, capture_output=True)
    return out.stdout.count(b'"Path"')


def discovery_pass(root: Path, host: HostCreate, name: str) -> tuple[float, float, int]:
    engine = make_engine(f"sqlite:///{root / f'{name}.db'}")
    migrate(engine)
    with session_scope(engine) as session:
        create_destination(session, DestinationCreate(name="bench"))
        create_host(session, host, known_protocols=frozenset({"sftp", "s3"}))
        rule = add_rule(session, host.name, ListingRuleCreate(destination="bench", directory="many"))
        stored = session.get(Host, host.name)
    assert stored is not None
    outcomes = []
    first = timed(lambda: outcomes.append(discover_rule(engine, stored, rule, by="bench")))
    second = timed(lambda: outcomes.append(discover_rule(engine, stored, rule, by="bench")))
    assert outcomes[1].registered == 0
    return first, second, outcomes[0].registered


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=100_000)
    parser.add_argument("--protocols", nargs="+", default=["sftp", "s3"])
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="pds-bench-discovery-"))
    rows: list[tuple[str, float, float, float]] = []
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
            rows.append(("sftp", *_measure(root, host, remote, args.count)))
            anchor, first, second = rows[-1][1:]
            print(f"sftp: rclone lsjson {anchor:.2f} s, pds 1st pass {first:.2f} s, 2nd {second:.2f} s", flush=True)
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
            rows.append(("s3", *_measure(root, host, remote, args.count)))
            anchor, first, second = rows[-1][1:]
            print(f"s3: rclone lsjson {anchor:.2f} s, pds 1st pass {first:.2f} s, 2nd {second:.2f} s", flush=True)
    print(f"{args.count} files in one directory")
    header = ("rclone lsjson s", "pds 1st pass s", "1st/rclone", "pds 2nd pass s", "2nd/rclone")
    print(f"{'protocol':8} " + " ".join(f"{h:>15}" for h in header))
    for protocol, anchor, first, second in rows:
        print(
            f"{protocol:8} {anchor:15.2f} {first:15.2f} {first / anchor:10.2f} {second:15.2f} {second / anchor:10.2f}"
        )


def _measure(root: Path, host: HostCreate, remote: str, count: int) -> tuple[float, float, float]:
    listed: list[int] = []
    anchor = timed(lambda: listed.append(rclone_lsjson(remote)))
    assert listed[0] == count, f"rclone listed {listed[0]} entries, not {count}"
    first, second, registered = discovery_pass(root, host, host.name)
    assert registered == count, f"pds registered {registered}, not {count}"
    return anchor, first, second


if __name__ == "__main__":
    try:
        main()
    finally:
        for leftover in Path(tempfile.gettempdir()).glob("pds-bench-discovery-*"):
            shutil.rmtree(leftover, ignore_errors=True)
