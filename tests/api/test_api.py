"""The API as a client sees it: push, status, configuration, and clear errors that leave nothing behind."""

from __future__ import annotations

import hashlib
import os
import subprocess

import pytest
from sqlmodel import select

from catalog.database import session_scope
from catalog.models import DataFile, DataTransfer
from tests.api.conftest import ADMIN, basic


def counts(engine):
    with session_scope(engine) as session:
        return len(session.exec(select(DataFile)).all()), len(session.exec(select(DataTransfer)).all())


def test_health_and_docs_need_no_credentials(client):
    assert client.get("/health").json() == {"status": "ok", "database": "ok"}
    schema = client.get("/schema/openapi.json")
    assert schema.status_code == 200
    assert "/portal/{destination}/{target}" in schema.json()["paths"]


def test_push_stores_the_file_and_queues_a_transfer(client, site, store):
    data = os.urandom(3 * 1024 * 1024 + 17)
    r = client.put("/portal/site1/2026/11/forecast.grib?priority=7&stream=oper", content=data, headers=ADMIN)
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["md5"] == hashlib.md5(data).hexdigest()
    assert body["size"] == len(data)
    assert [t["status"] for t in body["transfers"]] == ["Queued"]
    data_file = client.get(f"/datafiles/{body['data_file_id']}", headers=ADMIN).json()
    assert (data_file["name"], data_file["stream"], data_file["size"]) == ("forecast.grib", "oper", len(data))
    transfer = client.get(f"/transfers/{body['transfers'][0]['id']}", headers=ADMIN).json()
    assert (transfer["target"], transfer["priority"], transfer["status"]) == ("2026/11/forecast.grib", 7, "Queued")
    assert [(h["from_status"], h["to_status"], h["by"]) for h in transfer["history"]] == [
        (None, "Arriving", "admin"),
        ("Arriving", "Queued", "admin"),
    ]


@pytest.mark.parametrize(
    ("url", "status", "reason"),
    [
        ("/portal/nosuch/a.bin", 404, "no destination 'nosuch'"),
        ("/portal/site1/a.bin?priority=100", 400, "priority must be from 0"),
        ("/portal/site1/a.bin?priority=-1", 400, "priority must be from 0"),
        ("/portal/site1/a.bin?priority=high", 400, "priority must be an integer"),
        ("/portal/site1/%2e%2e/etc/passwd", 400, "contains '.' or '..'"),
        ("/portal/site1/a/%2E%2E/%2E%2E/b", 400, "contains '.' or '..'"),
        ("/portal/site1//etc/passwd", 400, "is absolute"),
    ],
)
def test_bad_pushes_get_a_json_reason_and_leave_nothing_behind(client, site, sqlite_engine, store, url, status, reason):
    r = client.put(url, content=b"payload", headers=ADMIN)
    assert r.status_code == status
    assert r.headers["content-type"].startswith("application/json")
    assert reason in r.json()["reason"]
    assert counts(sqlite_engine) == (0, 0)
    assert not store.fs.exists(f"{store.root}/objects")


def test_missing_or_wrong_credentials_are_401_and_leave_nothing(client, site, sqlite_engine):
    r = client.put("/portal/site1/a.bin", content=b"x")
    assert r.status_code == 401
    assert "credentials required" in r.json()["reason"]
    assert "Basic" in r.headers["www-authenticate"]
    assert client.put("/portal/site1/a.bin", content=b"x", headers=basic("admin", "wrong")).status_code == 401
    assert client.get("/transfers", headers={"Authorization": "Bearer nope"}).status_code == 401
    assert counts(sqlite_engine) == (0, 0)


