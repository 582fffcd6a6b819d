"""Authorisation as an attacker with an ordinary account would try it: the access table over every
operation of the OpenAPI document, and the holes an ordinary data user could once walk through."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from sqlmodel import select

from catalog.database import session_scope
from catalog.models import DataFile, DataTransfer
from catalog.products import ProductStatus
from tests.api.access_table import ROLES, TABLE
from tests.api.conftest import ADMIN, basic

CREDENTIALS = {
    "anonymous": {},
    "no grant": basic("nogrant", "pw-nogrant-1"),
    "granted": basic("reader", "pw-reader-1"),
    "operator": basic("op", "pw-operator-1"),
    "admin": ADMIN,
}


def _deep(depth: int) -> str:
    """A JSON object nested `depth` times (as text: encoders refuse to make it)."""
    return '{"a":' * depth + "{}" + "}" * depth


def _deep_filter(depth: int) -> str:
    """A STAC search whose CQL2 filter nests `not` `depth` times."""
    innermost = '{"op":"=","args":[{"property":"id"},"x"]}'
    nested = '{"op":"not","args":[' * depth + innermost + "]}" * depth
    return '{"filter-lang":"cql2-json","filter":' + nested + "}"


def _ok(response, *expected):
    assert response.status_code in expected, response.text
    return response


@pytest.fixture
def world(client, tmp_path):
    """Two destinations, their hosts, an acquisition host, one data file each, the five roles."""
    for name in ("site1", "site2"):
        _ok(client.post("/destinations", json={"name": name}, headers=ADMIN), 201)
    for host, site in (("h1", "site1"), ("h2", "site2")):
        (tmp_path / host).mkdir()
        body = {"name": host, "protocol": "file", "address": str(tmp_path / host), "login": "ops", "password": "pw"}
        _ok(client.post("/hosts", json=body, headers=ADMIN), 201)
        _ok(client.post(f"/destinations/{site}/hosts", json={"host": host}, headers=ADMIN), 201)
    (tmp_path / "src1" / "out").mkdir(parents=True)
    source = {"name": "src1", "kind": "acquisition", "protocol": "file", "address": str(tmp_path / "src1")}
    _ok(client.post("/hosts", json=source, headers=ADMIN), 201)
    _ok(client.post("/destinations/site1/hosts", json={"host": "src1", "kind": "acquisition"}, headers=ADMIN), 201)
    ids = {}
    for site, name in (("site1", "a.bin"), ("site2", "b.bin")):
        pushed = _ok(client.put(f"/portal/{site}/{name}?stream=oper{site[-1]}", content=b"data", headers=ADMIN), 201)
        n = site[-1]
        ids[f"t{n}"], ids[f"d{n}"] = pushed.json()["transfers"][0]["id"], pushed.json()["data_file_id"]
    for login, password, grant in (
        ("nogrant", "pw-nogrant-1", None),
        ("reader", "pw-reader-1", "get,put,dir"),
        ("op", "pw-operator-1", "all,operate"),
    ):
        _ok(client.post("/datausers", json={"login": login, "password": password}, headers=ADMIN), 201)
        if grant:
            body = {"operations": grant}
            _ok(client.put(f"/datausers/{login}/destinations/site1", json=body, headers=ADMIN), 200)
    return ids


def test_every_operation_of_the_openapi_document_is_in_the_access_table(client):
    document = client.get("/schema/openapi.json").json()
    operations = {(method.upper(), path) for path, ops in document["paths"].items() for method in ops}
    in_table = {(row.method, row.operation) for row in TABLE}
    assert operations - in_table == set(), "operations missing from the access table"
    assert in_table - operations == set(), "rows of the table name no operation"


def test_each_role_gets_what_the_access_table_says(client, world):
    mismatches = []
    for row in TABLE:
        url = row.url.format(**world)
        for role, expected in zip(ROLES, row.expected, strict=True):
            response = client.request(row.method, url, headers=CREDENTIALS[role], json=row.json, content=row.content)
            if response.status_code != expected:
                mismatches.append(f"{row.method} {url} as {role}: {response.status_code}, not {expected}")
            elif row.listing and role != "admin" and "site2" in response.text:
                mismatches.append(f"{row.method} {url} as {role} shows something of site2: {response.text[:200]}")
            if response.status_code >= 400 and row.method != "HEAD":
                body = response.json()
                assert set(body) >= {"status", "reason", "request_id"}, (url, role, body)
    assert mismatches == [], "\n".join(mismatches)


def test_data_users_see_only_their_destinations_and_never_a_host(client, world):
    reader = CREDENTIALS["granted"]
    listed = client.get("/destinations", headers=reader).json()
    assert [d["destination"]["name"] for d in listed] == ["site1"]
    assert listed[0]["hosts"] == {} and listed[0]["aliases"] == []
    assert {t["destination"] for t in client.get("/transfers", headers=reader).json()} == {"site1"}
    assert client.get("/transfers", params={"destination": "site2"}, headers=reader).json() == []
    assert client.get(f"/transfers/{world['t1']}", headers=reader).status_code == 200
    assert client.get(f"/datafiles/{world['d1']}", headers=reader).status_code == 200
    assert client.get("/hosts", headers=reader).status_code == 403
    operator = client.get("/hosts", headers=CREDENTIALS["operator"]).json()
    assert sorted(h["name"] for h in operator) == ["h1", "src1"]
    assert all("password" not in h and h["has_password"] in (True, False) for h in operator)
    me = client.get("/me", headers=CREDENTIALS["operator"]).json()
    assert (me["role"], me["destinations"], me["operates"]) == ("operator", ["site1"], ["site1"])


def test_a_data_user_cannot_register_files_at_all(client, world, tmp_path):
    secret = tmp_path / "h1" / "secret.key"
    secret.write_bytes(b"-----BEGIN OPENSSH PRIVATE KEY-----")
    body = {"destination": "site1", "host": "h1", "group": "steal", "files": [{"path": str(secret)}]}
    before = _counts(client)
    for role in ("no grant", "granted"):
        response = client.post("/register", json=body, headers=CREDENTIALS[role])
        assert response.status_code == 403 and "operator" in response.json()["reason"]
    assert _counts(client) == before


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("/etc/shadow", "outside the host's directory"),
        ("{root}/../h1/x", "contains '.' or '..'"),
        ("out/../../h2/x", "contains '.' or '..'"),
        ("{root}", "outside the host's directory"),
        ("{root}2/out/x", "outside the host's directory"),
        ("out/link/passwd", "leads outside the host's directory"),
    ],
)
def test_registration_outside_the_source_hosts_directory_is_refused(client, world, tmp_path, path, reason):
    root = tmp_path / "src1"
    (root / "out" / "link").symlink_to("/etc")
    body = {"destination": "site1", "host": "src1", "group": "g", "files": [{"path": path.format(root=root)}]}
    before = _counts(client)
    response = client.post("/register", json=body, headers=CREDENTIALS["operator"])
    assert response.status_code == 400 and reason in response.json()["reason"], response.text
    assert _counts(client) == before
    assert client.get("/groups/g", headers=ADMIN).status_code == 404


def test_an_operator_registers_inside_the_directory_but_not_for_others(client, world, tmp_path):
    (tmp_path / "src1" / "out" / "a.dat").write_bytes(b"a")
    op = CREDENTIALS["operator"]
    body = {"destination": "site1", "host": "src1", "group": "mine", "files": [{"path": "out/a.dat"}]}
    response = _ok(client.post("/register", json=body, headers=op), 201)
    (data_file_id,) = response.json()["data_file_ids"]
    with session_scope(client.app.state.engine) as session:
        assert session.exec(select(DataFile.name).where(DataFile.id == data_file_id)).one() == "a.dat"
    elsewhere = body | {"destination": "site2"}
    assert client.post("/register", json=elsewhere, headers=op).status_code == 404
    other_host = body | {"host": "h2"}
    assert client.post("/register", json=other_host, headers=op).status_code == 404


@pytest.mark.parametrize(
    "query",
    ["stream=../../../elsewhere", "data_type=..", "time_base=a/b", "time_step=x%00y", "stream=a%20b", "time_step=."],
)
def test_metadata_that_would_leave_the_host_directory_is_refused_before_a_transfer_exists(
    client, world, tmp_path, query
):
    before, files_before = _counts(client), _files(tmp_path)
    response = client.put(f"/portal/site1/x.bin?{query}", content=b"payload", headers=CREDENTIALS["operator"])
    assert response.status_code == 400 and "may become a directory at a site" in response.json()["reason"]
    assert _counts(client) == before
    assert _files(tmp_path) == files_before


def test_a_host_directory_template_never_renders_outside_itself(tmp_path):
    from catalog.errors import InvalidInput
    from catalog.paths import render_directory

    when = __import__("datetime").datetime(2026, 12, 6)
    values = {"destination": "site1", "target": "", "name": "f", "type": None, "time_base": None, "time_step": None}
    assert render_directory("in/$stream/$date", values | {"stream": "oper"}, when) == "in/oper/20261206"
    for bad in ("..", "../x", "a/b", "a b", "\x00"):
        with pytest.raises(InvalidInput):
            render_directory("in/$stream", values | {"stream": bad}, when)


def test_a_data_user_cannot_mark_a_product(client, world):
    body = {"status": "completed", "stream": "oper"}
    for role in ("no grant", "granted"):
        assert client.post("/products/status", json=body, headers=CREDENTIALS[role]).status_code == 403
    with session_scope(client.app.state.engine) as session:
        assert session.exec(select(ProductStatus)).all() == []
    log = client.app.state.settings.resolved_event_log()
    assert not os.path.exists(log) or "PRS;" not in Path(log).read_text()


def test_data_users_see_the_products_of_their_streams_only(client, world):
    for stream in ("oper1", "oper2"):
        body = {"status": "expected", "stream": stream}
        _ok(client.post("/products/status", json=body, headers=ADMIN), 201)
    shown = client.get("/products", headers=CREDENTIALS["granted"]).json()
    assert [p["stream"] for p in shown] == ["oper1"]
    assert client.get("/products", headers=CREDENTIALS["no grant"]).json() == []
    assert {p["stream"] for p in client.get("/products", headers=ADMIN).json()} == {"oper1", "oper2"}


@pytest.mark.parametrize(
    ("method", "url", "body"),
    [
        ("GET", "/transfers/99999999999999999999999", None),
        ("GET", "/datafiles/9223372036854775808", None),
        ("POST", "/destinations", {"name": "big", "max_parallel_transfers": 2**70}),
        ("POST", "/transfers/1/extend", {"seconds": 2**80}),
        ("PUT", "/portal/site1/late.bin?delay=99999999999999999999", b"x"),
        ("PUT", "/portal/site1/late.bin?lifetime=99999999999999999999", b"x"),
        ("POST", "/stac/search", _deep_filter(5000)),
        ("PATCH", "/destinations/site1", _deep(100_000)),
    ],
)
def test_bad_input_is_a_400_and_never_a_500(client, world, method, url, body):
    before = _counts(client)
    headers = ADMIN if isinstance(body, bytes) or body is None else ADMIN | {"Content-Type": "application/json"}
    content = body.encode() if isinstance(body, str) else body
    response = client.request(
        method, url, headers=headers, **({"json": body} if isinstance(body, dict) else {"content": content})
    )
    assert 400 <= response.status_code < 500, response.text
    assert "request_id" in response.json()
    assert _counts(client) == before


def test_options_answers_anyone_without_a_server_error(client):
    for path in ("/datausers", "/datausers/x", "/policies", "/destinations"):
        response = client.options(path)
        assert response.status_code == 204 and "OPTIONS" in response.headers["allow"], (path, response.text)


def test_an_unexpected_error_is_logged_with_the_request_id_its_answer_carries(client, caplog, monkeypatch):
    from catalog import config

    def broken(session):
        raise RuntimeError("the database went away")

    monkeypatch.setattr(config, "list_destinations", broken)
    response = client.get("/destinations", headers=ADMIN)
    assert response.status_code == 500
    request_id = response.json()["request_id"]
    assert "the database went away" not in response.text
    assert any(request_id in r.getMessage() and "the database went away" in r.getMessage() for r in caplog.records)


def test_the_openapi_document_declares_how_to_authenticate(client):
    document = client.get("/schema/openapi.json").json()
    schemes = document["components"]["securitySchemes"]
    assert {schemes[k]["scheme"] for k in schemes} == {"basic", "bearer"}
    assert document["paths"]["/health"]["get"]["security"] == []
    assert document["paths"]["/transfers"]["get"]["security"] == [{"basic": []}, {"bearer": []}]
    assert "operate" in document["paths"]["/destinations/{name}/hold"]["post"]["description"]


def _files(root) -> list[str]:
    """Every file under `root` but the database's own."""
    return sorted(str(p) for p in root.rglob("*") if p.is_file() and ".db" not in p.name)


def _counts(client) -> tuple[int, int]:
    with session_scope(client.app.state.engine) as session:
        return len(session.exec(select(DataFile)).all()), len(session.exec(select(DataTransfer)).all())
