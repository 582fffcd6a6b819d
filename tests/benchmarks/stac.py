"""STAC search against stac-fastapi-pgstac: the same items, the same machine, the same query.

    .venv/bin/python tests/benchmarks/stac.py [--items 1000000] [--repeat 20] [--deep-repeat 3]
                                              [--pgstac-venv DIR] [--rounds 3] [--json PATH]

Starts a PostgreSQL cluster (Debian's binaries; PostGIS from `postgresql-15-postgis-3` for pgstac),
generates `--items` items (0.1° squares spread over the globe, datetimes over 2026), loads them into
a pds database (the inventory's table, with PostgreSQL's `COPY`) and into a pgstac database (`pypgstac
load`), serves both with uvicorn, and times `POST /search` with bbox (Europe) + datetime (six months),
limit 100: the first page `--repeat` times, then `--deep-repeat` walks of 50 pages following the `next`
links. Prints p50 per page depth for both and the pds/pgstac ratio (goal ≤ 1.0, and flat with depth).
`--rounds` alternating rounds (pgstac first in odd ones) give the median ratio per depth, its spread,
and the CPU milliseconds per request of each side: psutil CPU times of its server's processes plus
the PostgreSQL cluster's (both query the same cluster, one side at a time; pgstac does its search in
the database, pds in Python), deltas around each side's requests.

pgstac and stac-fastapi-pgstac pin other FastAPI versions than Prefect, so they live in their own
virtual environment (default /tmp/pgstac-venv/.venv):

    uv venv /tmp/pgstac-venv/.venv
    uv pip install --python /tmp/pgstac-venv/.venv/bin/python stac-fastapi-pgstac==7.2.0 \\
        'pypgstac[psycopg]==0.10.0' uvicorn
    apt-get install -y postgresql-15-postgis-3
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from catalog.database import make_engine, migrate  # noqa: E402
from catalog.inventory import StacCollection, StacItem  # noqa: E402
from tests.benchmarks._results import Results, add_arguments, anchor_first, tree_cpu  # noqa: E402
from tests.servers._common import free_port, wait_until  # noqa: E402
from tests.servers.postgres import PostgresServer  # noqa: E402

COLLECTION = "bench"
BODY = {
    "collections": [COLLECTION],
    "bbox": [-10, 35, 30, 70],
    "datetime": "2026-03-01T00:00:00Z/2026-09-01T00:00:00Z",
    "limit": 100,
}
DEPTHS = (1, 10, 25, 50)


def generate(count: int) -> Any:
    """Deterministic items: 0.1° squares anywhere in -180..180 × -80..80, times over 2026."""
    rng = random.Random(42)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    for n in range(count):
        x, y = rng.uniform(-180, 179.9), rng.uniform(-80, 79.9)
        when = start + timedelta(seconds=rng.randrange(365 * 86400))
        yield {
            "type": "Feature",
            "stac_version": "1.1.0",
            "stac_extensions": [],
            "id": f"item-{n:07d}",
            "collection": COLLECTION,
            "geometry": {
                "type": "Polygon",
                "coordinates": [[[x, y], [x + 0.1, y], [x + 0.1, y + 0.1], [x, y + 0.1], [x, y]]],
            },
            "bbox": [x, y, x + 0.1, y + 0.1],
            "properties": {"datetime": when.strftime("%Y-%m-%dT%H:%M:%SZ"), "eo:cloud_cover": n % 100},
            "assets": {"data": {"href": f"https://example.org/{n}.tif", "type": "image/tiff"}},
            "links": [],
        }


#: The columns of the inventory's item table, in the order `load_pds` copies them.
ITEM_COLUMNS = (
    "collection_id",
    "id",
    "datetime",
    "start_at",
    "end_at",
    "ranged",
    "minx",
    "miny",
    "maxx",
    "maxy",
    "geometry",
    "properties",
    "assets",
    "links",
    "stac_extensions",
    "data_file_id",
    "updated_at",
)


def load_pds(url: str, count: int) -> float:
    """The collection through SQLAlchemy, then every item with one `COPY … FROM STDIN` (PostgreSQL's
    bulk load: rows stream to the server without a statement per row or per batch)."""
    from psycopg.types.json import Json

    table_columns = {column.name for column in StacItem.__table__.columns}  # type: ignore[attr-defined]
    if table_columns != set(ITEM_COLUMNS):
        raise SystemExit(f"stac_item has columns {sorted(table_columns)}; update ITEM_COLUMNS of this script")
    engine = make_engine(url)
    migrate(engine)
    began = time.monotonic()
    with engine.begin() as connection:
        connection.execute(
            sa.insert(StacCollection.__table__),  # type: ignore[attr-defined]
            [
                {
                    "id": COLLECTION,
                    "body": {
                        "id": COLLECTION,
                        "description": "benchmark",
                        "license": "other",
                        "type": "Collection",
                        "stac_version": "1.1.0",
                        "extent": {
                            "spatial": {"bbox": [[-180, -90, 180, 90]]},
                            "temporal": {"interval": [[None, None]]},
                        },
                    },
                    "updated_at": datetime.now(UTC),
                }
            ],
        )
    now = datetime.now(UTC)
    empty_links, no_extensions = Json([]), Json([])
    raw = engine.raw_connection()
    try:
        with raw.cursor() as cursor:  # type: ignore[attr-defined]
            statement = f"COPY stac_item ({', '.join(ITEM_COLUMNS)}) FROM STDIN"
            with cursor.copy(statement) as copy:
                for item in generate(count):
                    when = datetime.fromisoformat(item["properties"]["datetime"])
                    minx, miny, maxx, maxy = item["bbox"]
                    copy.write_row(
                        (
                            COLLECTION,
                            item["id"],
                            when,
                            when,
                            when,
                            False,
                            minx,
                            miny,
                            maxx,
                            maxy,
                            Json(item["geometry"]),
                            Json(item["properties"]),
                            Json(item["assets"]),
                            empty_links,
                            no_extensions,
                            None,
                            now,
                        )
                    )
        raw.commit()
    finally:
        raw.close()
    with engine.begin() as connection:
        connection.execute(sa.text("ANALYZE stac_item"))
    engine.dispose()
    return time.monotonic() - began


def load_pgstac(venv: Path, dsn: str, count: int, work: Path) -> float:
    collection = work / "collection.json"
    collection.write_text(
        json.dumps(
            {
                "type": "Collection",
                "stac_version": "1.1.0",
                "id": COLLECTION,
                "description": "benchmark",
                "license": "other",
                "links": [],
                "extent": {"spatial": {"bbox": [[-180, -90, 180, 90]]}, "temporal": {"interval": [[None, None]]}},
            }
        )
    )
    items = work / "items.ndjson"
    with items.open("w") as out:
        for item in generate(count):
            out.write(json.dumps(item) + "\n")
    pypgstac = str(venv / "bin" / "pypgstac")
    began = time.monotonic()
    for command in (
        [pypgstac, "migrate", "--dsn", dsn],
        [pypgstac, "load", "collections", str(collection), "--dsn", dsn, "--method", "upsert"],
        [pypgstac, "load", "items", str(items), "--dsn", dsn, "--method", "insert"],
    ):
        subprocess.run(command, check=True, capture_output=True, text=True)
    items.unlink()
    return time.monotonic() - began


def serve(command: list[str], env: dict[str, str], port: int, log: Path) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(command, env=os.environ | env, stdout=log.open("wb"), stderr=subprocess.STDOUT)

    def ready() -> bool:
        try:
            return httpx.get(f"http://127.0.0.1:{port}/", timeout=2).status_code < 500
        except httpx.HTTPError:
            return False

    wait_until(ready, 120, " ".join(command[:3]), log=log)
    return process


def walk(client: httpx.Client, search_url: str, pages: int) -> list[float]:
    """Seconds per page, following next links (POST links carry their body; merge when asked)."""
    timings: list[float] = []
    method, url, body = "POST", search_url, dict(BODY)
    for _ in range(pages):
        began = time.perf_counter()
        response = client.request(method, url, json=body if method == "POST" else None)
        response.raise_for_status()
        page = response.json()
        timings.append(time.perf_counter() - began)
        link = next((link for link in page.get("links", []) if link.get("rel") == "next"), None)
        if link is None or len(page["features"]) < BODY["limit"]:
            break
        method, url = link.get("method", "GET"), link["href"]
        body = (body | link.get("body", {})) if link.get("merge") else link.get("body", {})
    return timings


def measure(name: str, search_url: str, repeat: int, deep_repeat: int) -> tuple[dict[int, float], int]:
    """p50 seconds per page depth, and the number of requests sent."""
    with httpx.Client(timeout=120) as client:
        walk(client, search_url, 1)  # warm the connection pool and caches
        first = [walk(client, search_url, 1)[0] for _ in range(repeat)]
        walks = [walk(client, search_url, max(DEPTHS)) for _ in range(deep_repeat)]
    if any(len(w) < max(DEPTHS) for w in walks):
        raise SystemExit(f"{name}: fewer than {max(DEPTHS)} pages matched; use more --items")
    result = {1: statistics.median(first)}
    for depth in DEPTHS[1:]:
        result[depth] = statistics.median(w[depth - 1] for w in walks)
    return result, 1 + repeat + sum(len(w) for w in walks)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--deep-repeat", type=int, default=3)
    parser.add_argument("--pgstac-venv", type=Path, default=Path("/tmp/pgstac-venv/.venv"))
    add_arguments(parser)
    args = parser.parse_args()
    results = Results("stac", args)
    rows = {
        depth: results.row(
            f"POST /search, page {depth}",
            anchor="stac-fastapi-pgstac on the same PostgreSQL",
            fair=True,
            why="the same items, query and limit",
            unit="request",
            units=1,
            cpu="psutil CPU of the side's server processes and of the PostgreSQL cluster, per request",
            timing="p50 wall seconds of a request at that page depth",
        )
        for depth in DEPTHS
    }

    with tempfile.TemporaryDirectory(prefix="pds-stac-bench-") as tmp:
        work = Path(tmp)
        postgres = PostgresServer(work / "pg").start()
        processes: list[subprocess.Popen[bytes]] = []
        try:
            pds_url = postgres.create_database("pds_stac")
            seconds = load_pds(pds_url, args.items)
            print(f"pds: {args.items:,} items loaded in {seconds:.0f} s", flush=True)
            postgres.create_database("pgstac")
            dsn = f"postgresql://{postgres.user}@{postgres.host}:{postgres.port}/pgstac"
            seconds = load_pgstac(args.pgstac_venv, dsn, args.items, work)
            print(f"pgstac: {args.items:,} items loaded in {seconds:.0f} s", flush=True)

            pds_port, pgstac_port = free_port(), free_port()
            processes.append(
                serve(
                    [sys.executable, "-m", "uvicorn", "--factory", "api.app:app_from_env", "--port", str(pds_port)],
                    {"PDS_DATABASE_URL": pds_url, "PDS_DATA_DIR": str(work / "pds")},
                    pds_port,
                    work / "pds.log",
                )
            )
            processes.append(
                serve(
                    [
                        str(args.pgstac_venv / "bin" / "uvicorn"),
                        "--factory",
                        "stac_fastapi.pgstac.app:create_app",
                        "--port",
                        str(pgstac_port),
                    ],
                    {
                        "PGUSER": postgres.user,
                        "PGPASSWORD": "",
                        "PGHOST": postgres.host,
                        "PGPORT": str(postgres.port),
                        "PGDATABASE": "pgstac",
                    },
                    pgstac_port,
                    work / "pgstac.log",
                )
            )
            postmaster = int((postgres.pgdata / "postmaster.pid").read_text().split()[0])
            urls = {
                "pds": (f"http://127.0.0.1:{pds_port}/stac/search", processes[0].pid),
                "pgstac": (f"http://127.0.0.1:{pgstac_port}/search", processes[1].pid),
            }
            for n in range(1, args.rounds + 1):
                for side in ("pgstac", "pds") if anchor_first(n) else ("pds", "pgstac"):
                    url, pid = urls[side]
                    before = tree_cpu(pid) + tree_cpu(postmaster)
                    p50, requests = measure(side, url, args.repeat, args.deep_repeat)
                    cpu = (tree_cpu(pid) + tree_cpu(postmaster) - before) / requests
                    prefix = "pds" if side == "pds" else "anchor"
                    for depth, row in rows.items():
                        getattr(row, f"{prefix}_seconds").append(p50[depth])
                        getattr(row, f"{prefix}_cpu_seconds").append(cpu)
                    print(f"round {n} {side}: p50 by page {p50}, CPU {1000 * cpu:.1f} ms per request", flush=True)
                results.sample_load()
            pds = {depth: statistics.median(row.pds_seconds) for depth, row in rows.items()}
            pgstac = {depth: statistics.median(row.anchor_seconds) for depth, row in rows.items()}
        finally:
            for process in processes:
                process.terminate()
                process.wait(30)
            postgres.stop()

    print(f"\nPOST /search bbox {BODY['bbox']} datetime {BODY['datetime']} limit 100, {args.items:,} items")
    print(f"{'page':>6} {'pds p50 ms':>11} {'pgstac p50 ms':>14} {'pds/pgstac':>11}")
    for depth in DEPTHS:
        print(
            f"{depth:>6} {pds[depth] * 1000:>11.1f} {pgstac[depth] * 1000:>14.1f} {pds[depth] / pgstac[depth]:>11.2f}"
        )
    results.print()
    results.save()


if __name__ == "__main__":
    main()
