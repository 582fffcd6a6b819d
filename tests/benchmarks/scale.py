"""Scale on the production topology: two movers' transfers per second, claim cost, Prefect's backlog.

    sudo .venv/bin/python tests/benchmarks/scale.py [--transfers 36000] [--minutes 10] [--interval 10]
                                                    [--size-kib 4] [--claim-rows 1000 100000 1000000]
                                                    [--claims 20] [--skip-claims] [--json PATH]

It needs root (network namespaces). It brings up pds's production topology (`infra/topology.py`, as
`infra/production-local.sh up` does; under a tag and a private /24 of its own, so a topology already
running here is left alone): PostgreSQL, Redis, two Prefect API servers with Redis messaging and their
background services, two pds API replicas behind nginx, the workers of both pools in their namespaces,
the sites in theirs. It starts SeaweedFS (a real S3 server) as one more site on the sites machine, and
brings everything down at the end (no process, no namespace left). Then it measures:

1. **Claim cost by table size.** In a database of its own on the topology's PostgreSQL, the transfers
   table holds 10^3, then 10^5, then 10^6 rows (Done ones, bulk-inserted with COPY, plus 2,000 Queued
   ones to claim). Each size runs `--claims` claims exactly as a mover makes them
   (`catalog.transfers.claim_ids` with the mover's limits) in a transaction that is rolled back, so
   every claim sees the same rows. It prints the wall seconds and CPU seconds per claimed transfer:
   this process's (the query's client side) and the PostgreSQL backend's (psutil, on the backend
   serving the connection). The cost must stay flat as the table grows: the claim reads the queue
   index, never the whole table.
2. **Sustained throughput.** Two movers in the movers' namespace share one destination whose host is
   a bucket on the SeaweedFS site, reached over the movers' own link. They are what production runs
   to have two movers: the `mover` deployment (mover `mover-pool-1`) and a second deployment of the
   same flow in the same `pds-movers` pool (`mover-2`, mover `mover-pool-2`), as prefect.yaml says to
   add movers; the pool's one worker runs both as flow runs. (The `continental` deployment is not run:
   with no proxy host it would be a third main mover.) After a few warm-up files, `--transfers` small
   transfers (`--size-kib` each) are queued in the topology's database in one transaction —
   bulk-inserted transfer rows over a few stored files, as discovery registers them, with their
   `create` history rows — and the script samples every `--interval` seconds for `--minutes` (or
   until all are Done): transfers Done per second in each interval, and Prefect's event backlog — the
   rows of the `events` table of the topology's Prefect database and how far the newest persisted
   event lags behind now (a backlog that grows would show as a growing lag). The target is ≥ 60
   transfers/s sustained (the median and the lowest interval are printed) with a flat backlog.

With `--json PATH` it writes the claim costs as rows (each table size against 10^3 rows as the
anchor: the ratio is the growth of the cost) and the throughput and backlog series under "extra".
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psutil
import sqlalchemy as sa
import yaml  # type: ignore[import-untyped]

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from api.client import PdsClient  # noqa: E402
from api.deployments import PREFECT_FILE  # noqa: E402
from catalog.database import make_engine, migrate, session_scope  # noqa: E402
from catalog.models import DataTransfer, HostCreate, TransferHistory  # noqa: E402
from catalog.statuses import TransferStatus  # noqa: E402
from catalog.store import DataStore  # noqa: E402
from catalog.transfers import claim_ids  # noqa: E402
from flows.mover import CLAIM_BYTES, CLAIM_FILES  # noqa: E402
from infra.topology import CHECKOUT, Topology, by_name, free_prefix  # noqa: E402
from tests.benchmarks._results import Results, add_arguments, cpu_text, own_cpu, tree_cpu  # noqa: E402
from tests.factories import destination, push  # noqa: E402
from tests.servers._common import wait_until  # noqa: E402

DESTINATION = "scale"
#: Queued transfers present at every table size of the claim-cost phase (a few claims' worth).
CLAIMABLE = 2000
#: Stored files the queued transfers share (each transfer has its own target name at the site).
DISTINCT_FILES = 50
#: The two movers: the `mover` deployment's, and a second deployment of the same flow and pool.
MOVERS = ("mover-pool-1", "mover-pool-2")
SECOND_DEPLOYMENT = "mover-2"
#: The long-lived flows this benchmark runs at `up` (not the continental mover: see the docstring).
FLOWS = ("mover/mover", "proxy-fetcher/proxy-fetcher")
#: SeaweedFS accepts any credentials (no identities configured); a host needs some.
S3_LOGIN, S3_PASSWORD, S3_REGION = "pds-bench", "pds-bench-secret", "us-east-1"  # noqa: S105


def s3_host(topology: Topology, bucket: str) -> HostCreate:
    """The SeaweedFS site as a pds host: its S3 port on the sites machine's address."""
    return HostCreate(
        name="seaweedfs",
        protocol="s3",
        address=f"http://{topology.address('sites')}:{by_name('site-s3').port}",
        login=S3_LOGIN,
        password=S3_PASSWORD,
        directory=f"{bucket}/scale",
        options={"region": S3_REGION},
    )


