from __future__ import annotations

import base64
from dataclasses import dataclass

import httpx
import pytest

from api.app import create_app
from tests.servers._common import free_port, serving

ADMIN = {"Authorization": "Basic " + base64.b64encode(b"admin:admin").decode()}


@dataclass
class StacServer:
    url: str
    """The API's base URL; the STAC landing page is at `{url}/stac/`."""
    http: httpx.Client
    """A client with the administrator's credentials."""

    def create_collection(self, collection_id: str, **fields: object) -> None:
        response = self.http.post("/stac/collections", json={"id": collection_id, **fields})
        assert response.status_code == 201, response.text

    def create_items(self, collection_id: str, items: list[dict]) -> None:
        for start in range(0, len(items), 500):
            batch = {"type": "FeatureCollection", "features": items[start : start + 500]}
            response = self.http.post(f"/stac/collections/{collection_id}/items", json=batch)
            assert response.status_code == 201, response.text


@pytest.fixture
def stac_server(engine, store, settings):
    """The API served by uvicorn on a free port (SQLite and PostgreSQL), in a thread of this process;
    its public URL is that address, so the hrefs it writes (the proxy's) name it."""
    port = free_port()
    public = settings.model_copy(update={"public_url": f"http://127.0.0.1:{port}"})
    with (
        serving(create_app(public, engine=engine, store=store), port) as url,
        httpx.Client(base_url=url, headers=ADMIN, timeout=60) as http,
    ):
        yield StacServer(url, http)


def item(item_id: str, x: float, y: float, when: str, assets: dict | None = None, **properties: object) -> dict:
    """A small item: a 1°×1° square at (x, y)."""
    return {
        "type": "Feature",
        "stac_version": "1.1.0",
        "id": item_id,
        "geometry": {
            "type": "Polygon",
            "coordinates": [[[x, y], [x + 1, y], [x + 1, y + 1], [x, y + 1], [x, y]]],
        },
        "bbox": [x, y, x + 1, y + 1],
        "properties": {"datetime": when, **properties},
        "assets": assets or {},
        "links": [],
    }
