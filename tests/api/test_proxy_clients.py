"""Real clients through a real proxy: the API under uvicorn, the proxy fetcher flow on the session's
Prefect server, an upstream HTTP server and moto S3. GDAL (through rasterio), curl and urllib3 read
assets that are not cached yet; 200 concurrent requests make one upstream fetch."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
from urllib.parse import urlsplit

import httpx
import numpy as np
import pytest
import rasterio
import urllib3
from rasterio.windows import Window

from catalog.database import migrate, session_scope
from catalog.models import Host, utcnow
from catalog.proxy import get_asset, register_asset, set_policy
from tasks import runtime as runtime_module
from tests.api.conftest import ADMIN
from tests.servers._common import free_port, wait_until
from tests.servers.upstream import UpstreamServer

WINDOW = Window(300, 200, 256, 128)


def make_cog(path):
    """A 1024×1024 tiled Cloud-Optimized GeoTIFF with overviews, written by GDAL itself."""
    data = (np.arange(1024 * 1024, dtype=np.uint32) % 65521).astype(np.uint16).reshape(1024, 1024)
    profile = {
        "driver": "COG",
        "width": 1024,
        "height": 1024,
        "count": 1,
        "dtype": "uint16",
        "blocksize": 256,
        "crs": "EPSG:4326",
        "transform": rasterio.transform.from_origin(0, 10, 0.01, 0.01),
    }
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data, 1)
    return path


def gdal_window(url, **env):
    """Read WINDOW through GDAL's /vsicurl/ with the given configuration options."""
    with rasterio.Env(**env), rasterio.open(f"/vsicurl/{url}") as src:
        return src.read(1, window=WINDOW)


def local_window(path):
    with rasterio.open(path) as src:
        return src.read(1, window=WINDOW)


ACCESS_LINE = re.compile(r'"(GET|HEAD) (\S+) HTTP/[\d.]+" (\d{3})')


class LiveProxy:
    """The API (uvicorn, access log on) and the proxy fetcher flow, each its own process as under
    `pds up`: GDAL holds the GIL while it reads, so a server in the test's process would stall."""

    def __init__(self, rt, url, access_log):
        self.rt, self.url, self.access_log = rt, url, access_log

    def asset(self, collection, name, href, *, host=None, **policy):
        with session_scope(self.rt.engine) as session:
            register_asset(session, collection, "item1", name, href, upstream_host=host, media_type="image/tiff")
            set_policy(session, collection, **policy)
        return f"{self.url}/proxy/{collection}/item1/{name}"

    @property
    def log(self):
        """(method, path, status) of every request the API answered, in order."""
        text = self.access_log.read_text(errors="replace")
        return [(m, p, int(s)) for m, p, s in ACCESS_LINE.findall(text)]


