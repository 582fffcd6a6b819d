"""Search through the served API with real clients: pystac-client paging, errors, transactions."""

from __future__ import annotations

import threading
from collections import Counter

import httpx
import pytest
from pystac_client import Client

from catalog.database import session_scope
from catalog.users import ensure_user
from tests.stac.conftest import item

TOTAL = 5000


def _items(prefix: str, count: int, day: int) -> list[dict]:
    return [
        item(
            f"{prefix}-{n:05d}",
            -170 + (n % 340),
            -80 + (n % 160),
            f"2026-01-{day:02d}T{n // 3600 % 24:02d}:{n // 60 % 60:02d}:{n % 60:02d}Z",
        )
        for n in range(count)
    ]


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_pystac_client_pages_through_5000_items_while_others_are_inserted(stac_server, method):
    stac_server.create_collection("load")
    stac_server.create_items("load", _items("old", TOTAL, 10))

    stop = threading.Event()
    inserted: list[str] = []

    def insert_while_paging() -> None:
        # new items land before, among and after the ones being paged (days 9, 10 and 11)
        with httpx.Client(base_url=stac_server.url, headers=stac_server.http.headers, timeout=60) as http:
            batch = 0
            while not stop.is_set() and batch < 200:
                new = [
                    item(f"new-{batch:03d}-{k}", 0, 0, f"2026-01-{9 + k % 3:02d}T12:00:{batch % 60:02d}Z")
                    for k in range(5)
                ]
                response = http.post(
                    "/stac/collections/load/items", json={"type": "FeatureCollection", "features": new}
                )
                assert response.status_code == 201, response.text
                inserted.extend(i["id"] for i in new)
                batch += 1

    inserter = threading.Thread(target=insert_while_paging)
    inserter.start()
    try:
        client = Client.open(f"{stac_server.url}/stac/")
        search = client.search(collections=["load"], limit=100, method=method, max_items=None)
        seen = [i["id"] for i in search.items_as_dicts()]
    finally:
        stop.set()
        inserter.join()

    duplicates = [i for i, n in Counter(seen).items() if n > 1]
    assert duplicates == []
    old = {f"old-{n:05d}" for n in range(TOTAL)}
    assert old - set(seen) == set(), "items that existed before paging began were skipped"
    assert inserted, "nothing was inserted while paging"
    assert set(seen) - old <= set(inserted)


