"""The API passes stac-api-validator (core, collections, features, item search, filter, sort, fields)."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.stac.conftest import item

CONFORMANCE = ["core", "collections", "features", "item-search", "filter", "item-search#sort", "item-search#fields"]
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
            # the validator opens every asset: this one is real JSON the API serves (relative to the
            # item: an absolute URL would be served through the proxy, whose extension schema is
            # not among the schemas the offline validator has)
            assets={
                "metadata": {
                    "href": "../../sentinel-2-l2a",
                    "roles": ["metadata"],
                    "type": "application/json",
                }
            },
            **{"eo:cloud_cover": n % 100, "mission": "sentinel-2a" if n % 2 else "landsat-8"},
        )
        for n in range(40)
    ]
    stac_server.create_items("sentinel-2-l2a", items)

    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.stac.offline_validator",
            "--root-url",
            f"{stac_server.url}/stac/",
            *[arg for c in CONFORMANCE for arg in ("--conformance", c)],
            "--collection",
            "sentinel-2-l2a",
            "--geometry",
            json.dumps(GEOMETRY),
            "--fields-nested-property",
            "properties.eo:cloud_cover",
            "--validate-pagination",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    output = result.stdout + result.stderr
    assert "Failed." not in output, output
    assert result.returncode == 0, output
    assert "errors: none" in output.lower() or "Errors: none" in output, output
