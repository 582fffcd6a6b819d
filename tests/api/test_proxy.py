"""The proxy's HTTP answers through the API: cached data (ranges, validators, conditionals), pending
and synchronous fetches, single flight, fast 404s, failures, IAM, QoS and retention with a clock."""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime, timedelta

import pytest
from litestar.testing import TestClient

from api.app import create_app
from catalog.database import session_scope
from catalog.models import utcnow
from catalog.proxy import ProxyAsset, apply_retention, claim_fetches, get_asset, register_asset, set_policy, touch
from tasks.proxy_fetch import fetch_into_cache
from tests.api.conftest import ADMIN, basic
from tests.servers.oidc import OidcIssuer
from tests.servers.upstream import UpstreamServer

DATA = os.urandom(300_000)


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def upstream(tmp_path):
    server = UpstreamServer(tmp_path / "upstream").start()
    yield server
    server.stop()


@pytest.fixture
def issuer():
    server = OidcIssuer().start()
    yield server
    server.stop()


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def proxy_app(settings, sqlite_engine, store, issuer, clock):
    settings.oidc_issuer, settings.oidc_audience = issuer.url, "pds"
    app = create_app(settings, engine=sqlite_engine, store=store)
    app.state.proxy_clock = clock
    return app


@pytest.fixture
def client(proxy_app):
    with TestClient(proxy_app) as client:
        yield client


def register(client, upstream, name="a.tif", *, collection="s2", data=DATA, **policy):
    href = upstream.add(name, data)
    body = {
        "collection": collection,
        "item": "item1",
        "asset": name.split(".")[0],
        "upstream_href": href,
        "media_type": "image/tiff; application=geotiff",
        "size": len(data),
    }
    response = client.post("/proxied-assets", json=body, headers=ADMIN)
    assert response.status_code == 201, response.text
    if policy:
        assert client.put(f"/proxied-collections/{collection}", json=policy, headers=ADMIN).status_code == 200
    return f"/proxy/{collection}/item1/{name.split('.')[0]}"


def run_fetcher(app):
    """What the proxy fetcher flow does for each claimed request (its plain function)."""
    engine, cache_dir = app.state.engine, app.state.settings.resolved_proxy_cache_dir()
    with session_scope(engine) as session:
        jobs = claim_fetches(session, "test", 10, now=utcnow())
    for job in jobs:
        fetch_into_cache(engine, cache_dir, job)
    return len(jobs)


def cached_url(client, proxy_app, upstream):
    url = register(client, upstream, public=True, sync_wait_seconds=0)
    assert client.get(url).status_code == 202
    assert run_fetcher(proxy_app) == 1
    return url


def test_cached_asset_answers_exact_http(client, proxy_app, upstream):
    url = cached_url(client, proxy_app, upstream)
    head = client.head(url)
    assert head.status_code == 200
    assert head.headers["content-length"] == str(len(DATA))
    assert head.headers["accept-ranges"] == "bytes"
    assert head.headers["content-type"].startswith("image/tiff")
    etag, modified = head.headers["etag"], head.headers["last-modified"]
    whole = client.get(url)
    assert whole.content == DATA and whole.headers["etag"] == etag
    part = client.get(url, headers={"Range": "bytes=100-199"})
    assert part.status_code == 206 and part.content == DATA[100:200]
    assert part.headers["content-range"] == f"bytes 100-199/{len(DATA)}"
    assert part.headers["content-length"] == "100"
    suffix = client.get(url, headers={"Range": "bytes=-500"})
    assert suffix.status_code == 206 and suffix.content == DATA[-500:]
    open_end = client.get(url, headers={"Range": "bytes=299000-"})
    assert open_end.status_code == 206 and open_end.content == DATA[299000:]
    past_end = client.get(url, headers={"Range": "bytes=299990-400000"})
    assert past_end.content == DATA[299990:]
    bad = client.get(url, headers={"Range": f"bytes={len(DATA)}-"})
    assert bad.status_code == 416
    assert bad.headers["content-range"] == f"bytes */{len(DATA)}"
    assert bad.json()["error"] == "RangeNotSatisfiable"
    assert client.get(url, headers={"If-None-Match": etag}).status_code == 304
    assert client.get(url, headers={"If-Modified-Since": modified}).status_code == 304
    assert client.get(url, headers={"If-Match": '"other"'}).status_code == 412
    stale_range = client.get(url, headers={"Range": "bytes=0-9", "If-Range": '"other"'})
    assert stale_range.status_code == 200 and stale_range.content == DATA
    assert client.head(url).headers["etag"] == etag  # stable
    assert upstream.gets["/a.tif"] == 1


