"""Sources that publish their listing as a document on a real HTTP server (nginx): the autoindex
page, a JSON and a CSV file list, a static STAC catalog built with pystac. Discovered files are then
retrieved through the same HTTP host."""

from __future__ import annotations

import hashlib
import json
import os
from datetime import UTC, datetime

import pystac
import pytest
from sqlmodel import Session, col, select

from catalog.database import session_scope
from catalog.models import DataFile, DataTransfer
from catalog.retrieval import claim_fetches
from tasks.discovery import discover_rule
from tasks.retrieval import retrieve
from tests.acquisition.conftest import Source, acquisition_setup, nginx_provider


@pytest.fixture
def site(nginx):
    """A directory served by nginx with five data files; returns (Source, directory, payloads)."""
    payloads = {f"data/f{i}.bin": os.urandom(100 + i) for i in range(4)} | {"data/sub/deep.bin": b"deep"}
    host, root = nginx_provider(nginx, "provider-http", payloads)
    return Source(host, None, root), root, payloads


def targets(engine) -> list[str]:
    with Session(engine) as session:
        return sorted(session.exec(select(DataTransfer.target)))


def fetch_all(rt) -> None:
    with session_scope(rt.engine) as session:
        fetches = claim_fetches(session, "r", 100, default_per_host=100)
    assert all(retrieve(f, "r") for f in fetches)


def assert_stored(rt, payloads, prefix="data/"):
    with Session(rt.engine) as session:
        rows = session.exec(select(DataTransfer, DataFile).join(DataFile).order_by(col(DataTransfer.id))).all()
    assert rows
    for transfer, data_file in rows:
        assert transfer.status == "Queued"
        assert data_file.md5 == hashlib.md5(payloads[prefix + transfer.target]).hexdigest()


def test_the_html_index_page_with_sizes_times_and_sub_directories(rt, site):
    source, root, payloads = site
    host, rule = acquisition_setup(rt.engine, source, directory="data", listing_format="html", max_depth=1)
    outcome = discover_rule(rt.engine, host, rule, by="test")
    assert outcome.registered == 5
    assert targets(rt.engine) == ["f0.bin", "f1.bin", "f2.bin", "f3.bin", "sub/deep.bin"]
    with Session(rt.engine) as session:
        sizes = sorted(session.exec(select(DataFile.size)))
    assert sizes == sorted(len(p) for p in payloads.values())  # the autoindex shows sizes
    assert discover_rule(rt.engine, host, rule, by="test").registered == 0
    fetch_all(rt)
    assert_stored(rt, payloads)


def test_a_json_listing(rt, site):
    source, root, payloads = site
    files = [{"href": f"data/f{i}.bin", "size": 100 + i, "modified": "2026-11-22T10:00:00Z"} for i in range(3)]
    (root / "listing.json").write_text(json.dumps({"files": files + [{"href": "http://elsewhere.invalid/x.bin"}]}))
    host, rule = acquisition_setup(rt.engine, source, directory="listing.json", listing_format="json")
    assert discover_rule(rt.engine, host, rule, by="test").registered == 3
    assert targets(rt.engine) == ["data/f0.bin", "data/f1.bin", "data/f2.bin"]
    fetch_all(rt)
    assert_stored(rt, payloads, prefix="")


def test_a_csv_listing_with_a_name_filter(rt, site):
    source, root, payloads = site
    rows = ["href,size,modified"] + [f"data/f{i}.bin,{100 + i},1700000000" for i in range(4)] + ["data/sub/deep.bin,4,"]
    (root / "listing.csv").write_text("\n".join(rows) + "\n")
    host, rule = acquisition_setup(rt.engine, source, directory="listing.csv", listing_format="csv", pattern="^f")
    assert discover_rule(rt.engine, host, rule, by="test").registered == 4
    assert targets(rt.engine) == ["data/f0.bin", "data/f1.bin", "data/f2.bin", "data/f3.bin"]


def test_a_static_stac_catalog(rt, site):
    source, root, payloads = site
    catalog = pystac.Catalog(id="provider", description="a provider's products")
    for i in range(3):
        item = pystac.Item(
            id=f"scene-{i}",
            geometry={"type": "Point", "coordinates": [0, 0]},
            bbox=[0, 0, 0, 0],
            datetime=datetime(2026, 11, 22, tzinfo=UTC),
            properties={},
        )
        asset = pystac.Asset(href=str(root / f"data/f{i}.bin"), media_type="application/octet-stream")
        asset.extra_fields["file:size"] = 100 + i
        item.add_asset("data", asset)
        catalog.add_item(item)
    catalog.normalize_hrefs(str(root / "stac"))
    catalog.make_all_asset_hrefs_relative()
    catalog.save(catalog_type=pystac.CatalogType.SELF_CONTAINED)
    host, rule = acquisition_setup(rt.engine, source, directory="stac/catalog.json", listing_format="stac")
    assert discover_rule(rt.engine, host, rule, by="test").registered == 3
    # Assets outside the catalog's directory keep their file names as targets.
    assert targets(rt.engine) == ["f0.bin", "f1.bin", "f2.bin"]
    fetch_all(rt)
    with Session(rt.engine) as session:
        md5s = sorted(session.exec(select(DataFile.md5)))
    assert md5s == sorted(hashlib.md5(payloads[f"data/f{i}.bin"]).hexdigest() for i in range(3))