def test_tokens_work_instead_of_passwords(client, site):
    token = client.post("/tokens", headers=ADMIN).json()["token"]
    r = client.put("/portal/site1/t.bin", content=b"x", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 201
    assert client.get("/me", headers={"Authorization": f"Bearer {token}"}).json()["login"] == "admin"


def test_hosts_never_return_secrets(client, site, tmp_path):
    host = client.get("/hosts/h1", headers=ADMIN).json()
    assert "password" not in host and host["has_password"] is True
    key = tmp_path / "key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "pass phrase", "-f", str(key)], check=True)
    options = {"key_filename": str(key), "secret_passphrase": "pass phrase"}
    r = client.post("/hosts", json={"name": "k", "protocol": "sftp", "options": options}, headers=ADMIN)
    assert r.status_code == 201, r.text
    assert client.get("/hosts/k", headers=ADMIN).json()["options"] == {
        "key_filename": str(key),
        "secret_passphrase": "***",
    }


@pytest.mark.parametrize(
    ("host", "reason"),
    [
        ({"protocol": "gopher"}, "unknown protocol 'gopher'"),
        ({"protocol": "sftp", "address": "x"}, "give a password or options.key_filename"),
        ({"protocol": "sftp", "options": {"key_filename": "/no/such/key"}}, "cannot use private key /no/such/key"),
        (
            {"protocol": "sftp", "options": {"key_filename": "{key}", "secret_passphrase": "wrong"}},
            "cannot use private key",
        ),
        ({"protocol": "file", "address": "/tmp/x", "directory": "$destnation/x"}, "unknown token $destnation"),
        ({"protocol": "s3", "directory": "bucket", "login": "AKIA"}, "give both the access key"),
        ({"protocol": "s3", "login": "a", "password": "b"}, "must start with the bucket"),
        ({"protocol": "ftp", "options": {"tls": "maybe"}}, "tls must be one of none, explicit, implicit"),
        ({"protocol": "ftp", "options": {"tls": "explicit", "cafile": "/no/ca.pem"}}, "cannot read cafile"),
    ],
)
def test_hosts_that_could_never_work_are_refused_when_created(client, tmp_path, host, reason):
    key = tmp_path / "key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "right", "-f", str(key)], check=True)
    host = {**host, "name": "bad"}
    if host.get("options", {}).get("key_filename") == "{key}":
        host["options"] = {**host["options"], "key_filename": str(key)}
    r = client.post("/hosts", json=host, headers=ADMIN)
    assert r.status_code == 400, r.text
    assert reason in r.json()["reason"]
    assert client.get("/hosts/bad", headers=ADMIN).status_code == 404


def test_configuration_errors_are_clear(client, site):
    r = client.post("/destinations", json={"name": "site1"}, headers=ADMIN)
    assert (r.status_code, r.json()["reason"]) == (409, "destination 'site1' already exists")
    r = client.post("/destinations", json={"name": "zipped", "compression": "rar"}, headers=ADMIN)
    assert r.status_code == 400 and "unknown compression 'rar'; known: gzip" in r.json()["reason"]
    r = client.post("/destinations", json={"name": "bad name"}, headers=ADMIN)
    assert r.status_code == 400 and "invalid" in r.json()["reason"]
    r = client.post("/hosts", json={"name": "x", "protocol": "gopher"}, headers=ADMIN)
    assert r.status_code == 400 and "unknown protocol 'gopher'" in r.json()["reason"]
    r = client.post("/destinations/site1/hosts", json={"host": "nosuch"}, headers=ADMIN)
    assert r.status_code == 404
    assert client.get("/transfers/999", headers=ADMIN).status_code == 404
    assert client.get("/transfers?status=Bogus", headers=ADMIN).status_code == 400


def test_only_administrators_change_configuration(client, site, sqlite_engine):
    from catalog.users import ensure_user

    with session_scope(sqlite_engine) as session:
        ensure_user(session, "alice", "pw")
    alice = basic("alice", "pw")
    assert client.post("/destinations", json={"name": "x"}, headers=alice).status_code == 403
    assert client.get("/destinations", headers=alice).status_code == 200


def test_a_host_is_detached_by_its_kind(client, site):
    source = {"name": "src1", "protocol": "file", "address": "/nonexistent-source"}
    assert client.post("/hosts", json=source, headers=ADMIN).status_code == 201
    attach = {"host": "src1", "kind": "acquisition"}
    assert client.post("/destinations/site1/hosts", json=attach, headers=ADMIN).status_code == 201
    r = client.delete("/destinations/site1/hosts/src1?kind=bogus", headers=ADMIN)
    assert r.status_code == 400, r.text
    r = client.delete("/destinations/site1/hosts/src1", headers=ADMIN)  # a dissemination host by default
    assert r.status_code == 404, r.text
    r = client.delete("/destinations/site1/hosts/src1?kind=acquisition", headers=ADMIN)
    assert r.status_code == 200, r.text
    assert "src1" not in str(r.json()["hosts"]) and "h1" in str(r.json()["hosts"])


def test_reads_answer_while_another_process_holds_the_write_lock(client, site, tmp_path):
    """On SQLite, the health check, STAC searches, listings and the credential checks read their
    snapshot: a discovery pass or a mover committing does not hold them up."""
    import sqlite3
    import threading
    import time

    other = sqlite3.connect(tmp_path / "pds.db", isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")
    release = threading.Timer(20.0, other.execute, ["COMMIT"])
    release.start()
    try:
        for path, headers in [
            ("/health", {}),
            ("/stac/collections", {}),
            ("/stac/search?limit=5", {}),
            ("/transfers?limit=5", ADMIN),
            ("/destinations/site1", ADMIN),
            ("/hosts", ADMIN),
        ]:
            started = time.monotonic()
            answer = client.get(path, headers=headers)
            took = time.monotonic() - started
            assert answer.status_code == 200, (path, answer.text)
            assert took < 5.0, f"GET {path} waited {took:.1f} s for the writer"
    finally:
        release.cancel()
        other.execute("COMMIT")