def run_command(command: list[str], env: dict[str, str]) -> str:
    done = subprocess.run(command, env=env, cwd=CHECKOUT, capture_output=True, text=True, timeout=300, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({done.returncode}):\n{done.stdout}{done.stderr}")
    return done.stdout


def start_s3_site(topology: Topology, bucket: str) -> None:
    """SeaweedFS on the sites machine, and its bucket, made from inside that machine (this namespace
    has no route to the sites; only the movers do)."""
    topology.start("site-s3")
    topology.wait_serving(["site-s3"])
    make = (
        "import boto3, sys; boto3.client('s3', endpoint_url=sys.argv[1], aws_access_key_id=sys.argv[2],"
        " aws_secret_access_key=sys.argv[3], region_name=sys.argv[4]).create_bucket(Bucket=sys.argv[5])"
    )
    endpoint = f"http://127.0.0.1:{by_name('site-s3').port}"
    command = ["ip", "netns", "exec", topology.namespace("sites"), sys.executable, "-c", make]
    command += [endpoint, S3_LOGIN, S3_PASSWORD, S3_REGION, bucket]
    # The S3 port opens before SeaweedFS's filer serves it: retry until the bucket is made.
    made = lambda: subprocess.run(command, capture_output=True, timeout=60, check=False).returncode == 0  # noqa: E731
    wait_until(made, 120, "SeaweedFS to make the bucket", log=topology.logs / "site-s3.log", interval=1)


def run_second_mover(topology: Topology) -> None:
    """A second mover the way production adds one: prefect.yaml's `mover` deployment again under
    another deployment name and mover name, in the same pool (without its schedule: nothing here
    restarts movers), registered with the topology's Prefect and run by the `pds-movers` worker."""
    document = yaml.safe_load(PREFECT_FILE.read_text())
    mover = next(d for d in document["deployments"] if d["name"] == "mover")
    second = {**mover, "name": SECOND_DEPLOYMENT, "parameters": {**mover["parameters"], "name": MOVERS[1]}}
    second.pop("schedules", None)
    document["deployments"] = [second]
    path = topology.state / f"{SECOND_DEPLOYMENT}.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    prefect = str(Path(sys.executable).with_name("prefect"))
    env = topology.client_environment()
    run_command([prefect, "--no-prompt", "deploy", "--all", "--prefect-file", str(path)], env)
    run_command([prefect, "deployment", "run", f"mover/{SECOND_DEPLOYMENT}"], env)


def stored_files(engine: sa.Engine, store: DataStore, size: int) -> list[int]:
    """`DISTINCT_FILES` files pushed the ordinary way (their transfers held in StandBy, never sent):
    the data files the bulk-queued transfers point to."""
    ids = []
    for n in range(DISTINCT_FILES):
        data_file_id, _ = push(engine, store, DESTINATION, f"seed/{n:03}.bin", data=os.urandom(size), standby=True)
        ids.append(data_file_id)
    return ids


def copy_transfers(engine: sa.Engine, data_files: list[int], count: int, status: TransferStatus, prefix: str) -> None:
    """`count` transfers of `status` to DESTINATION, written with COPY (a million rows in seconds)."""
    now = datetime.now(UTC) - timedelta(seconds=1)
    columns = ("data_file_id", "destination_name", "target", "status", "priority", "queued_at", "scheduled_at")
    columns += ("updated_at", "start_count", "requeue_count", "host_attempts", "pass_hosts_tried", "bytes_sent")
    columns += ("attempt",)
    done = status == TransferStatus.DONE
    with engine.begin() as connection:
        raw: Any = connection.connection.driver_connection
        with raw.cursor() as cursor, cursor.copy(f"COPY data_transfer ({', '.join(columns)}) FROM STDIN") as copy:
            for n in range(count):
                copy.write_row(
                    (data_files[n % len(data_files)], DESTINATION, f"{prefix}/{n:07}.bin", status.value, 50)
                    + (now, now, now, int(done), 0, 0, 0, 0, int(done))
                )
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.execute(sa.text("ANALYZE data_transfer"))


def queue_transfers(engine: sa.Engine, data_files: list[int], count: int) -> None:
    """`count` Queued transfers and their `create` history rows, in one transaction (what discovery
    writes for a listing, without the listing)."""
    now = datetime.now(UTC)
    with session_scope(engine) as session:
        ids = list(
            session.execute(
                sa.insert(DataTransfer).returning(DataTransfer.id),
                [
                    {
                        "data_file_id": data_files[n % len(data_files)],
                        "destination_name": DESTINATION,
                        "target": f"queued/{n:06}.bin",
                        "status": TransferStatus.QUEUED.value,
                        "queued_at": now,
                        "scheduled_at": now,
                        "updated_at": now,
                    }
                    for n in range(count)
                ],
            ).scalars()
        )
        session.execute(
            sa.insert(TransferHistory),
            [
                {"transfer_id": i, "action": "create", "to_status": TransferStatus.QUEUED.value, "at": now}
                | {"by": "scale benchmark", "reason": "queued in bulk"}
                for i in ids
            ],
        )


def claim_costs(
    engine: sa.Engine, sizes: list[int], claims: int, data_files: list[int]
) -> dict[int, tuple[list[float], list[float], list[float]]]:
    """Per table size: wall seconds, client CPU seconds and backend CPU seconds per claimed transfer,
    one value per claim."""
    copy_transfers(engine, data_files, CLAIMABLE, TransferStatus.QUEUED, "claimable")
    out = {}
    for size in sorted(sizes):
        with engine.connect() as connection:
            have = connection.execute(sa.text("SELECT count(*) FROM data_transfer")).scalar_one()
        if size > have:
            started = time.perf_counter()
            copy_transfers(engine, data_files, size - have, TransferStatus.DONE, f"done-{size}")
            print(f"  {size - have:,} Done rows written with COPY in {time.perf_counter() - started:.1f} s")
        walls, client, server = [], [], []
        for _ in range(claims + 1):  # the first claim warms the caches and plans; it is not counted
            with session_scope(engine) as session:
                pid = session.execute(sa.text("SELECT pg_backend_pid()")).scalar_one()
                cpu, cpu_backend, started = own_cpu(), tree_cpu(pid), time.perf_counter()
                claimed = claim_ids(session, "claim-bench", CLAIM_FILES, max_bytes=CLAIM_BYTES)
                elapsed, cpu, cpu_backend = (
                    time.perf_counter() - started,
                    own_cpu() - cpu,
                    tree_cpu(pid) - cpu_backend,
                )
                session.rollback()  # every claim sees the same rows
            if not claimed:
                raise SystemExit("the claim found nothing to claim")
            walls.append(elapsed / len(claimed))
            client.append(cpu / len(claimed))
            server.append(cpu_backend / len(claimed))
        out[size] = (walls[1:], client[1:], server[1:])
        print(
            f"  {size:>9,} rows: claim of {len(claimed)} transfers, per transfer"
            f" {statistics.median(walls[1:]) * 1e6:.0f} µs wall, client CPU {cpu_text(statistics.median(client[1:]))},"
            f" backend CPU {cpu_text(statistics.median(server[1:]))}"
        )
    return out


def prefect_events(prefect_engine: sa.Engine) -> tuple[int, float]:
    """Rows of Prefect's events table, and seconds between now and the newest persisted event."""
    with prefect_engine.connect() as connection:
        count, newest = connection.execute(sa.text("SELECT count(*), max(occurred) FROM events")).one()
    lag = (datetime.now(UTC) - newest).total_seconds() if newest else float("nan")
    return int(count), lag


def done_count(engine: sa.Engine) -> tuple[int, int]:
    with engine.connect() as connection:
        rows = connection.execute(
            sa.text("SELECT status, count(*) FROM data_transfer WHERE target LIKE 'queued/%' GROUP BY status")
        ).all()
    counts = dict(rows)
    return counts.get("Done", 0), sum(counts.values()) - counts.get("Done", 0)


def sustained(topology: Topology, client: PdsClient, bucket: str, args: Any) -> dict[str, Any]:
    """Both movers running, the destination on the S3 site: queue `--transfers` at once and sample."""
    env = topology.client_environment()
    engine = make_engine(env["PDS_DATABASE_URL"])
    prefect_engine = make_engine(f"postgresql+psycopg://pds@{topology.address('api')}:5432/prefect")
    store = DataStore.from_url(env["PDS_STORE_URL"])
    host = s3_host(topology, bucket)
    client.create_destination(DESTINATION, max_parallel_transfers=1000)
    fields = host.model_dump(include={"address", "login", "password", "directory", "options"})
    client.create_host(host.name, host.protocol, **fields)
    client.attach_host(DESTINATION, host.name)
    run_second_mover(topology)
    worker = topology.pids["worker-movers"]
    mover_log = topology.logs / "worker-movers.log"
    data_files = stored_files(engine, store, args.size_kib * 1024)
    warm = [push(engine, store, DESTINATION, f"warm-up/{n}.bin", data=b"w" * 1024)[1][0] for n in range(8)]
    wait_until(lambda: _movers(engine) == set(MOVERS), 300, f"both movers ({', '.join(MOVERS)}) to beat", log=mover_log)
    wait_until(lambda: _all_done(engine, warm), 180, "the warm-up files", log=mover_log)
    cpu_before = tree_cpu(worker)
    queue_transfers(engine, data_files, args.transfers)
    started = time.perf_counter()
    samples = []
    last_done, last_at = 0, started
    while True:
        time.sleep(max(0.0, last_at + args.interval - time.perf_counter()))
        now = time.perf_counter()
        done, left = done_count(engine)
        events, lag = prefect_events(prefect_engine)
        rate = (done - last_done) / (now - last_at)
        samples.append(
            {"seconds": round(now - started, 1), "done": done, "per_second": round(rate, 1)}
            | {"prefect_events": events, "prefect_event_lag_seconds": round(lag, 1), "load": os.getloadavg()[0]}
        )
        print(
            f"  {now - started:6.0f} s: {done:6} Done ({rate:5.1f}/s), {left} left;"
            f" Prefect events {events}, newest {lag:.1f} s ago; load {os.getloadavg()[0]:.1f}"
        )
        last_done, last_at = done, now
        if left == 0 or now - started >= args.minutes * 60:
            break
    elapsed = time.perf_counter() - started
    # The worker and the flow runs it started: both movers and their dispatches.
    mover_cpu = tree_cpu(worker) - cpu_before
    failed = _failed(engine)
    engine.dispose()
    prefect_engine.dispose()
    full = [s["per_second"] for s in samples if s["done"] < args.transfers]  # intervals the queue was never empty
    full = full or [s["per_second"] for s in samples]
    return {
        "transfers": args.transfers,
        "size_bytes": args.size_kib * 1024,
        "seconds": round(elapsed, 1),
        "done": last_done,
        "failed": failed,
        "per_second_overall": round(last_done / elapsed, 1),
        "per_second_median": statistics.median(full),
        "per_second_min": min(full),
        "mover_cpu_per_transfer_seconds": mover_cpu / max(last_done, 1),
        "topology": {"prefix": topology.prefix, "movers": list(MOVERS), "site": "SeaweedFS on the sites machine"},
        "samples": samples,
    }


def _all_done(engine: sa.Engine, ids: list[int]) -> bool:
    with engine.connect() as connection:
        statuses = connection.execute(sa.select(DataTransfer.status).where(DataTransfer.id.in_(ids))).scalars()
        return set(statuses) == {"Done"}


def _movers(engine: sa.Engine) -> set[str]:
    """The movers that have beaten so far."""
    with engine.connect() as connection:
        return set(connection.execute(sa.text("SELECT name FROM mover")).scalars())


def _failed(engine: sa.Engine) -> int:
    with engine.connect() as connection:
        return int(
            connection.execute(
                sa.text("SELECT count(*) FROM data_transfer WHERE target LIKE 'queued/%' AND status = 'Failed'")
            ).scalar_one()
        )


def _running(pid: int) -> bool:
    """Whether `pid` still runs (a zombie, dead but not yet reaped by this process, does not)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def claims_database(topology: Topology) -> str:
    """A database of its own on the topology's PostgreSQL for the claim-cost phase; its URL."""
    server = f"postgresql+psycopg://pds@{topology.address('api')}:5432"
    admin = sa.create_engine(f"{server}/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(sa.text("CREATE DATABASE claims"))
    admin.dispose()
    return f"{server}/claims"


def measure_claims(topology: Topology, root: Path, bucket: str, args: Any, results: Results) -> None:
    print("claim cost by the size of the transfers table:")
    engine = make_engine(claims_database(topology))
    migrate(engine)
    destination(engine, DESTINATION, host=s3_host(topology, bucket), max_parallel_transfers=1000)
    store = DataStore.from_url(str(root / "claims-store"))
    costs = claim_costs(engine, args.claim_rows, args.claims, stored_files(engine, store, 1024))
    engine.dispose()
    smallest = min(costs)
    for size, (walls, client, server) in sorted(costs.items()):
        results.extra.setdefault("claims", {})[str(size)] = {
            "per_transfer_seconds": statistics.median(walls),
            "client_cpu_per_transfer_seconds": statistics.median(client),
            "backend_cpu_per_transfer_seconds": statistics.median(server),
        }
        if size == smallest:
            continue  # the anchor of the other rows
        row = results.row(
            f"claim, {size:,} rows in the transfers table",
            anchor=f"the same claim, {smallest:,} rows",
            fair=True,
            why="the same queue of 2,000 ready transfers; only the Done rows differ",
            unit="transfer",
            units=1,
            cpu="this process (the claim's client side); the backend's CPU is in extra.claims",
            timing="wall seconds per claimed transfer: pds one value per claim, the anchor its median",
        )
        row.pds_seconds, row.pds_cpu_seconds = walls, client
        # The anchor's median: the ratio is then the growth of the median claim cost
        # (claims of different sizes are no pairs to divide one by one).
        row.anchor_seconds = [statistics.median(costs[smallest][0])]
        row.anchor_cpu_seconds = [statistics.median(costs[smallest][1])]
    results.sample_load()


def main(root: Path) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--transfers", type=int, default=36000, help="transfers queued at once (default 36000)")
    parser.add_argument(
        "--minutes", type=float, default=10, help="how long the sustained run lasts at most (default 10)"
    )
    parser.add_argument("--interval", type=float, default=10, help="seconds between samples (default 10)")
    parser.add_argument("--size-kib", type=int, default=4, help="size of each file (default 4 KiB)")
    parser.add_argument("--claim-rows", type=int, nargs="+", default=[1000, 100_000, 1_000_000])
    parser.add_argument("--claims", type=int, default=20, help="claims measured at each table size (default 20)")
    parser.add_argument("--skip-claims", action="store_true", help="only the sustained run")
    add_arguments(parser, rounds=1)
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("scale: the production topology's network namespaces need root (run it with sudo)")
    results = Results("scale", args)
    # A tag no test topology uses (theirs are hex digits only) and a /24 no route here uses yet.
    topology = Topology(root / "state", tag=f"s{secrets.token_hex(2)}", prefix=free_prefix())
    bucket = f"scale-{secrets.token_hex(4)}"
    try:
        began = time.monotonic()
        topology.up(say=lambda line: print(f"  topology {line}"), flows=FLOWS)
        results.extra["topology_up_seconds"] = round(time.monotonic() - began, 1)
        start_s3_site(topology, bucket)
        if not args.skip_claims:
            measure_claims(topology, root, bucket, args, results)
        print(f"sustained: two movers, {args.transfers:,} transfers of {args.size_kib} KiB to SeaweedFS:")
        client = PdsClient(topology.api_url, user="admin", password="admin")
        run = sustained(topology, client, bucket, args)
    finally:
        started = dict(topology.pids)
        topology.down(say=lambda line: print(f"  topology {line}"))
        left = [name for name, pid in started.items() if _running(pid)]
        if left or topology.namespaces():
            print(f"topology down left behind: processes {left}, namespaces {topology.namespaces()}", file=sys.stderr)
    results.extra["sustained"] = run
    results.print()
    lags = [s["prefect_event_lag_seconds"] for s in run["samples"]]
    print(
        f"sustained: {run['done']:,} Done ({run['failed']} Failed) in {run['seconds']:.0f} s;"
        f" transfers/s median {run['per_second_median']:.1f}, lowest interval {run['per_second_min']:.1f},"
        f" overall {run['per_second_overall']:.1f} (target ≥ 60); mover CPU per transfer"
        f" {cpu_text(run['mover_cpu_per_transfer_seconds'])}; Prefect's newest event lagged"
        f" {min(lags):.1f}–{max(lags):.1f} s"
    )
    results.save()


if __name__ == "__main__":
    # PostgreSQL's system user must enter the topology's directory: a private temporary one would not do.
    workdir = Path(tempfile.mkdtemp(prefix="pds-bench-scale-", dir="/var/tmp"))
    workdir.chmod(0o755)
    try:
        main(workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
