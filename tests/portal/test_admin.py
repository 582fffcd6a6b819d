"""Creating data users, grants and policies through the API and `pds user` (administrators only)."""

from __future__ import annotations

import pytest
from litestar.testing import TestClient

from api.app import create_app
from tests.api.conftest import ADMIN, cli_runner


@pytest.fixture
def client(settings, sqlite_engine, store):
    with TestClient(create_app(settings, engine=sqlite_engine, store=store)) as client:
        for name in ("bucket", "site"):
            assert client.post("/destinations", json={"name": name}, headers=ADMIN).status_code == 201
        yield client


@pytest.fixture
def pds(client, monkeypatch, capsys):
    return cli_runner(client, monkeypatch, capsys)


def test_the_cli_creates_a_data_user_who_reaches_only_its_grants(pds, client, monkeypatch, tmp_path):
    monkeypatch.setenv("CAROL_PASSWORD", "carol-pw-1")
    key = tmp_path / "id.pub"
    key.write_text("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGk5 carol@lab\n")
    code, out, err = pds(
        "user", "add", "carol", "--password-env", "CAROL_PASSWORD", "--ssh-key", str(key), "--upload-quota", "1000"
    )
    assert (code, out.strip(), err) == (0, "data user carol created", "")
    assert pds("user", "grant", "carol", "--destination", "bucket", "--ops", "get,dir")[0] == 0
    # The `pds` command set the shared client's auth to the admin: each request names its own.
    carol = ("carol", "carol-pw-1")
    listing = client.get("/portal", auth=carol).json()
    assert [e["name"] for e in listing["entries"]] == ["bucket"]
    assert client.get("/portal/site/x", auth=carol).status_code == 404
    r = client.put("/portal/bucket/x.bin", content=b"x", auth=carol)
    assert (r.status_code, r.json()["reason"]) == (403, "data user carol may not put at bucket")
    shown = client.get("/datausers/carol", headers=ADMIN).json()
    assert shown["upload_quota_bytes"] == 1000
    assert shown["ssh_keys"] == ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGk5 carol@lab"]
    assert shown["grants"] == [{"destination": "bucket", "policy": None, "operations": "get,dir"}]
    code, out, _ = pds("user", "list")
    assert "carol\tuser\tactive\tbucket:get,dir" in out
    assert pds("user", "grant", "carol", "--destination", "site", "--ops", "all,operate")[0] == 0
    code, out, _ = pds("user", "list")  # an operate grant makes an operator
    everything = "get,put,delete,dir,mkdir,rmdir,rename,size,mtime,operate"
    assert f"carol\toperator\tactive\tbucket:get,dir, site:{everything}" in out
    # Data users may not manage data users.
    assert client.get("/datausers", auth=carol).status_code == 403
    assert client.post("/datausers", json={"login": "eve", "password": "x"}, auth=carol).status_code == 403


def test_policies_and_s3_secrets(pds, client, monkeypatch):
    monkeypatch.setenv("PW", "dave-pw-1")
    assert pds("user", "add", "dave", "--password-env", "PW")[0] == 0
    code, out, _ = pds("policy", "add", "all-sites", "--destination", "bucket", "--destination", "site")
    assert (code, out.strip()) == (0, "policy all-sites: bucket, site")
    assert pds("user", "grant", "dave", "--policy", "all-sites", "--ops", "dir")[0] == 0
    listing = client.get("/portal", auth=("dave", "dave-pw-1")).json()
    assert [e["name"] for e in listing["entries"]] == ["bucket", "site"]
    code, out, _ = pds("user", "s3secret", "dave")
    assert code == 0 and "access key id: dave" in out
    assert client.get("/datausers/dave", headers=ADMIN).json()["has_s3_secret"] is True


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (("user", "add", "x"), "user add needs a password"),
        (("user", "grant", "nobody", "--destination", "bucket", "--ops", "get"), "404 no data user 'nobody'"),
        (("user", "grant", "admin", "--destination", "bucket", "--ops", "fly"), "unknown operation(s) fly"),
        (("user", "grant", "admin", "--destination", "nosuch", "--ops", "get"), "404 no destination 'nosuch'"),
        (("user", "set", "admin"), "user set needs at least one setting"),
    ],
)
def test_bad_user_commands_say_why(pds, argv, message):
    code, out, err = pds(*argv)
    usage = message.startswith(("user add needs", "user set needs"))  # said before asking the API
    assert code == (2 if usage else 1) and message in err, (code, err)
