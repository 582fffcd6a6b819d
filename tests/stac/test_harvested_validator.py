"""A provider's static STAC catalogue harvested as a user harvests one (with and without retrieval)
passes stac-api-validator, its items' and collections' extensions validated against their published
schemas (vendored under `schemas/`); an item breaking an extension's schema is reported invalid."""

from __future__ import annotations

import copy
import json
import os
from dataclasses import dataclass

import httpx
import pytest
from stac_validator.stac_validator import StacValidate

from api.app import create_app
from catalog.database import session_scope
from catalog.proxy import set_policy
from catalog.stac import ALTERNATE_ASSETS, FILE, ORDER, PROJECTION, set_publication
from catalog.stac_documents import AUTHENTICATION
from tasks.discovery import discover_rule
from tests.acquisition.conftest import Source, acquisition_setup, nginx_provider, runtime_on
from tests.acquisition.test_document_sources import EO, SCENES, fetch_all, read_through_proxy, write_provider_catalogue
from tests.servers._common import free_port, serving
from tests.stac.conftest import ADMIN
from tests.stac.offline_validator import offline, run_api_validator

#: collection: whether its files are retrieved into the Data Store (else fetched when first read)
COLLECTIONS = {"scenes": True, "scenes-unretrieved": False}
FILES = "files"
"""A collection of plain files (no provider STAC), their items written by pds."""
# The provider's scenes with a `datetime`: stac-api-validator's sort check sorts the `datetime` values
# it gets and fails (TypeError) on an item whose datetime is null, one with a time range instead,
# which STAC allows (the harvest of such an item is tested in tests/acquisition).
INSTANTS = {item_id: scene for item_id, scene in SCENES.items() if not isinstance(scene[1], tuple)}
# Around scene-0 (SCENES), not scene-1: the validator's intersection searches.
GEOMETRY = {"type": "Polygon", "coordinates": [[[4.0, 44.0], [7.0, 44.0], [7.0, 48.0], [4.0, 48.0], [4.0, 44.0]]]}


@dataclass
class Harvest:
    url: str
    http: httpx.Client
    """A client with the administrator's credentials (the collections are private)."""
    upstream: dict[str, str]
    """collection: the provider's base URL."""


@pytest.fixture(scope="module")
def harvest(request, tmp_path_factory, nginx):
    """The provider's catalogue harvested once per collection into one pds (on SQLite: the validator
    runs on PostgreSQL too in test_validator.py) served under uvicorn; every asset read once through
    the proxy, so the hrefs the validator opens answer with the data."""
    directory = tmp_path_factory.mktemp("harvest")
    port = free_port()
    with (
        runtime_on(request, directory, "sqlite") as rt,
        pytest.MonkeyPatch.context() as monkeypatch,
    ):
        monkeypatch.setattr(rt.settings, "public_url", f"http://127.0.0.1:{port}")
        app = create_app(rt.settings, engine=rt.engine, store=rt.store)
        with serving(app, port) as url, httpx.Client(base_url=url, headers=ADMIN, timeout=30) as http:
            upstream = {}
            for collection, retrieved in COLLECTIONS.items():
                payloads = {
                    f"data/{i}.{s}": os.urandom(200 + n) for n, i in enumerate(INSTANTS) for s in ("tif", "png")
                }
                host, root = nginx_provider(nginx, f"provider-{collection}", payloads)
                write_provider_catalogue(root, payloads, scenes=INSTANTS)
                upstream[collection] = f"{nginx.base_url}/{root.name}/"
                host_row, rule = acquisition_setup(
                    rt.engine,
                    Source(host, None, root),
                    destination=collection,
                    directory="stac/catalog.json",
                    listing_format="stac",
                    no_retrieval=not retrieved,
                )
                with session_scope(rt.engine) as session:
                    set_publication(session, collection, collection_id=collection)
                assert discover_rule(rt.engine, host_row, rule, by="test").registered == 2 * len(INSTANTS)
            # and files of a JSON listing, published as pds writes items (order, file), unretrieved
            host, root = nginx_provider(nginx, "provider-files", {"data/f1.bin": os.urandom(101)})
            (root / "listing.json").write_text(json.dumps({"files": [{"href": "data/f1.bin", "size": 101}]}))
            host_row, rule = acquisition_setup(
                rt.engine,
                Source(host, None, root),
                destination=FILES,
                directory="listing.json",
                listing_format="json",
                no_retrieval=True,
            )
            with session_scope(rt.engine) as session:
                set_publication(session, FILES, collection_id=FILES)
            assert discover_rule(rt.engine, host_row, rule, by="test").registered == 1
            fetch_all(rt)
            for collection in COLLECTIONS:
                with session_scope(rt.engine) as session:
                    set_policy(session, collection, sync_wait_seconds=0)  # a miss answers at once; this fetches
                for item_id in INSTANTS:
                    item = http.get(f"/stac/collections/{collection}/items/{item_id}").json()
                    for asset in item["assets"].values():
                        assert read_through_proxy(rt, http, asset["href"])
            yield Harvest(url, http, upstream)


def served_items(harvest: Harvest, collection: str) -> dict[str, dict]:
    response = harvest.http.get(f"/stac/collections/{collection}/items")
    response.raise_for_status()
    return {item["id"]: item for item in response.json()["features"]}