def test_search_filters_by_bbox_intersects_datetime_ids_and_cql2(stac_server):
    stac_server.create_collection("c")
    stac_server.create_collection("d")
    stac_server.create_items(
        "c",
        [
            item("a", 0, 0, "2026-01-01T00:00:00Z", **{"eo:cloud_cover": 5, "mission": "sentinel-2a"}),
            item("b", 10, 10, "2026-02-01T00:00:00Z", **{"eo:cloud_cover": 50, "mission": "landsat-8"}),
            item("c", 20, 20, "2026-03-01T00:00:00Z", **{"eo:cloud_cover": 95}),
        ],
    )
    stac_server.create_items("d", [item("a", 0, 0, "2026-01-15T00:00:00Z")])
    http = httpx.Client(base_url=f"{stac_server.url}/stac")

    def ids(**params) -> list[str]:
        response = http.get("/search", params=params)
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].startswith("application/geo+json")
        return sorted(f"{f['collection']}/{f['id']}" for f in response.json()["features"])

    def post_ids(body) -> list[str]:
        response = http.post("/search", json=body)
        assert response.status_code == 200, response.text
        return sorted(f"{f['collection']}/{f['id']}" for f in response.json()["features"])

    assert ids(bbox="9.5,9.5,10.5,10.5") == ["c/b"]
    assert ids(datetime="2026-01-10T00:00:00Z/..") == ["c/b", "c/c", "d/a"]
    assert ids(datetime="../2026-01-31T00:00:00Z") == ["c/a", "d/a"]
    assert ids(datetime="2026-02-01T00:00:00Z") == ["c/b"]
    assert ids(ids="a", collections="c") == ["c/a"]
    assert ids(filter="eo:cloud_cover >= 50 AND mission LIKE 'land%'") == ["c/b"]
    assert ids(filter="eo:cloud_cover IS NULL") == ["d/a"]
    assert ids(filter="collection = 'c' AND NOT eo:cloud_cover BETWEEN 0 AND 60") == ["c/c"]
    triangle = {"type": "Polygon", "coordinates": [[[0.9, 0], [2, 0], [2, 1.1], [0.9, 0]]]}
    # the triangle's box overlaps item a's square, the triangle itself only touches it at x ≥ 0.9
    assert post_ids({"intersects": triangle}) == ["c/a", "d/a"]
    far = {"type": "Polygon", "coordinates": [[[1.5, 0], [2, 0], [2, 0.9], [1.5, 0]]]}  # box overlaps, shape not
    assert (
        post_ids({"intersects": {"type": "Polygon", "coordinates": [[[1.2, 1.2], [2, 2], [1.2, 2], [1.2, 1.2]]]}}) == []
    )
    assert post_ids({"filter": {"op": "s_intersects", "args": [{"property": "geometry"}, far]}}) == []
    assert post_ids(
        {"filter": {"op": "not", "args": [{"op": "s_intersects", "args": [{"property": "geometry"}, far]}]}}
    ) == [
        "c/a",
        "c/b",
        "c/c",
        "d/a",
    ]
    assert post_ids({"filter-lang": "cql2-json", "filter": {"op": "=", "args": [{"property": "id"}, "b"]}}) == ["c/b"]
    sorted_ids = [
        f["id"] for f in http.get("/search", params={"sortby": "+datetime", "collections": "c"}).json()["features"]
    ]
    assert sorted_ids == ["a", "b", "c"]
    fields = http.post("/search", json={"fields": {"include": ["properties.eo:cloud_cover"]}, "ids": ["b"]}).json()
    assert fields["features"][0]["properties"] == {"eo:cloud_cover": 50}
    # limits above the maximum are clamped, not refused
    assert http.get("/search", params={"limit": 1_000_000}).status_code == 200


@pytest.mark.parametrize(
    ("params", "reason"),
    [
        ({"datetime": "yesterday"}, "RFC 3339"),
        ({"datetime": "2026-01-01T00:00:00"}, "RFC 3339"),
        ({"datetime": "2026-02-01T00:00:00Z/2026-01-01T00:00:00Z"}, "starts after it ends"),
        ({"bbox": "1,2,3"}, "4 (or 6) numbers"),
        ({"bbox": "0,0,1,north"}, "numbers"),
        ({"bbox": "0,80,1,95"}, "latitudes"),
        ({"limit": "0"}, "positive integer"),
        ({"limit": "-5"}, "positive integer"),
        ({"limit": "ten"}, "positive integer"),
        ({"filter": "eo:cloud_cover >>> 3"}, "not valid cql2-text"),
        ({"filter": '{"op": "nope"}', "filter-lang": "cql2-json"}, "not valid cql2-json"),
        ({"filter-lang": "cql3", "filter": "id = 'a'"}, "cql2-text or cql2-json"),
        ({"sortby": "-eo:cloud_cover"}, "cannot sort by"),
        ({"token": "!!!"}, "token"),
    ],
)
def test_bad_search_parameters_get_400_with_the_reason(stac_server, params, reason):
    response = httpx.get(f"{stac_server.url}/stac/search", params=params)
    assert response.status_code == 400, response.text
    assert reason in response.json()["reason"]


def test_unknown_collections_and_items_get_404(stac_server):
    stac_server.create_collection("c")
    base = f"{stac_server.url}/stac"
    for url in (f"{base}/collections/nope", f"{base}/collections/nope/items", f"{base}/collections/c/items/nope"):
        response = httpx.get(url)
        assert response.status_code == 404 and "nope" in response.json()["reason"]
    assert httpx.get(f"{base}/search", params={"collections": "c,nope"}).status_code == 404
    assert httpx.post(f"{base}/search", json={"collections": ["nope"]}).status_code == 404


