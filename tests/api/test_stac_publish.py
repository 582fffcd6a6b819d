"""Publishing a destination with `pds stac` and pushing into it through the portal."""

from __future__ import annotations

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

    item = client.get("/stac/collections/scenes/items/scene-1")
    assert item.status_code == 200, item.text
    body = item.json()
    assert body["properties"]["datetime"] == "2026-11-20T10:30:00Z"
    assert body["properties"]["pds:data_file_id"] == pushed.json()["data_file_id"]
    assert body["assets"]["data"]["href"] == f"{settings.resolved_public_url()}/proxy/scenes/scene-1/data"
    assert body["assets"]["data"]["alternate"]["upstream"]["href"].startswith("file://")
    assert client.get("/stac/collections/scenes/items/broken").status_code == 404

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
    assert code == 1 and "--collection" in err
