"""Sources that publish their listing as a document on a real HTTP server (nginx): the autoindex
page, a JSON and a CSV file list, a static STAC catalog built with pystac. Discovered files are then
retrieved through the same HTTP host."""

from __future__ import annotations

import hashlib
import json
import os
from datetime import UTC, datetime

import httpx
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


@pytest.fixture(scope="module")
def large_site(nginx):
    """10,000 files (empty: discovery reads the listing, not the content) served by nginx once for the
    module, with a JSON listing of them giving sizes and times."""
    count = 10_000
    host, root = nginx_provider(nginx, "provider-large", {})
    (root / "data").mkdir(parents=True)
    files = []
    for i in range(count):
        (root / f"data/f{i:05d}.bin").touch()
        files.append({"href": f"data/f{i:05d}.bin", "size": 0, "modified": "2026-11-22T10:00:00Z"})
    (root / "listing.json").write_text(json.dumps({"files": files}))
    return Source(host, None, root), count


def test_a_json_listing_of_ten_thousand_files_then_a_pass_registering_none(rt, large_site):
    source, count = large_site
    host, rule = acquisition_setup(rt.engine, source, directory="listing.json", listing_format="json")
    first = discover_rule(rt.engine, host, rule, by="test")
    assert (first.listed, first.registered) == (count, count)
    with Session(rt.engine) as session:
        registered = session.exec(select(DataTransfer.target, DataTransfer.status)).all()
    assert len(registered) == count and {status for _, status in registered} == {"Preset"}
    assert sorted(target for target, _ in registered)[::2500] == [f"data/f{i:05d}.bin" for i in range(0, count, 2500)]
    second = discover_rule(rt.engine, host, rule, by="test")
    assert (second.listed, second.registered) == (count, 0)


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

    import httpx

    from api.app import create_app
    from tests.servers._common import free_port, serving

    app = create_app(settings, engine=sqlite_engine, store=store)
    with serving(app, free_port()) as url, httpx.Client(base_url=url, auth=("admin", "admin"), timeout=30) as http:
        yield url, http, sqlite_engine


def test_a_stac_api_search_paged_by_pystac_client(rt, stac_provider):
    """The search's parameters narrow what is registered; pages are followed; the files are fetched
    whole; the items are published as the API served them."""
    from catalog.inventory import StacCollection, StacItem
    from catalog.models import HostCreate, HostKind
    from catalog.stac import set_publication

    url, http, provider_engine = stac_provider
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
    # Written into its inventory as a provider's catalogue holds them: items written through its
    # Transactions API would be served through its own proxy, not from its Data Portal.
    from catalog.inventory import item_row, put_item

    with session_scope(provider_engine) as session:
        for source in items:
            put_item(session, item_row(source, "provider"), mode="create")

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
    with session_scope(rt.engine) as session:
        set_publication(session, "acq", collection_id="mirror")
    assert discover_rule(rt.engine, host_row, rule, by="test").registered == 4  # two pages of two
    assert targets(rt.engine) == ["s0.bin", "s1.bin", "s2.bin", "s3.bin"]
    # the destination is published: the API's items are kept as they were (and their collection's license)
    with Session(rt.engine) as session:
        mirrored = {i.id: i for i in session.exec(select(StacItem))}
        assert session.get(StacCollection, "mirror").body["license"] == "proprietary"
    assert sorted(mirrored) == ["scene-0", "scene-1", "scene-2", "scene-3"]
    for source in items[:4]:
        assert mirrored[source["id"]].properties == source["properties"]
        assert mirrored[source["id"]].geometry == source["geometry"]
        assert (
            mirrored[source["id"]].assets["data"]["alternate"]["upstream"]["href"] == source["assets"]["data"]["href"]
        )
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


# --- A provider's static STAC catalogue, harvested into the STAC inventory ------------------------

EO = "https://stac-extensions.github.io/eo/v1.1.0/schema.json"
PROJECTION = "https://stac-extensions.github.io/projection/v1.2.0/schema.json"
ALTERNATE = "https://stac-extensions.github.io/alternate-assets/v1.2.0/schema.json"
AUTHENTICATION = "https://stac-extensions.github.io/authentication/v1.1.0/schema.json"
SCENES = {  # id: (lower-left corner, 1°×2° footprint, datetime or (start, end), extra properties)
    "scene-0": ((5.0, 45.0), "2026-11-20T10:00:00Z", {"eo:cloud_cover": 5, "platform": "s2a"}),
    "scene-1": ((10.0, 50.0), "2026-11-21T10:30:00Z", {"eo:cloud_cover": 60, "proj:epsg": 32632}),
    "scene-2": ((20.0, 40.0), ("2026-11-01T00:00:00Z", "2026-11-30T23:59:59Z"), {"platform": "s2b"}),
}