def test_transactions_need_an_administrator_and_keep_items_whole(stac_server, engine):
    base = f"{stac_server.url}/stac"
    anonymous = httpx.post(f"{base}/collections", json={"id": "c"})
    assert anonymous.status_code == 401
    with session_scope(engine) as session:
        ensure_user(session, "reader", "secret", is_admin=False)
    refused = httpx.post(f"{base}/collections", json={"id": "c"}, auth=("reader", "secret"))
    assert refused.status_code == 403 and "needs administrator rights" in refused.json()["reason"]
    stac_server.create_collection("c")
    assert stac_server.http.post("/stac/collections", json={"id": "c"}).status_code == 409
    one = item("x", 1, 1, "2026-01-01T00:00:00Z")
    assert httpx.post(f"{base}/collections/c/items", json=one).status_code == 401
    created = stac_server.http.post("/stac/collections/c/items", json=one)
    assert created.status_code == 201 and created.json()["links"][0]["href"] == f"{base}/collections/c/items/x"
    assert stac_server.http.post("/stac/collections/c/items", json=one).status_code == 409
    assert stac_server.http.post("/stac/collections/c/items", json={**one, "id": "bad/id"}).status_code == 400
    assert stac_server.http.post("/stac/collections/c/items", json={**one, "properties": {}}).status_code == 400

    changed = {**one, "properties": {"datetime": "2026-06-01T00:00:00Z", "mission": "m"}}
    assert stac_server.http.put("/stac/collections/c/items/x", json=changed).status_code == 200
    fetched = httpx.get(f"{base}/collections/c/items/x").json()
    assert fetched["properties"] == {"datetime": "2026-06-01T00:00:00Z", "mission": "m"}
    assert stac_server.http.put("/stac/collections/c/items/y", json={**one, "id": "y"}).status_code == 404

    assert httpx.delete(f"{base}/collections/c/items/x").status_code == 401
    assert stac_server.http.delete("/stac/collections/c/items/x").status_code == 204
    assert httpx.get(f"{base}/collections/c/items/x").status_code == 404
    assert stac_server.http.put("/stac/collections/c", json={"id": "c", "description": "new"}).status_code == 200
    assert httpx.get(f"{base}/collections/c").json()["description"] == "new"
    assert stac_server.http.delete("/stac/collections/c").status_code == 204
    assert httpx.get(f"{base}/collections/c").status_code == 404


def test_a_collections_items_page_through_next_links(stac_server):
    stac_server.create_collection("c")
    stac_server.create_items("c", [item(f"i{n}", n, n, f"2026-01-0{n + 1}T00:00:00Z") for n in range(5)])
    url, seen = f"{stac_server.url}/stac/collections/c/items?limit=2", []
    while url:
        page = httpx.get(url).json()
        seen += [f["id"] for f in page["features"]]
        url = next((link["href"] for link in page["links"] if link["rel"] == "next"), None)
        assert url is None or "collections=" not in url
    assert seen == ["i4", "i3", "i2", "i1", "i0"]


def test_items_covering_a_time_range_are_found_by_any_instant_inside_it(stac_server):
    stac_server.create_collection("c")
    ranged = item("year", 0, 0, "2026-01-01T00:00:00Z")
    ranged["properties"] |= {"start_datetime": "2026-01-01T00:00:00Z", "end_datetime": "2026-12-31T00:00:00Z"}
    stac_server.create_items("c", [ranged, item("june", 0, 0, "2026-06-01T00:00:00Z")])
    base = f"{stac_server.url}/stac/search"

    def ids(**params) -> list[str]:
        return sorted(f["id"] for f in httpx.get(base, params=params).json()["features"])

    assert ids(datetime="2026-03-01T00:00:00Z/2026-04-01T00:00:00Z") == ["year"]
    assert ids(datetime="2026-05-01T00:00:00Z/..") == ["june", "year"]
    assert ids(datetime="2027-01-01T00:00:00Z/..") == []
    # once the ranged item is gone, every item is an instant and the interval bounds the sort key too
    assert stac_server.http.delete("/stac/collections/c/items/year").status_code == 204
    assert ids(datetime="2026-05-01T00:00:00Z/2026-07-01T00:00:00Z") == ["june"]
    assert ids(datetime="2026-03-01T00:00:00Z/2026-04-01T00:00:00Z") == []