def test_a_changed_upstream_is_never_served_from_the_old_copy(client, proxy_app, upstream):
    """The upstream changes: its cached copy is dropped, and the next request, however soon, is not
    served the old bytes: having been served before, it waits for the new fetch and gets the new
    bytes and etag."""
    import threading

    url = cached_url(client, proxy_app, upstream)
    old = client.get(url)
    assert old.content == DATA
    changed = DATA[::-1] + b"longer"
    register(client, upstream, data=changed)  # a new size: the proxy's copy is stale
    fetcher = threading.Timer(0.5, run_fetcher, [proxy_app])
    fetcher.start()
    new = client.get(url)
    fetcher.join()
    assert new.status_code == 200 and new.content == changed
    assert new.headers["etag"] != old.headers["etag"]
    assert upstream.gets["/a.tif"] == 2


def test_uncached_asset_is_pending_once_fetched_once(client, proxy_app, upstream):
    url = register(client, upstream, public=True, sync_wait_seconds=0)
    first = client.get(url)
    assert first.status_code == 202
    assert int(first.headers["retry-after"]) >= 1
    assert first.headers["content-type"] == "application/json"
    assert first.json()["status"] == "pending"
    for _ in range(5):
        assert client.head(url).status_code == 202
    with session_scope(proxy_app.state.engine) as session:
        assert get_asset(session, "s2", "item1", "a").fetch_status == "queued"
    assert run_fetcher(proxy_app) == 1
    assert run_fetcher(proxy_app) == 0
    assert client.get(url).content == DATA
    assert upstream.gets["/a.tif"] == 1


def test_a_pending_answer_names_a_status_resource_that_follows_the_fetch(client, proxy_app, upstream):
    """FDP's second approach: a client polls the status resource; the asset URL keeps working as is."""
    url = register(client, upstream, public=True, sync_wait_seconds=0)
    before = client.get(f"{url}?status")
    assert before.status_code == 200 and before.headers["cache-control"] == "no-store"
    assert before.json() == {
        "asset": "s2/item1/a",
        "href": url,
        "state": "not-fetched",
        "fetched_bytes": 0,
        "size": len(DATA),
        "retry_after": None,
        "error": None,
    }
    assert run_fetcher(proxy_app) == 0, "asking for the status started a fetch"

    pending = client.get(url)
    assert pending.status_code == 202
    assert pending.headers["location"] == f"{url}?status" == pending.json()["status_url"]
    queued = client.get(pending.headers["location"]).json()
    assert queued["state"] == "queued" and queued["retry_after"] >= 1

    assert run_fetcher(proxy_app) == 1
    done = client.get(f"{url}?status").json()
    assert done["state"] == "cached" and done["fetched_bytes"] == len(DATA) and done["retry_after"] is None
    assert client.get(url).content == DATA
    assert upstream.gets["/a.tif"] == 1


def test_a_private_assets_status_needs_the_same_credentials(client, upstream):
    url = register(client, upstream, public=False, sync_wait_seconds=0)
    assert client.get(f"{url}?status").status_code == 401
    assert client.get(f"{url}?status", headers=ADMIN).json()["state"] == "not-fetched"
    assert client.get("/proxy/s2/item1/nothing?status", headers=ADMIN).status_code == 404


def test_pending_answers_503_in_that_mode(settings, sqlite_engine, store, upstream):
    settings.proxy_pending_status = 503
    with TestClient(create_app(settings, engine=sqlite_engine, store=store)) as client:
        url = register(client, upstream, public=True, sync_wait_seconds=0)
        response = client.get(url)
        assert response.status_code == 503
        assert response.headers["retry-after"]
        assert response.json()["status"] == "pending"