def _multihash_md5(payload: bytes) -> str:
    return "d510" + hashlib.md5(payload).hexdigest()


def write_provider_catalogue(
    root, payloads: dict[str, bytes], updated: dict[str, str] | None = None, scenes: dict = SCENES
) -> None:
    """A static catalogue as a provider publishes one (pystac, relative hrefs): a root catalog, a
    collection with its own metadata, the items of `scenes` with a data asset and a thumbnail each."""
    collection = pystac.Collection(
        id="provider-scenes",
        description="a provider's scenes",
        title="Provider scenes",
        license="CC-BY-4.0",
        keywords=["optical", "test"],
        providers=[pystac.Provider(name="Provider", roles=[pystac.ProviderRole.PRODUCER], url="https://example.org")],
        summaries=pystac.Summaries({"platform": ["s2a", "s2b"]}),
        extent=pystac.Extent(
            pystac.SpatialExtent([[5.0, 40.0, 22.0, 52.0]]),
            pystac.TemporalExtent([[datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 11, 30, tzinfo=UTC)]]),
        ),
    )
    for item_id, ((x, y), when, extra) in scenes.items():
        ranged = isinstance(when, tuple)
        start, end = (datetime.fromisoformat(w) for w in when) if ranged else (None, None)
        properties = dict(extra)
        if updated and item_id in updated:
            properties["updated"] = updated[item_id]
        item = pystac.Item(
            id=item_id,
            geometry={"type": "Polygon", "coordinates": [[[x, y], [x + 1, y], [x + 1, y + 2], [x, y + 2], [x, y]]]},
            bbox=[x, y, x + 1, y + 2],
            datetime=None if ranged else datetime.fromisoformat(when),
            start_datetime=start,
            end_datetime=end,
            properties=properties,
            stac_extensions=[EO] if "eo:cloud_cover" in extra else [],  # scene-1 forgets to declare proj
        )
        for key, suffix, kind, roles in (
            ("data", "tif", pystac.MediaType.GEOTIFF, ["data"]),
            ("thumbnail", "png", pystac.MediaType.PNG, ["thumbnail"]),
        ):
            payload = payloads[f"data/{item_id}.{suffix}"]
            asset = pystac.Asset(href=str(root / f"data/{item_id}.{suffix}"), media_type=kind, roles=roles)
            asset.extra_fields |= {"file:size": len(payload), "file:checksum": _multihash_md5(payload)}
            item.add_asset(key, asset)
        item.add_link(pystac.Link("license", "https://example.org/licence.html", "text/html"))
        collection.add_item(item)
    catalog = pystac.Catalog(id="provider", description="a provider's products")
    catalog.add_child(collection)
    catalog.normalize_hrefs(str(root / "stac"))
    catalog.make_all_asset_hrefs_relative()
    catalog.save(catalog_type=pystac.CatalogType.SELF_CONTAINED)


def source_items(root) -> dict[str, dict]:
    """The provider's items as pystac reads them back, asset hrefs absolute (file paths under root)."""
    catalog = pystac.Catalog.from_file(str(root / "stac/catalog.json"))
    found = {}
    for item in catalog.get_items(recursive=True):
        item.make_asset_hrefs_absolute()
        found[item.id] = item.to_dict(include_self_link=False, transform_hrefs=False)
    return found


@pytest.fixture
def inventory_api(rt, monkeypatch):
    """The API under uvicorn on the runtime's database and store; items' hrefs name it."""

    import httpx

    from api.app import create_app
    from tests.servers._common import free_port, serving

    port = free_port()
    monkeypatch.setattr(rt.settings, "public_url", f"http://127.0.0.1:{port}")
    app = create_app(rt.settings, engine=rt.engine, store=rt.store)
    with serving(app, port) as url, httpx.Client(base_url=url, auth=("admin", "admin"), timeout=30) as http:
        yield url, http


