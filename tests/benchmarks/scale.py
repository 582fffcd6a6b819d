"""Scale: two movers on one PostgreSQL queue, sustained transfers per second, claim cost by table size.

    .venv/bin/python tests/benchmarks/scale.py [--transfers 36000] [--minutes 10] [--interval 10]
                                               [--size-kib 4] [--claim-rows 1000 100000 1000000]
                                               [--claims 20] [--skip-claims] [--json PATH]

Starts PostgreSQL (durable: `fsync`, `synchronous_commit` and `full_page_writes` on, unlike the
tests' throwaway cluster), a Prefect server on a database of that cluster (as in production), and
SeaweedFS as the site's S3 server, then measures:

1. **Claim cost by table size.** In a database of its own, the transfers table holds 10^3, then 10^5,
   then 10^6 rows (Done ones, bulk-inserted with COPY, plus 2,000 Queued ones to claim). Each size
   runs `--claims` claims exactly as a mover makes them (`catalog.transfers.claim_ids` with the
   mover's limits) in a transaction that is rolled back, so every claim sees the same rows. It prints
   the wall seconds and CPU seconds per claimed transfer: this process's (the query's client side)
   and the PostgreSQL backend's (psutil, on the backend serving the connection). The cost must stay
   flat as the table grows: the claim reads the queue index, never the whole table.
2. **Sustained throughput.** Two movers (`python -m flows.mover`, two processes, as `pds up` and the
   movers' work pool start them) share one destination whose host is a bucket on SeaweedFS. After
   one warm-up file each, `--transfers` small transfers (`--size-kib` each) are queued in one
   transaction — bulk-inserted transfer rows over a few stored files, as discovery registers them,
   with their `create` history rows — and the script samples every `--interval` seconds for
   `--minutes` (or until all are Done): transfers Done per second in each interval, and Prefect's
   event backlog — the rows of Prefect's `events` table and how far the newest persisted event
   lags behind now (a backlog that grows would show as a growing lag). The target is ≥ 60 transfers/s
   sustained (the median and the lowest interval are printed) with a flat backlog.

With `--json PATH` it writes the claim costs as rows (each table size against 10^3 rows as the
anchor: the ratio is the growth of the cost) and the throughput and backlog series under "extra".
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psutil
import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from catalog.database import make_engine, migrate, session_scope  # noqa: E402
from catalog.models import DataTransfer, HostCreate, TransferHistory  # noqa: E402
from catalog.statuses import TransferStatus  # noqa: E402
from catalog.store import DataStore  # noqa: E402
from catalog.transfers import claim_ids  # noqa: E402
from flows.mover import CLAIM_BYTES, CLAIM_FILES  # noqa: E402
from tests.benchmarks._results import Results, add_arguments, cpu_text, own_cpu  # noqa: E402
from tests.factories import destination, push  # noqa: E402
from tests.ops.stack import PdsProcesses  # noqa: E402
from tests.servers._common import wait_until  # noqa: E402
from tests.servers.postgres import PostgresServer  # noqa: E402
from tests.servers.prefect import PrefectServer  # noqa: E402
from tests.servers.seaweedfs import SeaweedS3Server  # noqa: E402

DESTINATION = "scale"
#: Queued transfers present at every table size of the claim-cost phase (a few claims' worth).
CLAIMABLE = 2000
#: Stored files the queued transfers share (each transfer has its own target name at the site).
DISTINCT_FILES = 50


class DurablePostgres(PostgresServer):
    """The test cluster with durability back on, as a production database runs."""

    def start(self) -> DurablePostgres:
        super().start()
        admin = sa.create_engine(self.database_url("postgres"), isolation_level="AUTOCOMMIT")
        with admin.connect() as connection:
            for setting in ("fsync", "synchronous_commit", "full_page_writes"):
                connection.execute(sa.text(f"ALTER SYSTEM SET {setting} = on"))
            connection.execute(sa.text("SELECT pg_reload_conf()"))
        admin.dispose()
        return self


class PrefectOnPostgres(PrefectServer):
    """The tests' Prefect server process, on a PostgreSQL database instead of SQLite."""

    def __init__(self, root_dir: Path, database_url: str) -> None:
        super().__init__(root_dir)
        self.database_url = database_url.replace("+psycopg", "+asyncpg")

    def env(self) -> dict[str, str]:
        return super().env() | {"PREFECT_API_DATABASE_CONNECTION_URL": self.database_url}


