"""What one poll of each long-lived worker costs as what waits in the database grows.

    python tests/benchmarks/polls.py --rows 100000 --rounds 3

The mover, the retriever and the proxy fetcher poll the database several times a second while they
have nothing to do (every 0.25 s, 0.5 s and 0.05 s by default), and on SQLite a claim holds the one
write lock for as long as it takes. A poll must therefore cost the same whatever waits and cannot be
taken. Two SQLite databases are filled the same way, one with `--rows` of each kind and the anchor with
1,000:

- transfers registered without retrieval that nobody asked for (Preset, awaiting a request), and
  proxied assets nobody read (never fetched): what harvesting a large catalogue leaves;
- Queued transfers with a lifetime, to a destination already at its cap of transfers at once (a slow
  site's backlog).

Each poll is what the worker does when idle: the mover's expiry and claim (`expire_due`, `claim_ids`
with its limits), the retriever's claim (`claim_fetches`), the proxy fetcher's read for queued
fetches. `--polls` of each per round, alternating which database goes first; the ratio is the cost
at `--rows` over the cost at 1,000 (flat: about 1).
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from catalog.config import create_host  # noqa: E402
from catalog.database import make_engine, migrate, session_scope  # noqa: E402
from catalog.models import HostCreate  # noqa: E402
from catalog.retrieval import claim_fetches  # noqa: E402
from catalog.statuses import TransferStatus  # noqa: E402
from catalog.transfers import claim_ids, expire_due  # noqa: E402
from flows.mover import CLAIM_BYTES, CLAIM_FILES  # noqa: E402
from flows.proxy_fetch import _fetches_queued  # noqa: E402
from tests.benchmarks._results import Results, add_arguments, anchor_first, own_cpu  # noqa: E402
from tests.factories import destination, local_host  # noqa: E402

ANCHOR_ROWS = 1000


def fill(path: Path, rows: int) -> sa.Engine:
    """A migrated database holding `rows` of each kind of waiting work (see the module's text)."""
    engine = make_engine(f"sqlite:///{path}")
    migrate(engine)
    destination(engine, "slow", host=local_host("slow-host", str(path.parent / "slow")), max_parallel_transfers=2)
    destination(engine, "acq", host=local_host("acq-host", str(path.parent / "acq")))
    with session_scope(engine) as session:
        source = HostCreate(name="provider", protocol="file", address=str(path.parent / "src"), kind="acquisition")
        create_host(session, source, known_protocols=frozenset({"file"}))
    now = datetime.now(UTC).replace(tzinfo=None)
    at, later = now.isoformat(sep=" "), (now + timedelta(days=1)).isoformat(sep=" ")
    files = range(1, 2 * rows + 3)  # on-demand files, then the backlog's files
    transfer = (
        "INSERT INTO data_transfer (id, data_file_id, destination_name, target, status, priority, queued_at,"
        " scheduled_at, expires_at, start_count, requeue_count, bytes_sent, updated_at, awaiting_request,"
        " host_name) VALUES (?, ?, ?, ?, ?, 50, ?, ?, ?, 0, 0, 0, ?, ?, ?)"
    )
    with sqlite3.connect(path) as raw:
        raw.executemany(
            "INSERT INTO data_file (id, name, meta, created_at) VALUES (?, ?, '{}', ?)",
            ((i, f"f{i}.bin", at) for i in files),
        )
        raw.executemany(
            "INSERT INTO source_file (data_file_id, host_name, path, on_demand, standby, requeue_on_failure,"
            " registered_at) VALUES (?, 'provider', ?, 1, 0, 0, ?)",
            ((i, f"/data/f{i}.bin", at) for i in range(1, rows + 1)),
        )
        preset, queued, running = (
            s.value for s in (TransferStatus.PRESET, TransferStatus.QUEUED, TransferStatus.TRANSFERRING)
        )
        raw.executemany(
            transfer, ((i, i, "acq", f"f{i}.bin", preset, at, at, None, at, 1, None) for i in range(1, rows + 1))
        )
        backlog = range(rows + 1, 2 * rows + 1)
        raw.executemany(transfer, ((i, i, "slow", f"b{i}.bin", queued, at, at, later, at, 0, None) for i in backlog))
        raw.executemany(  # the two that hold the destination at its cap
            transfer, ((i, i, "slow", f"r{i}.bin", running, at, at, later, at, 0, "slow-host") for i in files[-2:])
        )
        raw.execute(
            "INSERT INTO proxy_dataset (collection, mode, sync_wait_seconds, retention, public, readers,"
            " presign_seconds) VALUES ('harvested', 'CACHE', 0, 'PERMANENT', 1, '[]', 0)"
        )
        raw.executemany(
            "INSERT INTO proxy_asset (collection, item, asset, upstream_href, media_type, fetch_status, fetch_bytes,"
            " fetch_attempts, fetch_count) VALUES ('harvested', ?, 'data', ?, 'image/tiff', 'NONE', 0, 0, 0)",
            ((f"item-{i}", f"https://provider.example/{i}.tif") for i in range(rows)),
        )
    return engine


def polls(engine: sa.Engine) -> dict[str, Callable[[], object]]:
    """One idle poll of each worker, as each makes it (nothing is claimable, so nothing changes)."""

    def mover() -> object:
        with session_scope(engine) as session:
            expire_due(session, by="mover-1")
            return claim_ids(session, "mover-1", CLAIM_FILES, max_bytes=CLAIM_BYTES, stale_after=timedelta(seconds=60))

    def retriever() -> object:
        with session_scope(engine) as session:
            return claim_fetches(session, "retriever-1", 4, default_per_host=2)

    return {"mover": mover, "retriever": retriever, "proxy fetcher": lambda: _fetches_queued(engine)}


def time_polls(poll: Callable[[], object], count: int) -> tuple[float, float]:
    """Wall and CPU seconds of `count` polls; each must find nothing to take."""
    started, cpu = time.perf_counter(), own_cpu()
    for _ in range(count):
        if poll():
            raise SystemExit("a poll took work: the databases are not as this benchmark fills them")
    return time.perf_counter() - started, own_cpu() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000, help="waiting rows of each kind (default 100000)")
    parser.add_argument("--polls", type=int, default=100, help="polls of each worker per round (default 100)")
    add_arguments(parser)
    args = parser.parse_args()
    results = Results("polls", args)
    with tempfile.TemporaryDirectory(prefix="pds-bench-polls-") as tmp:
        print(f"filling two databases: {args.rows:,} and {ANCHOR_ROWS:,} rows of each kind")
        (Path(tmp) / "big").mkdir()
        (Path(tmp) / "anchor").mkdir()
        big, small = fill(Path(tmp) / "big" / "pds.db", args.rows), fill(Path(tmp) / "anchor" / "pds.db", ANCHOR_ROWS)
        for round_number in range(1, args.rounds + 1):
            order = [("anchor", small), ("pds", big)]
            if not anchor_first(round_number):
                order.reverse()
            for side, engine in order:
                for worker, poll in polls(engine).items():
                    wall, cpu = time_polls(poll, args.polls)
                    row = results.row(
                        f"{worker} poll, {args.rows:,} rows of each kind waiting",
                        anchor=f"the same poll, {ANCHOR_ROWS:,} rows of each kind",
                        fair=True,
                        why="the same databases but for the number of rows; nothing is claimable in either",
                        unit="poll",
                        units=args.polls,
                        cpu="this process (SQLite runs in it)",
                    )
                    if side == "pds":
                        row.pds_seconds.append(wall)
                        row.pds_cpu_seconds.append(cpu)
                    else:
                        row.anchor_seconds.append(wall)
                        row.anchor_cpu_seconds.append(cpu)
            results.sample_load()
            print(f"round {round_number} done")
        big.dispose()
        small.dispose()
    results.print()
    results.save()


if __name__ == "__main__":
    main()
