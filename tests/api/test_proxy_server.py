"""The proxy as `python -m api` serves it (granian, /proxy/ below Litestar): a cached asset's whole file
(sent by the server from the file), ranges, validators and credentials over real HTTP."""

from __future__ import annotations

import os
import sys

import httpx
import pytest

from catalog.database import make_engine, migrate, session_scope
from catalog.models import utcnow
from catalog.proxy import inject, register_asset, set_policy
from catalog.users import ensure_user
from tests.servers._common import free_port, spawn, terminate, wait_until

DATA = os.urandom(3 * 1024 * 1024 + 17)  # above the inline limit: the whole file goes by pathsend


@pytest.fixture
def api(tmp_path):
    data_dir = tmp_path / "data"
    engine = make_engine(f"sqlite:///{data_dir / 'pds.db'}")
    migrate(engine)
    source = tmp_path / "scene.tif"
    source.write_bytes(DATA)
    with session_scope(engine) as session:
        ensure_user(session, "alice", "secret")
        register_asset(session, "s2", "item1", "visual", "http://upstream.invalid/scene.tif")
        set_policy(session, "s2", public=False, readers=["alice"])
    with session_scope(engine) as session:
        inject(session, data_dir / "proxy-cache", "s2", "item1", "visual", source, now=utcnow())
    engine.dispose()
    port = free_port()
    env = os.environ | {"PDS_DATA_DIR": str(data_dir), "PDS_API_PORT": str(port), "PDS_EVENT_LOG": "off"}
    env.pop("PDS_API_SERVER", None)
    server = spawn([sys.executable, "-m", "api"], tmp_path / "api.log", env)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: httpx.get(f"{url}/health", timeout=2).status_code == 200, 60, "the API")
        yield url
    finally:
        terminate(server, grace=15)  # its process group: granian's worker too


def test_cached_asset_over_the_deployed_server(api):
    url, alice = f"{api}/proxy/s2/item1/visual", ("alice", "secret")
    assert httpx.get(url).status_code == 401
    assert httpx.get(url, auth=("alice", "wrong")).status_code == 401

    whole = httpx.get(url, auth=alice)
    assert whole.status_code == 200
    assert whole.headers["server"] == "granian"
    assert whole.content == DATA
    assert int(whole.headers["content-length"]) == len(DATA)
    etag, modified = whole.headers["etag"], whole.headers["last-modified"]

    part = httpx.get(url, auth=alice, headers={"Range": "bytes=1000-17383"})
    assert part.status_code == 206
    assert part.content == DATA[1000:17384]
    assert part.headers["content-range"] == f"bytes 1000-17383/{len(DATA)}"
    assert part.headers["etag"] == etag

    tail = httpx.get(url, auth=alice, headers={"Range": "bytes=-5"})
    assert tail.status_code == 206 and tail.content == DATA[-5:]
    assert httpx.get(url, auth=alice, headers={"If-None-Match": etag}).status_code == 304
    assert httpx.get(url, auth=alice, headers={"If-Modified-Since": modified}).status_code == 304
    assert httpx.get(url, auth=alice, headers={"If-Match": '"other"'}).status_code == 412
    unsatisfiable = httpx.get(url, auth=alice, headers={"Range": f"bytes={len(DATA)}-"})
    assert unsatisfiable.status_code == 416
    assert unsatisfiable.headers["content-range"] == f"bytes */{len(DATA)}"

    head = httpx.head(url, auth=alice)
    assert head.status_code == 200 and head.content == b""
    assert int(head.headers["content-length"]) == len(DATA)
    assert httpx.get(f"{api}/proxy/s2/item1/visual.aux.xml", auth=alice).status_code == 404
    assert httpx.get(f"{api}/health").status_code == 200  # the rest of the API is Litestar's, as before
