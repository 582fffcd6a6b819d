"""`pds proxy`: register assets, inject harvested data, set policies, quotas and groups — then read the
asset through the proxy with what was set."""

from __future__ import annotations

import json
import os

from litestar.testing import TestClient

from tests.api.conftest import ADMIN, basic

DATA = os.urandom(50_000)


def test_proxy_commands_drive_what_the_proxy_serves(pds, client, app, tmp_path):
    code, out, err = pds(
        "proxy", "register", "s2", "item1", "visual", "--href", "https://example.org/t.tif", "--size", str(len(DATA))
    )
    assert code == 0, err
    assert out.strip().endswith("/proxy/s2/item1/visual")

    code, out, _ = pds("proxy", "assets", "--collection", "s2")
    assert code == 0 and "s2/item1/visual\tnot cached (none)\thttps://example.org/t.tif" in out

    harvested = tmp_path / "t.tif"
    harvested.write_bytes(DATA)
    code, out, err = pds("proxy", "cache", "s2", "item1", "visual", str(harvested))
    assert code == 0, err
    assert f"cached {len(DATA)} bytes" in out

    code, out, err = pds("proxy", "policy", "s2", "--no-public", "--reader", "group:eo", "--json")
    assert code == 0, err
    assert json.loads(out)["readers"] == ["group:eo"] and json.loads(out)["public"] is False
    code, out, _ = pds("proxy", "policy", "s2")
    assert out.strip() == "s2: cache, permanent, readers: group:eo"

    made = client.post("/datausers", json={"login": "bob", "password": "bob-secret-1"}, headers=ADMIN)
    assert made.status_code == 201, made.text
    reader = TestClient(app)  # `pds` left its administrator credentials on `client`
    bob = basic("bob", "bob-secret-1")
    assert reader.get("/proxy/s2/item1/visual", headers=bob).status_code == 403  # not in group eo yet
    code, out, err = pds("proxy", "member", "eo", "bob")
    assert code == 0 and out.strip() == "bob is in group eo", err
    code, out, err = pds("proxy", "quota", "group:eo", "--period", "60", "--max-requests", "2")
    assert code == 0, err
    assert out.strip() == "group:eo per 60 s: max_requests 2"

    first = reader.get("/proxy/s2/item1/visual", headers=bob | {"Range": "bytes=0-99"})
    assert first.status_code == 206 and first.content == DATA[:100]
    assert reader.get("/proxy/s2/item1/visual", headers=bob).content == DATA
    assert reader.get("/proxy/s2/item1/visual", headers=bob).status_code == 429  # the group's quota


def test_proxy_command_errors_are_one_line(pds):
    code, _, err = pds("proxy", "policy", "s2", "--mode", "presign", "--retention", "rolling")
    assert code == 1 and err.startswith("pds: error: 400") and "retention_days" in err
    code, _, err = pds("proxy", "cache", "s2", "item1", "nothing", "/no/such/file")
    assert code == 1 and err.count("\n") == 1