def test_sync_wait_holds_the_request_until_the_fetch_ends(client, proxy_app, upstream):
    import threading

    url = register(client, upstream, public=True, sync_wait_seconds=10)
    fetcher = threading.Timer(0.5, run_fetcher, [proxy_app])
    fetcher.start()
    started = time.monotonic()
    response = client.get(url)
    fetcher.join()
    assert response.status_code == 200 and response.content == DATA
    assert time.monotonic() - started < 5


@pytest.mark.parametrize(
    "path",
    [
        "/proxy/s2/item1/a.aux.xml",
        "/proxy/s2/item1/a.msk",
        "/proxy/s2/item1/",
        "/proxy/s2/item1",
        "/proxy/s2/item1/a/b.ovr",
        "/proxy/nowhere/item1/a",
        "/proxy/s2/other/a",
    ],
)
def test_paths_that_are_no_asset_get_a_fast_404_and_no_fetch(client, proxy_app, upstream, path):
    register(client, upstream, public=True, sync_wait_seconds=30)
    started = time.monotonic()
    response = client.get(path)
    assert response.status_code == 404
    assert response.json()["error"] == "NotFound"
    assert time.monotonic() - started < 3  # never held for the dataset's 30 s wait
    with session_scope(proxy_app.state.engine) as session:
        assert get_asset(session, "s2", "item1", "a").fetch_status == "none"
    assert upstream.gets == {}


def test_failed_upstream_gives_502_with_reason_and_is_not_cached(client, proxy_app, upstream):
    url = register(client, upstream, public=True, sync_wait_seconds=0)
    (upstream.root / "a.tif").unlink()
    assert client.get(url).status_code == 202
    from catalog.errors import TransferError
    from catalog.proxy import record_fetch_attempt_failed

    engine = proxy_app.state.engine
    with session_scope(engine) as session:
        (job,) = claim_fetches(session, "test", 10, now=utcnow())
    with pytest.raises(TransferError) as failure:
        fetch_into_cache(engine, proxy_app.state.settings.resolved_proxy_cache_dir(), job)
    with session_scope(engine) as session:
        record_fetch_attempt_failed(session, job, str(failure.value), final=True)
    response = client.get(url)
    assert response.status_code == 502
    assert "404" in response.json()["reason"] or "not found" in response.json()["reason"].lower()
    assert not list(proxy_app.state.settings.resolved_proxy_cache_dir().rglob("*a*"))


def test_private_collection_needs_credentials_before_any_upstream_work(client, proxy_app, upstream, issuer, clock):
    url = register(client, upstream, sync_wait_seconds=0, readers=["alice", "group:eo"])
    assert client.post("/qos-groups/eo/members/bob", headers=ADMIN).status_code == 201
    for headers in ({}, basic("admin", "wrong"), {"Authorization": "Bearer not.a.jwt"}):
        response = client.get(url, headers=headers)
        assert response.status_code == 401, headers
        assert response.json()["reason"]
    forged = issuer.token("alice", key=OidcIssuer().key)
    assert client.get(url, headers={"Authorization": f"Bearer {forged}"}).status_code == 401
    carol = issuer.token("carol", now=clock.now)
    assert client.get(url, headers={"Authorization": f"Bearer {carol}"}).status_code == 403
    with session_scope(proxy_app.state.engine) as session:
        assert get_asset(session, "s2", "item1", "a").fetch_status == "none"
    assert upstream.gets == {}
    alice = issuer.token("alice", now=clock.now, lifetime=60)
    assert client.get(url, headers={"Authorization": f"Bearer {alice}"}).status_code == 202
    in_group = issuer.token("dave", groups=["eo"], now=clock.now)
    assert client.get(url, headers={"Authorization": f"Bearer {in_group}"}).status_code == 202
    clock.now += 120
    expired = client.get(url, headers={"Authorization": f"Bearer {alice}"})
    assert expired.status_code == 401 and "expired" in expired.json()["reason"]
    # The project's own users: bob is in group eo, created through the API.
    with session_scope(proxy_app.state.engine) as session:
        from catalog.users import ensure_user

        ensure_user(session, "bob", "bobpw")
        ensure_user(session, "eve", "evepw")
    assert client.get(url, headers=basic("bob", "bobpw")).status_code == 202
    assert client.get(url, headers=basic("eve", "evepw")).status_code == 403