def s3_host(s3: SeaweedS3Server, bucket: str) -> HostCreate:
    return HostCreate(
        name="seaweedfs",
        protocol="s3",
        address=s3.endpoint_url,
        login=s3.access_key,
        password=s3.secret_key,
        directory=f"{bucket}/scale",
        options={"region": s3.region},
    )


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


def backend_cpu(pid: int) -> float:
    times = psutil.Process(pid).cpu_times()
    return times.user + times.system


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
                cpu, cpu_backend, started = own_cpu(), backend_cpu(pid), time.perf_counter()
                claimed = claim_ids(session, "claim-bench", CLAIM_FILES, max_bytes=CLAIM_BYTES)
                elapsed, cpu, cpu_backend = (
                    time.perf_counter() - started,
                    own_cpu() - cpu,
                    backend_cpu(pid) - cpu_backend,
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


def sustained(
    root: Path, engine: sa.Engine, url: str, prefect: PrefectServer, prefect_engine: sa.Engine, args: Any
) -> dict[str, Any]:
    stack = PdsProcesses(root / "movers", prefect.api_url, database_url=url)
    (root / "movers").mkdir()
    store = DataStore.from_url(str(root / "movers" / "data" / "store"))
    data_files = stored_files(engine, store, args.size_kib * 1024)
    pids = []
    try:
        for n in (1, 2):
            pids.append(stack.start_mover(f"mover-{n}").pid)
        warm = [push(engine, store, DESTINATION, f"warm-up/{n}.bin", data=b"w" * 1024)[1][0] for n in range(8)]
        wait_until(lambda: _all_done(engine, warm), 180, "the warm-up files", log=stack.log("mover-1"))
        wait_until(lambda: _movers(engine) == 2, 60, "both movers to beat", log=stack.log("mover-2"))
        cpu_before = {pid: _tree_cpu(pid) for pid in pids}
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
        mover_cpu = sum(_tree_cpu(pid) - cpu_before[pid] for pid in pids)
        failed = _failed(engine)
    finally:
        stack.stop()
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
        "samples": samples,
    }


def _all_done(engine: sa.Engine, ids: list[int]) -> bool:
    with engine.connect() as connection:
        statuses = connection.execute(sa.select(DataTransfer.status).where(DataTransfer.id.in_(ids))).scalars()
        return set(statuses) == {"Done"}


def _movers(engine: sa.Engine) -> int:
    with engine.connect() as connection:
        return int(connection.execute(sa.text("SELECT count(*) FROM mover")).scalar_one())


def _failed(engine: sa.Engine) -> int:
    with engine.connect() as connection:
        return int(
            connection.execute(
                sa.text("SELECT count(*) FROM data_transfer WHERE target LIKE 'queued/%' AND status = 'Failed'")
            ).scalar_one()
        )


def _tree_cpu(pid: int) -> float:
    from tests.benchmarks._results import tree_cpu

    return tree_cpu(pid)


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
    results = Results("scale", args)
    with DurablePostgres(root / "postgres") as postgres, SeaweedS3Server(root / "seaweedfs") as s3:
        bucket = f"scale-{uuid.uuid4().hex[:8]}"
        s3.create_bucket(bucket)
        prefect_url = postgres.create_database("prefect")
        with PrefectOnPostgres(root / "prefect", prefect_url) as prefect:
            prefect_engine = make_engine(prefect_url)
            if not args.skip_claims:
                print("claim cost by the size of the transfers table:")
                url = postgres.create_database("claims")
                engine = make_engine(url)
                migrate(engine)
                destination(engine, DESTINATION, host=s3_host(s3, bucket), max_parallel_transfers=1000)
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
            print(f"sustained: two movers, {args.transfers:,} transfers of {args.size_kib} KiB to SeaweedFS:")
            url = postgres.create_database("scale")
            engine = make_engine(url)
            migrate(engine)
            destination(engine, DESTINATION, host=s3_host(s3, bucket), max_parallel_transfers=1000)
            run = sustained(root, engine, url, prefect, prefect_engine, args)
            engine.dispose()
            prefect_engine.dispose()
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
    workdir = Path(tempfile.mkdtemp(prefix="pds-bench-scale-"))
    try:
        main(workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