def read_through_proxy(rt, http, href: str) -> bytes:
    """GET a proxied href as the administrator while this process plays the proxy's fetcher and the
    retriever: a miss is fetched from its upstream (a file registered without retrieval by the
    retriever, into the Data Store, then copied), then served (a request held meanwhile gets it, else
    a retry)."""
    import time
    from concurrent.futures import ThreadPoolExecutor

    from catalog.models import utcnow
    from catalog.proxy import claim_fetches as claim_proxy_fetches
    from tasks.proxy_fetch import fetch_into_cache

    def fetch(job) -> None:
        fetch_into_cache(rt.engine, rt.settings.resolved_proxy_cache_dir(), job, store=rt.store, retrieval_wait=30)

    with ThreadPoolExecutor(2) as pool:
        for _ in range(3):
            answer = pool.submit(http.get, href)
            fetching: list = []
            while not answer.done() or not all(f.done() for f in fetching):
                with session_scope(rt.engine) as session:
                    jobs = claim_proxy_fetches(session, "test", 10, now=utcnow())
                fetching += [pool.submit(fetch, job) for job in jobs]
                with session_scope(rt.engine) as session:
                    retrievals = claim_fetches(session, "r", 100, default_per_host=100)
                assert all(retrieve(f, "r") for f in retrievals)
                time.sleep(0.05)
            for done in fetching:
                done.result()
            response = answer.result()
            if response.status_code == 200:
                return response.content
            assert response.status_code in (202, 503), response.text
    raise AssertionError(f"{href} was never served")


@pytest.mark.parametrize("no_retrieval", [False, True], ids=["retrieved", "no-retrieval"])
def test_a_static_stac_catalogue_is_harvested_as_the_provider_published_it(rt, nginx, inventory_api, no_retrieval):
    """Items keep geometry, bbox, time, properties, links, extensions and assets' fields, with and
    without retrieval; every asset is served by the proxy (upstream kept as alternate); searches by
    bbox and datetime find them; the collection keeps the provider's metadata and covers its items;
    an item changed upstream is updated and its stale cached copy dropped."""
    from pystac_client import Client

    from catalog.proxy import get_asset, set_policy
    from catalog.stac import set_publication

    url, http = inventory_api
    payloads = {f"data/{i}.{s}": os.urandom(200 + n) for n, i in enumerate(SCENES) for s in ("tif", "png")}
    host, root = nginx_provider(nginx, "provider-stac-static", payloads)
    write_provider_catalogue(root, payloads)
    source = Source(host, None, root)
    host_row, rule = acquisition_setup(
        rt.engine, source, directory="stac/catalog.json", listing_format="stac", no_retrieval=no_retrieval
    )
    with session_scope(rt.engine) as session:
        set_publication(session, "acq", collection_id="scenes")
    assert discover_rule(rt.engine, host_row, rule, by="test").registered == 6
    if not no_retrieval:
        fetch_all(rt)
    with session_scope(rt.engine) as session:
        set_policy(session, "scenes", sync_wait_seconds=0)  # a miss answers at once; this test fetches

    sources = source_items(root)
    upstream_base = f"{nginx.base_url}/{root.name}/"
    for item_id, expected in sources.items():
        harvested = http.get(f"/stac/collections/scenes/items/{item_id}").json()
        assert harvested["geometry"] == expected["geometry"]
        assert harvested["bbox"] == expected["bbox"]
        # datetime or start/end, and the rest; and, the collection being private, how to authenticate
        schemes = harvested["properties"].pop("auth:schemes")
        assert harvested["properties"] == expected["properties"]
        assert {"basic", "bearer"} <= set(schemes)
        assert set(expected["stac_extensions"]) | {ALTERNATE, AUTHENTICATION} <= set(harvested["stac_extensions"])
        if "proj:epsg" in expected["properties"]:
            assert PROJECTION in harvested["stac_extensions"]  # declared although the provider did not
        assert [k for k in harvested["links"] if k["rel"] == "license"] == [
            {"rel": "license", "href": "https://example.org/licence.html", "type": "text/html"}
        ]
        assert harvested["assets"].keys() == expected["assets"].keys()
        for key, asset in expected["assets"].items():
            got = harvested["assets"][key]
            for field in ("roles", "type", "file:size", "file:checksum"):
                assert got[field] == asset[field], (item_id, key, field)
            assert got["href"] == f"{url}/proxy/scenes/{item_id}/{key}"
            upstream = asset["href"].replace(str(root) + "/", upstream_base)
            assert got["alternate"]["upstream"]["href"] == upstream
            assert read_through_proxy(rt, http, got["href"]) == payloads[upstream[len(upstream_base) :]]

    # pystac-client's searches return exactly the items whose source metadata matches
    import base64

    admin = "Basic " + base64.b64encode(b"admin:admin").decode()
    client = Client.open(f"{url}/stac/", headers={"Authorization": admin})

    def found(**search):
        return sorted(i.id for i in client.search(collections=["scenes"], **search).items())

    assert found(bbox=[4.5, 44.5, 5.5, 45.5]) == ["scene-0"]
    assert found(bbox=[9, 40, 21, 52]) == ["scene-1", "scene-2"]
    assert found(datetime="2026-11-21T00:00:00Z/2026-11-22T00:00:00Z") == ["scene-1", "scene-2"]
    assert found(datetime="2026-11-20T09:00:00Z/2026-11-20T11:00:00Z") == ["scene-0", "scene-2"]
    assert found(bbox=[4.5, 44.5, 5.5, 45.5], datetime="2026-11-21T00:00:00Z/..") == []
    assert found(datetime="2026-12-01T00:00:00Z/..") == []

    collection = http.get("/stac/collections/scenes").json()
    assert collection["license"] == "CC-BY-4.0" and collection["title"] == "Provider scenes"
    assert collection["keywords"] == ["optical", "test"] and collection["summaries"]["platform"] == ["s2a", "s2b"]
    assert collection["providers"][0]["name"] == "Provider"
    (minx, miny, maxx, maxy), *_ = collection["extent"]["spatial"]["bbox"]
    for item in sources.values():
        assert (
            minx <= item["bbox"][0] and miny <= item["bbox"][1] and maxx >= item["bbox"][2] and maxy >= item["bbox"][3]
        )
    (start, end), *_ = collection["extent"]["temporal"]["interval"]
    assert start <= "2026-11-01T00:00:00Z" and end >= "2026-11-30T23:59:59Z"

    # The same anonymous user: the collection's proxy policy is private, so it is not listed either.
    anonymous = httpx.get(f"{url}/stac/collections", timeout=30).json()["collections"]
    assert "scenes" not in [c["id"] for c in anonymous]
    assert httpx.get(f"{url}/proxy/scenes/scene-0/data", timeout=30).status_code == 401
    with session_scope(rt.engine) as session:
        set_policy(session, "scenes", public=True)
    http.put("/proxied-collections/scenes", json={"public": True}).raise_for_status()  # the proxy forgets its copy
    anonymous = httpx.get(f"{url}/stac/collections", timeout=30).json()["collections"]
    assert "scenes" in [c["id"] for c in anonymous]
    assert httpx.get(f"{url}/proxy/scenes/scene-0/data", timeout=30).status_code == 200

    # Upstream, scene-1 changes (its data and its metadata): the next pass updates the item, the
    # cached copy is dropped, and the proxy serves the new bytes.
    payloads["data/scene-1.tif"] = os.urandom(777)
    (root / "data/scene-1.tif").write_bytes(payloads["data/scene-1.tif"])
    write_provider_catalogue(root, payloads, updated={"scene-1": "2026-11-25T00:00:00Z"})
    old_cache = get_asset_cache(rt, "scene-1")
    assert discover_rule(rt.engine, host_row, rule, by="test").registered == 2
    if not no_retrieval:
        fetch_all(rt)
    with Session(rt.engine) as session:
        assert get_asset(session, "scenes", "scene-1", "data").cache_file is None
    assert not old_cache.exists()
    harvested = http.get("/stac/collections/scenes/items/scene-1").json()
    assert harvested["properties"]["updated"] == "2026-11-25T00:00:00Z"
    assert harvested["assets"]["data"]["file:size"] == 777
    assert read_through_proxy(rt, http, harvested["assets"]["data"]["href"]) == payloads["data/scene-1.tif"]