def test_qos_limits_answer_429_until_the_period_ends(client, proxy_app, upstream, issuer, clock):
    url = cached_url(client, proxy_app, upstream)
    token = issuer.token("alice", groups=["eo"], now=clock.now, lifetime=10_000)
    auth = {"Authorization": f"Bearer {token}"}
    quota = {"period_seconds": 60, "max_requests": 3}
    assert client.put("/qos-quotas/user:alice", json=quota, headers=ADMIN).status_code == 200
    clock.now = (clock.now // 60) * 60 + 1  # the start of a window
    for _ in range(3):
        assert client.head(url, headers=auth).status_code == 200
    limited = client.get(url, headers=auth)
    assert limited.status_code == 429
    assert 1 <= int(limited.headers["retry-after"]) <= 59
    assert "requests" in limited.json()["reason"]
    clock.now += 60
    assert client.head(url, headers=auth).status_code == 200
    # Bytes per period, for the group: 300 000 bytes fit once, not twice.
    group_quota = {"period_seconds": 3600, "max_bytes": 400_000}
    assert client.put("/qos-quotas/group:eo", json=group_quota, headers=ADMIN).status_code == 200
    time.sleep(5.1)  # quotas are re-read from the database every few seconds
    clock.now += 60  # a new window for alice's 3 requests
    assert client.get(url, headers=auth).status_code == 200
    assert client.get(url, headers=auth).status_code == 429
    assert client.get(url, headers={**auth, "Range": "bytes=0-99"}).status_code == 206


def test_qos_cache_miss_and_upstream_bytes(client, proxy_app, upstream, issuer, clock):
    token = issuer.token("alice", now=clock.now, lifetime=10_000)
    auth = {"Authorization": f"Bearer {token}"}
    quota = {"period_seconds": 600, "max_miss_requests": 2, "max_upstream_bytes": 500_000}
    assert client.put("/qos-quotas/user:alice", json=quota, headers=ADMIN).status_code == 200
    a = register(client, upstream, "a.tif", public=True, sync_wait_seconds=0)
    b = register(client, upstream, "b.tif")
    assert client.get(a, headers=auth).status_code == 202  # a miss, 300 000 upstream bytes
    assert client.get(b, headers=auth).status_code == 429  # another 300 000 would pass the cap
    assert client.get(a, headers=auth).status_code == 202  # second miss (no new fetch)
    assert client.get(a, headers=auth).status_code == 429  # third miss
    run_fetcher(proxy_app)
    assert client.get(a, headers=auth).status_code == 200  # hits are not misses


def test_retention_rolling_and_least_recently_accessed(client, proxy_app, upstream):
    engine = proxy_app.state.engine
    cache_dir = proxy_app.state.settings.resolved_proxy_cache_dir()
    for name in ("a.tif", "b.tif", "c.tif"):
        url = register(client, upstream, name, collection="lru", public=True, sync_wait_seconds=0)
        client.get(url)
        run_fetcher(proxy_app)
    for name in ("r.tif", "s.tif"):
        url = register(client, upstream, name, collection="roll", public=True, sync_wait_seconds=0)
        client.get(url)
        run_fetcher(proxy_app)
    start = datetime.now(UTC)
    with session_scope(engine) as session:
        set_policy(session, "lru", retention="lru", max_bytes=700_000)
        set_policy(session, "roll", retention="rolling", retention_days=2)
        set_policy(session, "keep", retention="permanent")
        touch(session, "lru", "item1", "a", now=start - timedelta(hours=3))
        touch(session, "lru", "item1", "b", now=start - timedelta(hours=1))
        touch(session, "lru", "item1", "c", now=start - timedelta(hours=2))
        session.get(ProxyAsset, ("roll", "item1", "r")).cached_at = start - timedelta(days=3)
    with session_scope(engine) as session:
        evicted = apply_retention(session, cache_dir, now=start)
    assert sorted(evicted) == ["lru/item1/a", "roll/item1/r"]  # 900 000 → 600 000 bytes: a goes first
    assert not (cache_dir / "lru/item1/a").exists() and (cache_dir / "lru/item1/b").exists()
    response = client.get("/proxy/lru/item1/a")
    assert response.status_code == 202  # evicted, fetched again on demand
    assert client.get("/proxy/lru/item1/b").content == DATA
    with session_scope(engine) as session:
        assert apply_retention(session, cache_dir, now=start + timedelta(days=10)) == ["roll/item1/s"]


def test_harvested_data_can_be_injected(client, proxy_app, upstream, tmp_path):
    url = register(client, upstream, public=True, sync_wait_seconds=0)
    harvested = tmp_path / "harvested.tif"
    harvested.write_bytes(DATA[:1000])
    response = client.post(
        f"{url.replace('/proxy/', '/proxied-assets/')}/cache", json={"path": str(harvested)}, headers=ADMIN
    )
    assert response.status_code == 201, response.text
    assert response.json()["href"].endswith(url)
    assert client.get(url).content == DATA[:1000]
    assert upstream.gets == {}


def test_bad_registrations_and_policies_are_refused(client, upstream):
    bad = {"collection": "s2", "item": "i", "asset": "a", "upstream_href": "/etc/passwd"}
    response = client.post("/proxied-assets", json=bad, headers=ADMIN)
    assert response.status_code == 400 and "URL" in response.json()["reason"]
    register(client, upstream)
    assert client.put("/proxied-collections/s2", json={"mode": "teleport"}, headers=ADMIN).status_code == 400
    assert client.put("/proxied-collections/s2", json={"retention": "lru"}, headers=ADMIN).status_code == 400
    assert client.put("/proxied-collections/s2", json={"colour": 1}, headers=ADMIN).status_code == 400
    assert client.put("/proxied-collections/s2", json={"public": True}, headers=basic("x", "y")).status_code == 401
    with session_scope(client.app.state.engine) as session, pytest.raises(Exception, match="valid"):
        register_asset(session, "s2", "a/b", "x", "http://h/x")


def test_redirect_mode_answers_302_to_the_upstream(client, upstream):
    url = register(client, upstream, public=True, mode="redirect")
    response = client.get(url, follow_redirects=False)
    assert response.status_code == 302
    assert response.headers["location"] == f"{upstream.url}/a.tif"
    assert upstream.gets == {}


def test_retry_after_follows_a_slow_fetch_within_twice_the_time_left(client, proxy_app, upstream):
    """An 8 MB asset sent at 800 kB/s: every pending answer once bytes flow says when to come back
    within a factor of two of the time the fetch really had left."""
    import threading

    data = os.urandom(8_000_000)
    proxy_app.state.proxy_clock = time.time  # real time: the estimate divides by it
    url = register(client, upstream, name="slow.tif", data=data, public=True, sync_wait_seconds=0)
    upstream.rate["/slow.tif"] = 800_000
    answers = [(time.monotonic(), client.get(url))]
    fetcher = threading.Thread(target=run_fetcher, args=[proxy_app])
    fetcher.start()
    while fetcher.is_alive():
        time.sleep(0.5)
        response = client.get(url)
        if response.status_code == 202:
            answers.append((time.monotonic(), response))
    fetcher.join()
    ended = time.monotonic()
    assert client.get(url).content == data
    # Once bytes flow: on a loaded machine the fetcher may take a while to start at all.
    flowing = [
        (at, int(r.headers["retry-after"]))
        for at, r in answers[1:]
        if ended - at > 1.5 and r.json()["fetched_bytes"] > 0
    ]
    assert len(flowing) >= 4, f"too few pending answers while bytes flowed: {flowing}"
    for at, retry_after in flowing[1:]:  # the first may come before any progress is known
        left = ended - at
        assert left / 2 - 0.5 <= retry_after <= 2 * left + 1, (retry_after, round(left, 1), flowing)


def _stac_collection(client, collection_id):
    body = {
        "type": "Collection",
        "id": collection_id,
        "stac_version": "1.0.0",
        "description": collection_id,
        "license": "CC-BY-4.0",
        "links": [],
        "extent": {"spatial": {"bbox": [[-180, -90, 180, 90]]}, "temporal": {"interval": [[None, None]]}},
    }
    assert client.post("/stac/collections", json=body, headers=ADMIN).status_code == 201
    item = {
        "type": "Feature",
        "stac_version": "1.0.0",
        "id": f"{collection_id}-1",
        "geometry": {"type": "Point", "coordinates": [10, 50]},
        "bbox": [10, 50, 10, 50],
        "properties": {"datetime": "2026-12-01T10:00:00Z"},
        "links": [],
        "assets": {"data": {"href": f"https://example.org/{collection_id}.tif"}},
    }
    assert client.post(f"/stac/collections/{collection_id}/items", json=item, headers=ADMIN).status_code == 201


def test_the_inventory_shows_a_private_collection_only_to_its_readers(client, proxy_app):
    _stac_collection(client, "open")
    _stac_collection(client, "closed")
    assert client.put("/proxied-collections/open", json={"public": True}, headers=ADMIN).status_code == 200
    policy = {"public": False, "readers": ["bob"]}
    assert client.put("/proxied-collections/closed", json=policy, headers=ADMIN).status_code == 200
    for login in ("bob", "eve"):
        body = {"login": login, "password": f"{login}-secret-1"}
        assert client.post("/datausers", json=body, headers=ADMIN).status_code == 201

    def seen(headers):
        listed = client.get("/stac/collections", headers=headers)
        assert listed.status_code == 200, listed.text
        collections = [c["id"] for c in listed.json()["collections"]]
        items = [f["id"] for f in client.get("/stac/search", headers=headers).json()["features"]]
        posted = [f["id"] for f in client.post("/stac/search", json={}, headers=headers).json()["features"]]
        assert items == posted
        return sorted(collections), sorted(items)

    assert seen({}) == (["open"], ["open-1"])  # anonymous: what its asset URLs would serve
    assert seen(basic("eve", "eve-secret-1")) == (["open"], ["open-1"])
    assert seen(basic("bob", "bob-secret-1")) == (["closed", "open"], ["closed-1", "open-1"])
    assert seen(ADMIN) == (["closed", "open"], ["closed-1", "open-1"])
    for path in (
        "/stac/collections/closed",
        "/stac/collections/closed/items",
        "/stac/collections/closed/items/closed-1",
    ):
        assert client.get(path).status_code == 404
        assert client.get(path, headers=basic("bob", "bob-secret-1")).status_code == 200
    assert client.get("/stac/search", params={"collections": "closed"}).status_code == 404
    assert client.get("/stac/collections", headers=basic("bob", "wrong")).status_code == 401
    assert client.get("/proxy/closed/closed-1/data").status_code == 401  # the asset says the same


def test_items_of_a_protected_collection_say_how_to_authenticate(client, proxy_app):
    """The STAC Authentication extension: the schemes the proxy accepts, and which assets need them."""
    from catalog.stac_documents import AUTHENTICATION

    for collection_id in ("open", "closed"):
        _stac_collection(client, collection_id)
        item = client.get(f"/stac/collections/{collection_id}/items/{collection_id}-1", headers=ADMIN).json()
        item["assets"]["proxied"] = {"href": f"http://testserver/proxy/{collection_id}/{collection_id}-1/data"}
        item["assets"]["notes"] = {"href": "notes.txt"}  # relative: not served by the proxy
        url = f"/stac/collections/{collection_id}/items/{collection_id}-1"
        assert client.put(url, json=item, headers=ADMIN).status_code == 200
    assert client.put("/proxied-collections/open", json={"public": True}, headers=ADMIN).status_code == 200
    policy = {"public": False, "readers": ["bob"]}
    assert client.put("/proxied-collections/closed", json=policy, headers=ADMIN).status_code == 200
    body = {"login": "bob", "password": "bob-secret-1"}
    assert client.post("/datausers", json=body, headers=ADMIN).status_code == 201
    bob = basic("bob", "bob-secret-1")

    closed = client.get("/stac/collections/closed/items/closed-1", headers=bob).json()
    assert AUTHENTICATION in closed["stac_extensions"]
    issuer = proxy_app.state.settings.oidc_issuer
    assert issuer, "the fixture's proxy accepts an OIDC issuer's tokens"
    assert closed["properties"]["auth:schemes"]["oidc"] == {
        "type": "openIdConnect",
        "openIdConnectUrl": f"{issuer}/.well-known/openid-configuration",
        "description": "an access token of this issuer, as a Bearer token",
    }
    assert closed["properties"]["auth:schemes"]["basic"] == {
        "type": "http",
        "scheme": "basic",
        "description": "a pds data user's login and password",
    }
    assert closed["assets"]["proxied"]["auth:refs"] == ["basic", "bearer", "oidc"]
    assert closed["assets"]["data"]["auth:refs"] == ["basic", "bearer", "oidc"]  # its upstream, proxied
    assert "auth:refs" not in closed["assets"]["notes"]  # served elsewhere: not the proxy's to say
    found = client.post("/stac/search", json={"collections": ["closed"]}, headers=bob).json()["features"]
    assert found[0]["properties"]["auth:schemes"] == closed["properties"]["auth:schemes"]
    collection = client.get("/stac/collections/closed", headers=bob).json()
    assert AUTHENTICATION in collection["stac_extensions"] and "basic" in collection["auth:schemes"]

    opened = client.get("/stac/collections/open/items/open-1").json()
    assert "auth:schemes" not in opened["properties"] and "auth:refs" not in opened["assets"]["proxied"]
    assert AUTHENTICATION not in opened["stac_extensions"]
    # What is stored is unchanged: a protected view is made for each answer.
    assert "auth:refs" not in client.get("/stac/collections/open/items/open-1").json()["assets"]["proxied"]


def _transactions_collection(client, collection_id="tx"):
    body = {
        "type": "Collection",
        "id": collection_id,
        "stac_version": "1.0.0",
        "description": "written through the Transactions extension",
        "license": "CC-BY-4.0",
        "links": [],
        "extent": {"spatial": {"bbox": [[-180, -90, 180, 90]]}, "temporal": {"interval": [[None, None]]}},
    }
    assert client.post("/stac/collections", json=body, headers=ADMIN).status_code == 201


def _transactions_item(item_id, assets):
    return {
        "type": "Feature",
        "stac_version": "1.0.0",
        "id": item_id,
        "geometry": {"type": "Point", "coordinates": [10, 50]},
        "bbox": [10, 50, 10, 50],
        "properties": {"datetime": "2026-12-01T10:00:00Z"},
        "links": [],
        "assets": assets,
    }


def test_an_item_written_through_transactions_is_served_by_the_proxy(client, proxy_app, upstream):
    href = upstream.add("scene.tif", DATA)
    public = proxy_app.state.settings.resolved_public_url()
    _transactions_collection(client)
    assert client.put("/proxied-collections/tx", json={"sync_wait_seconds": 0}, headers=ADMIN).status_code == 200
    borrowed = f"{public}/proxy/other/item9/data"  # another item's asset at this pds's proxy
    item = _transactions_item(
        "scene1",
        {
            "visual": {
                "href": href,
                "type": "image/tiff",
                "file:size": len(DATA),
                "alternate": {"mirror": {"href": "s3://mirror/scene.tif"}},
            },
            "readme": {"href": "docs/readme.txt"},
            "borrowed": {"href": borrowed},
            "archive": {"href": "ftp://archive.example/scene.tif"},
        },
    )
    created = client.post("/stac/collections/tx/items", json=item, headers=ADMIN)
    assert created.status_code == 201, created.text
    assets = created.json()["assets"]
    assert assets["visual"]["href"] == f"{public}/proxy/tx/scene1/visual"
    assert assets["visual"]["alternate"]["upstream"]["href"] == href
    assert assets["visual"]["alternate"]["mirror"] == {"href": "s3://mirror/scene.tif"}  # the writer's, kept
    assert assets["visual"]["file:size"] == len(DATA) and assets["visual"]["type"] == "image/tiff"
    assert assets["readme"] == {"href": "docs/readme.txt"}  # not fetchable by the proxy: as given
    assert assets["archive"] == {"href": "ftp://archive.example/scene.tif"}
    assert assets["borrowed"] == {"href": borrowed}  # already at the proxy: not wrapped again
    assert "https://stac-extensions.github.io/alternate-assets/v1.2.0/schema.json" in created.json()["stac_extensions"]
    served = client.get("/stac/collections/tx/items/scene1", headers=ADMIN).json()["assets"]
    # as stored; a reader is also told how to authenticate to the proxied ones (the collection is private)
    assert {k: {f: v for f, v in a.items() if f != "auth:refs"} for k, a in served.items()} == assets
    assert "auth:refs" in served["visual"] and "auth:refs" not in served["readme"]

    url = "/proxy/tx/scene1/visual"
    assert client.get(url, headers=ADMIN).status_code == 202
    assert run_fetcher(proxy_app) == 1
    assert client.get(url, headers=ADMIN).content == DATA
    assert client.get("/proxy/tx/scene1/readme", headers=ADMIN).status_code == 404
    with session_scope(proxy_app.state.engine) as session:
        assert get_asset(session, "other", "item9", "data") is None

    # Sent back as pds served it: the upstream, the registration and the cached copy stay.
    again = client.put("/stac/collections/tx/items/scene1", json=created.json(), headers=ADMIN)
    assert again.status_code == 200, again.text
    assert again.json()["assets"]["visual"] == assets["visual"]
    assert client.get(url, headers=ADMIN).content == DATA
    assert upstream.gets["/scene.tif"] == 1

    # A patch giving the asset a new href: registered again, the old cached copy dropped.
    moved = upstream.add("scene-v2.tif", DATA[::-1])
    patched = client.patch(
        "/stac/collections/tx/items/scene1", json={"assets": {"visual": {"href": moved}}}, headers=ADMIN
    )
    assert patched.status_code == 200, patched.text
    visual = patched.json()["assets"]["visual"]
    assert visual["href"] == f"{public}/proxy/tx/scene1/visual"
    assert visual["alternate"]["upstream"]["href"] == moved
    assert visual["alternate"]["mirror"] == {"href": "s3://mirror/scene.tif"}
    assert patched.json()["assets"]["readme"] == {"href": "docs/readme.txt"}  # the rest of the item is kept
    assert not list(proxy_app.state.settings.resolved_proxy_cache_dir().rglob("visual"))
    time.sleep(1.2)  # the proxy looks at a file it serves again after a second
    # A reader that was served the old copy is held while the new one is fetched (up to
    # proxy_rewait_seconds); here the fetcher runs only after the answer, so it is held briefly.
    proxy_app.state.settings.proxy_rewait_seconds = 0.5
    assert client.get(url, headers=ADMIN).status_code == 202
    assert run_fetcher(proxy_app) == 1
    assert client.get(url, headers=ADMIN).content == DATA[::-1]
    assert upstream.gets["/scene-v2.tif"] == 1


def test_a_transaction_that_would_lose_what_the_writer_wrote_is_refused(client, proxy_app, upstream):
    href = upstream.add("scene.tif", DATA)
    _transactions_collection(client)
    # The writer's own alternate "upstream" names another copy: taking the name would drop it.
    item = _transactions_item(
        "scene1", {"visual": {"href": href, "alternate": {"upstream": {"href": "https://elsewhere.example/x.tif"}}}}
    )
    refused = client.post("/stac/collections/tx/items", json=item, headers=ADMIN)
    assert refused.status_code == 400
    assert "rename that alternate" in refused.json()["reason"]
    assert client.get("/stac/collections/tx/items/scene1", headers=ADMIN).status_code == 404
    with session_scope(proxy_app.state.engine) as session:
        assert get_asset(session, "tx", "scene1", "visual") is None
    # A malformed item in a batch: nothing of the batch is kept or registered.
    good = _transactions_item("good", {"data": {"href": href}})
    bad = _transactions_item("bad", {"data": {"href": href}}) | {"geometry": {"type": "Point"}}
    batch = {"type": "FeatureCollection", "features": [good, bad]}
    assert client.post("/stac/collections/tx/items", json=batch, headers=ADMIN).status_code == 400
    assert client.get("/stac/collections/tx/items/good", headers=ADMIN).status_code == 404
    with session_scope(proxy_app.state.engine) as session:
        assert get_asset(session, "tx", "good", "data") is None
