"""Publishing a destination with `pds stac` and pushing into it through the portal."""

from __future__ import annotations

import os
import threading
import time
from urllib.parse import urlsplit

from catalog.database import session_scope
from catalog.models import utcnow
from catalog.proxy import claim_fetches
from tasks.proxy_fetch import fetch_into_cache
from tests.api.conftest import ADMIN
from tests.catalog.test_stac_harvest import geotiff


def test_a_push_to_a_published_destination_appears_in_the_stac_api(client, pds, tmp_path, settings):
    code, out, err = pds(
        "stac", "publish", "site1", "--collection", "scenes", "--item-id", "$stem", "--extractor", "geotiff"
    )
    assert code == 0, err
    assert "collection scenes" in out and "geotiff" in out

    pushed = client.put("/portal/site1/2026/scene-1.tif", content=geotiff(tmp_path / "s.tif"), headers=ADMIN)
    assert pushed.status_code == 201, pushed.text
    broken = client.put("/portal/site1/broken.tif", content=b"not a tiff", headers=ADMIN)
    assert broken.status_code == 201, "an unreadable file must not fail the push"

    # A destination's published collection is private like its data: its readers see it, anonymous callers do not.
    assert client.get("/stac/collections/scenes/items/scene-1").status_code == 404
    item = client.get("/stac/collections/scenes/items/scene-1", headers=ADMIN)
    assert item.status_code == 200, item.text
    body = item.json()
    assert body["properties"]["datetime"] == "2026-11-20T10:30:00Z"
    assert body["properties"]["pds:data_file_id"] == pushed.json()["data_file_id"]
    assert body["assets"]["data"]["href"] == f"{settings.resolved_public_url()}/proxy/scenes/scene-1/data"
    assert body["assets"]["data"]["alternate"]["upstream"]["href"].startswith("file://")
    assert client.get("/stac/collections/scenes/items/broken", headers=ADMIN).status_code == 404

    code, out, err = pds("stac", "harvest", "site1")
    assert code == 0, err
    first, second = out.strip().splitlines()
    assert first == "1 items published from site1"
    assert second.startswith(f"data file {broken.json()['data_file_id']} not published:") and "format" in second
    code, out, _ = pds("stac", "show", "site1")
    assert code == 0 and "scenes" in out


def test_publishing_refuses_unknown_destinations_and_extractors(pds):
    code, _, err = pds("stac", "publish", "nowhere", "--collection", "c")
    assert code == 1 and "no destination 'nowhere'" in err
    code, _, err = pds("stac", "publish", "site1", "--collection", "c", "--extractor", "magic")
    assert code == 1 and "unknown extractor 'magic'" in err
    code, _, err = pds("stac", "publish", "site1", "--collection", "bad id")
    assert code == 1 and "collection id" in err
    code, _, err = pds("stac", "harvest", "site1")
    assert code == 1 and "not published" in err
    code, _, err = pds("stac", "publish", "site1")
    assert code == 2 and "--collection" in err


def test_a_published_items_asset_href_serves_the_pushed_bytes_through_the_proxy(client, pds, tmp_path, settings):
    code, _, err = pds("stac", "publish", "site1", "--collection", "scenes")
    assert code == 0, err
    content = os.urandom(200_000)
    pushed = client.put("/portal/site1/raw/scene-2.bin", content=content, headers=ADMIN)
    assert pushed.status_code == 201, pushed.text
    href = client.get("/stac/collections/scenes/items/scene-2", headers=ADMIN).json()["assets"]["data"]["href"]
    path = urlsplit(href).path
    assert path == "/proxy/scenes/scene-2/data"

    wrong = client.get(path, auth=("nobody", "x"))  # the pds fixture left admin credentials on the client
    assert wrong.status_code == 401, "the collection is private: credentials come first"
    first = client.get(path, headers=ADMIN)
    assert first.status_code in (200, 202), first.text
    if first.status_code == 202:  # no fetcher runs in this test: do what it does once
        app = client.app
        with session_scope(app.state.engine) as session:
            jobs = claim_fetches(session, "test", 10, now=utcnow())
        assert len(jobs) == 1
        fetch_into_cache(app.state.engine, settings.resolved_proxy_cache_dir(), jobs[0], store=app.state.store)
    served = client.get(path, headers=ADMIN)
    assert served.status_code == 200 and served.content == content
    ranged = client.get(path, headers={**ADMIN, "Range": "bytes=100-199"})
    assert ranged.status_code == 206 and ranged.content == content[100:200]


def _read_through_the_proxy(client, path, settings):
    """GET the asset as a user would, while a thread does what the proxy fetcher flow does."""
    app, stop = client.app, threading.Event()

    def fetcher():
        while not stop.is_set():
            with session_scope(app.state.engine) as session:
                jobs = claim_fetches(session, "test", 10, now=utcnow())
            for job in jobs:
                fetch_into_cache(app.state.engine, settings.resolved_proxy_cache_dir(), job, store=app.state.store)
            stop.wait(0.2)

    thread = threading.Thread(target=fetcher)
    thread.start()
    try:
        deadline = time.monotonic() + 60
        answer = client.get(path, headers=ADMIN)
        while answer.status_code == 202 and time.monotonic() < deadline:
            time.sleep(float(answer.headers["retry-after"]))
            answer = client.get(path, headers=ADMIN)
        return answer
    finally:
        stop.set()
        thread.join()


def test_a_new_push_of_a_published_file_is_served_instead_of_the_cached_old_one(client, pds, settings):
    code, _, err = pds("stac", "publish", "site1", "--collection", "scenes")
    assert code == 0, err
    old, new = os.urandom(150_000), os.urandom(120_000)
    assert client.put("/portal/site1/raw/scene-3.bin", content=old, headers=ADMIN).status_code == 201
    path = "/proxy/scenes/scene-3/data"
    served = _read_through_the_proxy(client, path, settings)
    assert served.status_code == 200 and served.content == old  # cached, and held open by the proxy

    assert client.put("/portal/site1/raw/scene-3.bin", content=new, headers=ADMIN).status_code == 201
    served = _read_through_the_proxy(client, path, settings)
    assert served.status_code == 200 and served.content == new
    # Publishing the destination again (pds stac harvest) keeps serving the newest push.
    code, _, err = pds("stac", "harvest", "site1")
    assert code == 0, err
    assert _read_through_the_proxy(client, path, settings).content == new
