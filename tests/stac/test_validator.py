"""The API passes stac-api-validator (core, collections, features, item search, filter, sort, fields),
the extensions its items declare validated against their published schemas."""

from __future__ import annotations

from catalog.stac import ALTERNATE_ASSETS
from catalog.stac_documents import AUTHENTICATION
from tests.stac.conftest import ADMIN, item
from tests.stac.offline_validator import run_api_validator

# Toronto, the validator's own intersection example: the items below lie inside it and outside it.
GEOMETRY = {
    "type": "Polygon",
    "coordinates": [[[-79.6, 43.5], [-79.1, 43.5], [-79.1, 43.9], [-79.6, 43.9], [-79.6, 43.5]]],
}


def test_stac_api_validator_finds_no_error(stac_server):
    stac_server.create_collection("sentinel-2-l2a", description="test scenes", title="Sentinel-2")
    items = [
        item(
            f"scene-{n:03d}",
            -79.6 + (n % 5) * 0.1 - (40 if n % 3 == 0 else 0),
            43.5 + (n % 4) * 0.1,
            f"2021-04-{1 + n % 28:02d}T04:39:{n % 60:02d}Z",
            # an absolute href: the API serves it through its proxy (alternate-assets keeps this one as
            # `upstream`), and the collection, proxied, is private (the Authentication extension says how
            # to sign in); the validator opens every asset, and finds it pending, since nobody fetches it
            assets={
                "metadata": {
                    "href": f"{stac_server.url}/stac/collections/sentinel-2-l2a",
                    "roles": ["metadata"],
                    "type": "application/json",
                }
            },
            **{"eo:cloud_cover": n % 100, "mission": "sentinel-2a" if n % 2 else "landsat-8"},
        )
        for n in range(40)
    ]
    stac_server.create_items("sentinel-2-l2a", items)
    # a pending asset answers at once instead of after the proxy's wait for a fetch
    stac_server.http.put("/proxied-collections/sentinel-2-l2a", json={"sync_wait_seconds": 0}).raise_for_status()
    served = stac_server.http.get("/stac/collections/sentinel-2-l2a/items/scene-001").json()
    assert served["assets"]["metadata"]["href"] == f"{stac_server.url}/proxy/sentinel-2-l2a/scene-001/metadata"
    assert {ALTERNATE_ASSETS, AUTHENTICATION} <= set(served["stac_extensions"])

    run_api_validator(
        f"{stac_server.url}/stac/", "sentinel-2-l2a", GEOMETRY, "properties.eo:cloud_cover", headers=ADMIN
    )