@pytest.fixture(params=[202])
def live(request, prefect_server, tmp_path, monkeypatch):
    port = free_port()
    env = {
        "PDS_DATA_DIR": str(tmp_path / "data"),
        "PDS_PROXY_PENDING_STATUS": str(request.param),
        "PDS_API_PORT": str(port),
        "PDS_EVENT_LOG": "off",
        "PREFECT_API_URL": prefect_server.api_url,
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    runtime_module.runtime.cache_clear()
    rt = runtime_module.runtime()
    migrate(rt.engine)
    access_log = tmp_path / "api.log"
    api_command = [
        sys.executable,
        "-m",
        "uvicorn",
        "--factory",
        "api.app:app_from_env",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--access-log",
        "--log-level",
        "info",
    ]
    children = [
        subprocess.Popen(api_command, stdout=access_log.open("wb"), stderr=subprocess.STDOUT),
        subprocess.Popen(
            [sys.executable, "-m", "flows.proxy_fetch", "--name", "test-fetcher"],
            stdout=(tmp_path / "fetcher.log").open("wb"),
            stderr=subprocess.STDOUT,
        ),
    ]
    proxy = LiveProxy(rt, f"http://127.0.0.1:{port}", access_log)
    try:
        wait_until(lambda: httpx.get(f"{proxy.url}/health", timeout=2).status_code == 200, 180, "the API")
        # The fetcher is up once it has fetched a first asset (its Prefect flow run takes a while to start).
        warmup = proxy.asset("warmup", "probe", "http://127.0.0.1:1/unused", sync_wait_seconds=0, public=True)
        with session_scope(rt.engine) as session:
            from catalog.proxy import inject

            (tmp_path / "w.bin").write_bytes(b"w")
            inject(
                session,
                rt.settings.resolved_proxy_cache_dir(),
                "warmup",
                "item1",
                "probe",
                tmp_path / "w.bin",
                now=utcnow(),
            )
        assert httpx.get(warmup).status_code == 200
        wait_until(
            lambda: b"proxy fetcher" in (tmp_path / "fetcher.log").read_bytes()
            or b"Beginning flow run" in (tmp_path / "fetcher.log").read_bytes(),
            180,
            "the proxy fetcher",
        )
        yield proxy
    finally:
        for child in children:
            child.terminate()
            child.wait(30)
        runtime_module.runtime.cache_clear()


@pytest.fixture
def upstream(tmp_path):
    server = UpstreamServer(tmp_path / "upstream").start()
    yield server
    server.stop()


GDAL_202 = {"GDAL_HTTP_MAX_RETRY": "20", "GDAL_HTTP_RETRY_DELAY": "0.5", "GDAL_HTTP_RETRY_CODES": "202"}


def test_gdal_reads_a_window_of_an_uncached_cog_retrying_202(live, upstream, tmp_path):
    assert rasterio.__gdal_version__ >= "3.10"  # the first GDAL that retries 202 (GDAL_HTTP_RETRY_CODES)
    cog = make_cog(tmp_path / "scene.tif")
    upstream.add("scene.tif", cog.read_bytes())
    upstream.delay["/scene.tif"] = 1.5  # longer than the dataset's wait: the first answer is 202
    url = live.asset("s2", "visual", f"{upstream.url}/scene.tif", sync_wait_seconds=0.2)
    pixels = gdal_window(url, **GDAL_202, GDAL_HTTP_USERPWD="admin:admin", GDAL_HTTP_AUTH="BASIC")
    assert np.array_equal(pixels, local_window(cog))
    statuses = [(m, p, s) for m, p, s in live.log]
    asset_path = "/proxy/s2/item1/visual"
    assert (next(s for m, p, s in statuses if p == asset_path)) == 202  # the first answer was pending
    assert [s for m, p, s in statuses if p == asset_path and s not in (200, 202, 206)] == []
    probes = [(p, s) for m, p, s in statuses if p.startswith("/proxy/s2/") and p != asset_path]
    assert probes and all(s == 404 for p, s in probes), probes  # sidecars and the directory: fast 404
    assert upstream.gets["/scene.tif"] == 1
    ranged = [s for m, p, s in statuses if p == asset_path and s == 206]
    assert ranged  # range reads after the first success were never pending
    first_ok = next(i for i, (m, p, s) in enumerate(statuses) if p == asset_path and s == 200)
    assert all(s in (200, 206) for m, p, s in statuses[first_ok:] if p == asset_path)


@pytest.mark.parametrize("live", [503], indirect=True)
def test_503_mode_serves_gdal_curl_and_fsspec_style_clients(live, upstream, tmp_path):
    cog = make_cog(tmp_path / "scene.tif")
    upstream.add("scene.tif", cog.read_bytes())
    upstream.delay["/scene.tif"] = 1.5
    url = live.asset("s2", "visual", f"{upstream.url}/scene.tif", sync_wait_seconds=0.2, public=True)
    pixels = gdal_window(url, GDAL_HTTP_MAX_RETRY="20", GDAL_HTTP_RETRY_DELAY="0.5")
    assert np.array_equal(pixels, local_window(cog))
    assert any(p.endswith("/visual") and s == 503 for m, p, s in live.log)
    # curl --retry honours Retry-After on 503.
    data = upstream.add("other.bin", np.random.default_rng(1).bytes(3_000_000))
    upstream.delay["/other.bin"] = 1.5
    other = live.asset("s2b", "data", data, sync_wait_seconds=0.2, public=True)
    out = tmp_path / "curl.out"
    subprocess.run(["curl", "-sS", "--fail", "--retry", "10", "-o", str(out), other], check=True, timeout=120)
    assert out.read_bytes() == (upstream.root / "other.bin").read_bytes()
    assert any(p.endswith("/data") and s == 503 for m, p, s in live.log)


def test_urllib3_retrying_202_gets_the_whole_file(live, upstream):
    payload = np.random.default_rng(2).bytes(5_000_000)
    href = upstream.add("big.bin", payload)
    upstream.delay["/big.bin"] = 1.0
    url = live.asset("s3x", "data", href, sync_wait_seconds=0.1, public=True)
    retry = urllib3.Retry(total=30, status_forcelist=[202], backoff_factor=0.2, raise_on_status=False)
    response = urllib3.PoolManager().request("GET", url, retries=retry)
    assert response.status == 200
    assert response.data == payload


def test_200_concurrent_requests_make_one_upstream_fetch_and_a_dropped_client_cancels_nothing(live, upstream):
    payload = np.random.default_rng(3).bytes(20_000_000)
    href = upstream.add("hot.bin", payload)
    upstream.delay["/hot.bin"] = 2.0
    url = live.asset("hot", "data", href, sync_wait_seconds=60, public=True)
    with pytest.raises(httpx.TimeoutException):
        httpx.get(url, timeout=0.3)  # the first client gives up at once

    async def many():
        limits = httpx.Limits(max_connections=200)
        async with httpx.AsyncClient(timeout=120, limits=limits) as client:
            return await asyncio.gather(*(client.get(url, headers={"Range": "bytes=0-1023"}) for _ in range(200)))

    answers = asyncio.run(many())
    assert [r.status_code for r in answers] == [206] * 200
    assert all(r.content == payload[:1024] for r in answers)
    assert upstream.gets["/hot.bin"] == 1
    with session_scope(live.rt.engine) as session:
        assert get_asset(session, "hot", "item1", "data").fetch_count == 1


def test_presigned_redirect_lets_gdal_read_ranges_from_s3_directly(live, s3_server, tmp_path):
    cog = make_cog(tmp_path / "scene.tif")
    s3_server.reset()
    client = s3_server.client()
    client.create_bucket(Bucket="protected", CreateBucketConfiguration={"LocationConstraint": s3_server.region})
    client.upload_file(str(cog), "protected", "s2/scene.tif")
    with session_scope(live.rt.engine) as session:
        session.add(
            Host(
                name="objects",
                protocol="s3",
                address=s3_server.endpoint_url,
                login=s3_server.access_key,
                password=s3_server.secret_key,
                options={"region": s3_server.region},
            )
        )
    url = live.asset("s2p", "visual", "s3://protected/s2/scene.tif", host="objects", mode="presign")
    env = {"GDAL_HTTP_USERPWD": "admin:admin", "GDAL_HTTP_AUTH": "BASIC", "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR"}
    with rasterio.Env(**env), rasterio.open(f"/vsicurl/{url}") as src:
        pixels = src.read(1, window=WINDOW)
        overview = src.read(1, out_shape=(128, 128))
    assert np.array_equal(pixels, local_window(cog))
    assert overview.shape == (128, 128)
    asset_requests = [s for m, p, s in live.log if p == "/proxy/s2p/item1/visual"]
    assert asset_requests == [302]  # every later range went to S3 with the presigned URL


def test_gdal_reads_the_asset_of_an_item_written_through_transactions(live, upstream, tmp_path):
    """An item POSTed through STAC Transactions: GDAL reads its asset through the proxy at once, and
    pystac-client sees the provider's href kept as the asset's alternate."""
    from pystac_client import Client

    cog = make_cog(tmp_path / "scene.tif")
    href = upstream.add("tx-scene.tif", cog.read_bytes())
    admin = ("admin", "admin")
    collection = {
        "type": "Collection",
        "id": "tx",
        "stac_version": "1.0.0",
        "description": "written through the Transactions extension",
        "license": "CC-BY-4.0",
        "links": [],
        "extent": {"spatial": {"bbox": [[0, 0, 11, 11]]}, "temporal": {"interval": [[None, None]]}},
    }
    assert httpx.post(f"{live.url}/stac/collections", json=collection, auth=admin).status_code == 201
    item = {
        "type": "Feature",
        "stac_version": "1.0.0",
        "id": "scene1",
        "geometry": {"type": "Point", "coordinates": [5, 5]},
        "bbox": [5, 5, 5, 5],
        "properties": {"datetime": "2026-12-01T10:00:00Z"},
        "links": [],
        "assets": {"visual": {"href": href, "type": "image/tiff; application=geotiff"}},
    }
    created = httpx.post(f"{live.url}/stac/collections/tx/items", json=item, auth=admin)
    assert created.status_code == 201, created.text

    client = Client.open(f"{live.url}/stac/", headers=ADMIN)  # the collection's assets are private
    (found,) = client.search(collections=["tx"], ids=["scene1"]).items()
    asset = found.assets["visual"]
    assert asset.extra_fields["alternate"]["upstream"]["href"] == href
    assert any("alternate-assets" in url for url in found.stac_extensions)
    assert urlsplit(asset.href).path == "/proxy/tx/scene1/visual"

    pixels = gdal_window(asset.href, **GDAL_202, GDAL_HTTP_USERPWD="admin:admin", GDAL_HTTP_AUTH="BASIC")
    assert np.array_equal(pixels, local_window(cog))
    assert upstream.gets["/tx-scene.tif"] == 1