def test_an_unknown_listing_format_is_refused(rt, site):
    source, _, _ = site
    from catalog.errors import InvalidInput

    with pytest.raises(InvalidInput, match="unknown listing format"):
        acquisition_setup(rt.engine, source, listing_format="xml")


@pytest.fixture
def stac_provider(settings, sqlite_engine, store):
    """Another pds, under uvicorn: its Data Portal holds the files, its STAC API lists them."""
    import threading
    import time

    import httpx
    import uvicorn

    from api.app import create_app
    from tests.servers._common import free_port

    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings, engine=sqlite_engine, store=store), port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.05)
    url = f"http://127.0.0.1:{port}"
    with httpx.Client(base_url=url, auth=("admin", "admin"), timeout=30) as http:
        yield url, http
    server.should_exit = True
    thread.join(timeout=10)


def test_a_stac_api_search_paged_by_pystac_client(rt, stac_provider):
    """The search's parameters narrow what is registered; pages are followed; the files are fetched whole."""
    from catalog.models import HostCreate, HostKind

    url, http = stac_provider
    assert http.post("/destinations", json={"name": "products"}).status_code == 201
    payloads = {f"s{i}.bin": os.urandom(1000 + i) for i in range(5)}
    items = []
    for i, (name, payload) in enumerate(payloads.items()):
        assert http.put(f"/portal/products/{name}", content=payload).status_code == 201
        day = 22 if i < 4 else 1  # the last one is outside the searched interval
        items.append(
            {
                "type": "Feature",
                "stac_version": "1.0.0",
                "id": f"scene-{i}",
                "geometry": {"type": "Point", "coordinates": [6.0, 46.0]},
                "bbox": [6.0, 46.0, 6.0, 46.0],
                "properties": {"datetime": f"2026-11-{day:02d}T10:00:00Z"},
                "links": [],
                "assets": {
                    "data": {"href": f"{url}/portal/products/{name}", "file:size": len(payload)},
                    "elsewhere": {"href": f"https://example.org/{name}.xml"},  # another server: skipped
                },
            }
        )
    collection = {
        "id": "provider",
        "description": "a provider's scenes",
        "license": "proprietary",
        "extent": {"spatial": {"bbox": [[-180, -90, 180, 90]]}, "temporal": {"interval": [[None, None]]}},
    }
    assert http.post("/stac/collections", json=collection).status_code == 201
    response = http.post("/stac/collections/provider/items", json={"type": "FeatureCollection", "features": items})
    assert response.status_code == 201, response.text

    host = HostCreate(
        name="provider-stac",
        kind=HostKind.ACQUISITION,
        protocol="http",
        address=url,
        login="admin",
        password="admin",
        options={"webdav": False},
    )
    search = "stac/search?collections=provider&datetime=2026-11-20T00:00:00Z/..&limit=2"
    host_row, rule = acquisition_setup(rt.engine, Source(host, None), directory=search, listing_format="stac-api")
    assert discover_rule(rt.engine, host_row, rule, by="test").registered == 4  # two pages of two
    assert targets(rt.engine) == ["s0.bin", "s1.bin", "s2.bin", "s3.bin"]
    assert discover_rule(rt.engine, host_row, rule, by="test").registered == 0
    fetch_all(rt)
    with Session(rt.engine) as session:
        md5s = sorted(session.exec(select(DataFile.md5)))
    assert md5s == sorted(hashlib.md5(payloads[f"s{i}.bin"]).hexdigest() for i in range(4))


def test_a_stac_api_rule_with_an_unknown_search_parameter_is_refused(rt, site):
    source, _, _ = site
    from catalog.errors import InvalidInput

    with pytest.raises(InvalidInput, match="unknown STAC search parameter 'colections'"):
        acquisition_setup(rt.engine, source, directory="stac/search?colections=s2", listing_format="stac-api")
    with pytest.raises(InvalidInput, match="bad STAC search parameter bbox"):
        acquisition_setup(rt.engine, source, directory="stac/search?bbox=1,2,3", listing_format="stac-api")


def test_an_html_index_with_rounded_sizes_is_retrieved_whole(rt, nginx):
    """nginx with `autoindex_exact_size off` shows "3M" (and bytes below 10,000): a rounded size is
    taken as unknown, since no size is better than a wrong one."""
    payloads = {"rounded/data/big.bin": os.urandom(3 * 1024 * 1024 + 5), "rounded/data/small.bin": os.urandom(1500)}
    host, root = nginx_provider(nginx, "provider-rounded", payloads)
    source = Source(host, None, root)
    host_row, rule = acquisition_setup(rt.engine, source, directory="rounded/data", listing_format="html")
    assert discover_rule(rt.engine, host_row, rule, by="test").registered == 2
    with Session(rt.engine) as session:
        listed = {d.name: d.size for d in session.exec(select(DataFile))}
    assert listed == {"big.bin": None, "small.bin": 1500}  # "3M" is no size
    fetch_all(rt)
    with Session(rt.engine) as session:
        stored = {d.name: d.size for d in session.exec(select(DataFile))}
    assert stored == {"big.bin": 3 * 1024 * 1024 + 5, "small.bin": 1500}
