"""Data files become STAC Items: GeoTIFF footprint and time, proxy hrefs, unretrieved data, harvesting."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin
from sqlmodel import select

from catalog.database import session_scope
from catalog.errors import InvalidInput, NotFound
from catalog.inventory import StacCollection, StacItem, item_row, put_collection, put_item, resolve_asset
from catalog.models import DataFile, DataTransfer
from catalog.proxy import get_asset, register_asset
from catalog.stac import (
    ALTERNATE_ASSETS,
    FILE,
    ORDER,
    PROJECTION,
    declare_extensions,
    harvest_destination,
    harvest_stored_data_file,
    set_publication,
)
from catalog.stac_search import SearchRequest, search
from tests.factories import destination, push

PUBLIC = "https://pds.example.org"


def geotiff(path, *, when="2026:11:20 10:30:00"):
    """A 10×10 GeoTIFF in UTM zone 33N (EPSG:32633), 1 km pixels, origin 500 km E / 5,000 km N."""
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=10,
        height=10,
        count=1,
        dtype="uint8",
        crs="EPSG:32633",
        transform=from_origin(500_000, 5_000_000, 1000, 1000),
    ) as dataset:
        dataset.write(np.arange(100, dtype="uint8").reshape(1, 10, 10))
        dataset.update_tags(TIFFTAG_DATETIME=when)
    return path.read_bytes()


@pytest.fixture
def site(engine):
    destination(engine, "site1")
    return "site1"


def test_a_pushed_geotiff_becomes_an_item_with_its_footprint_time_and_proxy_href(engine, store, site, tmp_path):
    with session_scope(engine) as session:
        set_publication(session, site, collection_id="scenes", item_id_template="$stem", extractor="geotiff")
    data_file_id, _ = push(engine, store, site, "2026/scene-7.tif", data=geotiff(tmp_path / "scene.tif"))

    with session_scope(engine) as session:
        assert harvest_stored_data_file(session, store, data_file_id, public_url=PUBLIC).items == 1
    with session_scope(engine) as session:
        item = session.exec(select(StacItem).where(StacItem.id == "scene-7")).one()
        resolved = resolve_asset(session, "scenes", "scene-7", "data")
        assert resolve_asset(session, "scenes", "scene-7", "thumbnail") is None
        assert resolve_asset(session, "scenes", "nope", "data") is None

    # 500–510 km E, 4,990–5,000 km N in zone 33 (central meridian 15°E): 15.0–15.127°E, 45.063–45.153°N
    assert item.minx == pytest.approx(15.0, abs=1e-6) and item.maxx == pytest.approx(15.1272, abs=1e-4)
    assert item.miny == pytest.approx(45.0634, abs=1e-4) and item.maxy == pytest.approx(45.1535, abs=1e-4)
    assert item.geometry["type"] == "Polygon"
    assert item.datetime.isoformat() == "2026-11-20T10:30:00+00:00"
    assert item.properties["order:status"] == "succeeded"
    assert item.properties["proj:epsg"] == 32633
    assert {PROJECTION, FILE, ALTERNATE_ASSETS, ORDER} <= set(item.stac_extensions)  # every field pds writes
    asset = item.assets["data"]
    assert asset["href"] == f"{PUBLIC}/proxy/scenes/scene-7/data"
    assert asset["type"] == "image/tiff; application=geotiff"
    with session_scope(engine) as session:
        data_file = session.get(DataFile, data_file_id)
    assert asset["alternate"]["upstream"]["href"].endswith(data_file.store_key)
    assert resolved.href == asset["alternate"]["upstream"]["href"]
    assert resolved.data_file_id == data_file_id
    assert resolved.media_type == asset["type"]

    # the item is found by a search over its footprint, and not outside it
    with session_scope(engine) as session:
        inside, _ = search(session, SearchRequest.parse({"bbox": "15.05,45.08,15.06,45.09"}, get=True))
        outside, _ = search(session, SearchRequest.parse({"bbox": "16,46,17,47"}, get=True))
    assert [i.id for i in inside] == ["scene-7"] and outside == []

    # the collection made for the publication takes its first item's extent (not the whole world)
    with session_scope(engine) as session:
        extent = session.get(StacCollection, "scenes").body["extent"]
    assert extent["spatial"]["bbox"] == [[item.minx, item.miny, item.maxx, item.maxy]]
    assert extent["temporal"]["interval"] == [["2026-11-20T10:30:00Z", "2026-11-20T10:30:00Z"]]


def test_metadata_extractor_and_unretrieved_data_files_say_they_are_orderable(engine, store, site):
    with session_scope(engine) as session:
        set_publication(session, site, collection_id="grib", item_id_template="${stream}_$meta_run")
        data_file = DataFile(
            name="an.grib",
            stream="oper",
            meta={
                "run": "2026112300",
                "bbox": "-10,35,30,70",
                "datetime": "2026-11-23T00:00:00Z",
                "href": "https://upstream.example.org/an.grib",
            },
        )
        session.add(data_file)
        session.flush()
        session.add(DataTransfer(data_file_id=data_file.id, destination_name=site, target="an.grib", status="Arriving"))
    with session_scope(engine) as session:
        assert harvest_destination(session, store, site, public_url=PUBLIC).items == 1
    with session_scope(engine) as session:
        item = session.get(StacItem, ("grib", "oper_2026112300"))
        resolved = resolve_asset(session, "grib", "oper_2026112300", "data")
    assert item.properties["order:status"] == "orderable"
    assert item.properties["pds:stream"] == "oper" and item.properties["run"] == "2026112300"
    assert (item.minx, item.miny, item.maxx, item.maxy) == (-10, 35, 30, 70)
    assert item.datetime.isoformat() == "2026-11-23T00:00:00+00:00"
    assert resolved.href == "https://upstream.example.org/an.grib" and resolved.media_type == "application/x-grib"


def test_harvesting_again_updates_items_and_unpublished_destinations_are_refused(engine, store, site):
    with pytest.raises(NotFound, match="not published"), session_scope(engine) as session:
        harvest_destination(session, store, site, public_url=PUBLIC)
    with pytest.raises(InvalidInput, match="unknown extractor"), session_scope(engine) as session:
        set_publication(session, site, collection_id="c", extractor="nonsense")
    with pytest.raises(NotFound), session_scope(engine) as session:
        set_publication(session, "nowhere", collection_id="c")

    first, _ = push(engine, store, site, "a.bin", meta={"datetime": "2026-01-01T00:00:00Z"})
    second, _ = push(engine, store, site, "b.bin", meta={"datetime": "2026-01-02T00:00:00Z"})
    with session_scope(engine) as session:  # pushed before publishing: nothing yet
        assert session.exec(select(StacItem)).all() == []
        set_publication(session, site, collection_id="files")
    with session_scope(engine) as session:
        assert harvest_destination(session, store, site, public_url=PUBLIC).items == 2
    with session_scope(engine) as session:
        assert harvest_destination(session, store, site, public_url=PUBLIC).items == 2
        ids = sorted((i.id, i.data_file_id) for i in session.exec(select(StacItem)).all())
    assert ids == [("a", first), ("b", second)]


def test_a_file_the_extractor_cannot_read_does_not_undo_the_push(engine, store, site):
    with session_scope(engine) as session:
        set_publication(session, site, collection_id="scenes", extractor="geotiff")
    data_file_id, _ = push(engine, store, site, "broken.tif", data=b"not a tiff")
    with session_scope(engine) as session:
        result = harvest_stored_data_file(session, store, data_file_id, public_url=PUBLIC)
    assert result.items == 0 and "not recognized as being in a supported file format" in result.failed[data_file_id]
    with session_scope(engine) as session:
        assert session.get(DataFile, data_file_id).store_key is not None
        assert session.exec(select(StacItem)).all() == []


def _square(item_id, x, y, when):
    return {
        "type": "Feature",
        "stac_version": "1.1.0",
        "id": item_id,
        "geometry": {"type": "Polygon", "coordinates": [[[x, y], [x + 1, y], [x + 1, y + 1], [x, y + 1], [x, y]]]},
        "properties": {"datetime": when},
        "assets": {},
        "links": [],
    }


def test_collection_extents_grow_as_items_arrive(engine):
    with session_scope(engine) as session:
        put_collection(session, {"id": "auto"}, create=True)  # no extent: the whole world, open in time
        extent = {"spatial": {"bbox": [[0, 0, 1, 1]]}, "temporal": {"interval": [["2026-01-01T00:00:00Z", None]]}}
        put_collection(session, {"id": "given", "extent": extent}, create=True)
        for collection in ("auto", "given"):
            for body in (_square("a", 10, 20, "2026-03-01T00:00:00Z"), _square("b", -5, 30, "2026-02-01T00:00:00Z")):
                put_item(session, item_row(body, collection), mode="create")
    with session_scope(engine) as session:
        auto = session.get(StacCollection, "auto").body["extent"]
        given = session.get(StacCollection, "given").body["extent"]
    assert auto["spatial"]["bbox"] == [[-5, 20, 11, 31]]
    assert auto["temporal"]["interval"] == [["2026-02-01T00:00:00Z", "2026-03-01T00:00:00Z"]]
    assert given["spatial"]["bbox"] == [[-5, 0, 11, 31]]  # the collection's own extent, grown
    assert given["temporal"]["interval"] == [["2026-01-01T00:00:00Z", None]]  # open end stays open


def test_extensions_are_declared_for_the_fields_written_once_per_extension():
    body = {
        "properties": {"proj:epsg": 4326, "order:status": "orderable"},
        "assets": {"a": {"href": "x", "file:size": 3, "alternate": {"upstream": {"href": "y"}}}},
        "stac_extensions": ["https://stac-extensions.github.io/projection/v2.0.0/schema.json"],
    }
    declared = declare_extensions(body)["stac_extensions"]
    assert declared == [
        "https://stac-extensions.github.io/projection/v2.0.0/schema.json",  # the provider's version kept
        ALTERNATE_ASSETS,
        ORDER,
        FILE,
    ]
    assert declare_extensions({"properties": {"datetime": "x"}, "assets": {}})["stac_extensions"] == []


def test_a_changed_upstream_drops_the_cached_copy(engine):
    with session_scope(engine) as session:
        register_asset(session, "c", "i", "a", "https://upstream.example.org/a.tif", size=10, etag="v1")
        row = get_asset(session, "c", "i", "a")
        row.cache_file, row.cached_size, row.etag = "c/i/a", 10, '"v1"'
        register_asset(session, "c", "i", "a", "https://upstream.example.org/a.tif", size=10, etag="v1")
        assert get_asset(session, "c", "i", "a").cache_file == "c/i/a"  # the same upstream: kept
        register_asset(session, "c", "i", "a", "https://upstream.example.org/a.tif", size=10, etag="v2")
        assert get_asset(session, "c", "i", "a").cache_file is None  # another checksum or mtime
        row = get_asset(session, "c", "i", "a")
        row.cache_file, row.cached_size = "c/i/a", 10
        register_asset(session, "c", "i", "a", "https://upstream.example.org/a.tif", size=11, etag="v2")
        assert get_asset(session, "c", "i", "a").cache_file is None  # another size