def get_asset_cache(rt, item_id):
    from catalog.proxy import get_asset

    with Session(rt.engine) as session:
        row = get_asset(session, "scenes", item_id, "data")
        assert row.cache_file
        return rt.settings.resolved_proxy_cache_dir() / row.cache_file


def test_an_unretrieved_file_of_a_published_destination_is_served_by_the_proxy(rt, site, inventory_api):
    """Not only STAC sources: a file a JSON listing registers without retrieval is published at once,
    and its proxied href fetches it from the acquisition host (with the host's credentials)."""
    from catalog.proxy import set_policy
    from catalog.stac import set_publication

    source, root, payloads = site
    url, http = inventory_api
    (root / "listing.json").write_text(json.dumps({"files": [{"href": "data/f1.bin", "size": 101}]}))
    host, rule = acquisition_setup(
        rt.engine, source, directory="listing.json", listing_format="json", no_retrieval=True
    )
    with session_scope(rt.engine) as session:
        set_publication(session, "acq", collection_id="files")
    assert discover_rule(rt.engine, host, rule, by="test").registered == 1
    with session_scope(rt.engine) as session:
        set_policy(session, "files", sync_wait_seconds=0)
    item = http.get("/stac/collections/files/items/f1").json()
    assert item["properties"]["order:status"] == "orderable"
    assert item["assets"]["data"]["alternate"]["upstream"]["href"].endswith(f"/{root.name}/data/f1.bin")
    assert read_through_proxy(rt, http, item["assets"]["data"]["href"]) == payloads["data/f1.bin"]