def stac_validator(document: dict) -> StacValidate:
    """stac-validator on the document, as stac-api-validator runs it, offline; its `message` says
    which schemas it applied and what failed."""
    validator = StacValidate()
    with offline():
        validator.validate_dict(copy.deepcopy(document))
    return validator


@pytest.mark.parametrize("collection", COLLECTIONS)
def test_stac_api_validator_passes_on_a_harvested_collection(harvest, collection):
    """As a signed-in user sees it: proxied hrefs, upstream alternates, authentication, projection,
    eo and file fields, each extension checked against its schema on every item the validator reads."""
    items = served_items(harvest, collection)
    assert sorted(items) == sorted(INSTANTS)
    # what the validator checks carries the fields of every extension pds adds or keeps
    for item_id, item in items.items():
        declared = set(item["stac_extensions"])
        assert {ALTERNATE_ASSETS, AUTHENTICATION, FILE} <= declared, item_id
        assert {"basic", "bearer"} <= set(item["properties"]["auth:schemes"])
        for key, asset in item["assets"].items():
            assert asset["href"] == f"{harvest.url}/proxy/{collection}/{item_id}/{key}"
            assert asset["alternate"]["upstream"]["href"].startswith(harvest.upstream[collection])
            assert asset["auth:refs"] and asset["file:size"] > 0
    assert items["scene-1"]["properties"]["proj:epsg"] == 32632 and PROJECTION in items["scene-1"]["stac_extensions"]
    assert EO in items["scene-0"]["stac_extensions"]

    run_api_validator(f"{harvest.url}/stac/", collection, GEOMETRY, "properties.eo:cloud_cover", headers=ADMIN)


def test_each_harvested_item_and_collection_is_valid_under_its_extension_schemas(harvest):
    """The schemas applied are the extensions' own, not only the core ones."""
    declared = set()
    for collection in [*COLLECTIONS, FILES]:
        served = harvest.http.get(f"/stac/collections/{collection}").json()
        assert AUTHENTICATION in served["stac_extensions"]  # private: it says how to sign in
        for document in [served, *served_items(harvest, collection).values()]:
            validator = stac_validator(document)
            (message,) = validator.message
            assert validator.valid, message
            assert set(document["stac_extensions"]) <= set(message["schema"]), message
            declared |= set(document["stac_extensions"])
    assert {ALTERNATE_ASSETS, AUTHENTICATION, EO, FILE, ORDER, PROJECTION} <= declared


def test_an_item_breaking_an_extension_schema_is_invalid(harvest):
    """The same offline path reports what the extensions' schemas forbid, and refuses an extension
    whose schema it has no copy of: neither passes silently."""
    item = served_items(harvest, "scenes")["scene-1"]
    assert stac_validator(item).valid

    wrong_epsg = copy.deepcopy(item)
    wrong_epsg["properties"]["proj:epsg"] = "EPSG:32632"  # an integer in projection v1.2.0
    (message,) = stac_validator(wrong_epsg).message
    assert not message["valid_stac"] and message["failed_schema"] == PROJECTION, message
    assert "proj:epsg" in message["error_message"]

    wrong_projjson = copy.deepcopy(item)  # checked against PROJJSON's schema, which projection refers to
    wrong_projjson["properties"]["proj:projjson"] = {"type": "GeographicCRS"}  # no name, datum, axes
    (message,) = stac_validator(wrong_projjson).message
    assert not message["valid_stac"] and message["failed_schema"] == PROJECTION, message
    assert "Unresolvable" not in message["error_message"]  # what a schema without a local copy gives

    projection_2 = PROJECTION.replace("v1.2.0", "v2.0.0")
    wrong_code = copy.deepcopy(item)
    wrong_code["stac_extensions"] = [projection_2 if url == PROJECTION else url for url in item["stac_extensions"]]
    del wrong_code["properties"]["proj:epsg"]  # gone in projection v2.0.0, for proj:code
    wrong_code["properties"]["proj:code"] = 32632  # a string ("EPSG:32632") in projection v2.0.0
    (message,) = stac_validator(wrong_code).message
    assert not message["valid_stac"] and message["failed_schema"] == projection_2, message
    wrong_code["properties"]["proj:code"] = "EPSG:32632"
    assert stac_validator(wrong_code).valid

    wrong_auth = copy.deepcopy(item)
    wrong_auth["assets"]["data"]["auth:refs"] = "basic"  # an array of scheme names
    (message,) = stac_validator(wrong_auth).message
    assert not message["valid_stac"] and message["failed_schema"] == AUTHENTICATION, message

    (written,) = served_items(harvest, FILES).values()
    assert stac_validator(written).valid
    no_status = copy.deepcopy(written)
    del no_status["properties"]["order:status"]  # required by the order extension
    (message,) = stac_validator(no_status).message
    assert not message["valid_stac"] and message["failed_schema"] == ORDER, message

    unknown = copy.deepcopy(item)
    unknown["stac_extensions"].append("https://stac-extensions.github.io/sat/v1.0.0/schema.json")
    (message,) = stac_validator(unknown).message
    assert not message["valid_stac"] and "offline: no local copy" in message["error_message"], message
