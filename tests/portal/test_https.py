"""The portal over HTTPS with stock clients: curl and wget push and pull; permissions, traversal, quotas."""

from __future__ import annotations

import hashlib
import json
import os
import ssl
import subprocess

import httpx
import pytest
from sqlmodel import select

from catalog.data_users import update_data_user
from catalog.database import session_scope
from catalog.models import DataTransfer
from tests.portal.conftest import PASSWORD

ALICE = f"alice:{PASSWORD}"
BOB = "bob:pw-bob-1"


def curl(served, *args, user=ALICE):
    command = ["curl", "-sS", "--cacert", str(served.cert), "-u", user, *args]
    return subprocess.run(command, capture_output=True, check=False, timeout=120)


def status_of(served, *args, user=ALICE):
    done = curl(served, "-o", os.devnull, "-w", "%{http_code}", *args, user=user)
    return int(done.stdout.decode() or 0)


def md5(path):
    return hashlib.md5(path.read_bytes()).hexdigest()


def test_curl_and_wget_push_and_pull(served, world, tmp_path):
    source = tmp_path / "f.bin"
    source.write_bytes(os.urandom(5 * 1024 * 1024 + 3))
    pushed = curl(served, "--fail-with-body", "-T", str(source), f"{served.url}/portal/bucket/2026/f.bin")
    assert pushed.returncode == 0, pushed.stderr + pushed.stdout
    assert json.loads(pushed.stdout)["md5"] == md5(source)

    by_curl = tmp_path / "curl.bin"
    assert curl(served, "--fail", "-o", str(by_curl), f"{served.url}/portal/bucket/2026/f.bin").returncode == 0
    assert md5(by_curl) == md5(source)
    by_wget = tmp_path / "wget.bin"
    wget = subprocess.run(
        ["wget", "-q", "--ca-certificate", str(served.cert), "--user", "alice", "--password", PASSWORD,
         "-O", str(by_wget), f"{served.url}/portal/bucket/2026/f.bin"],
        capture_output=True, check=False, timeout=120,
    )  # fmt: skip
    assert wget.returncode == 0, wget.stderr
    assert md5(by_wget) == md5(source)

    head = curl(served, "-I", f"{served.url}/portal/bucket/2026/f.bin").stdout.decode().lower()
    assert f"content-length: {source.stat().st_size}" in head
    assert f'etag: "{md5(source)}"' in head
    part = curl(served, "--fail", "-r", "100-199", f"{served.url}/portal/bucket/2026/f.bin")
    assert part.stdout == source.read_bytes()[100:200]
    assert status_of(served, "-r", "99999999-", f"{served.url}/portal/bucket/2026/f.bin") == 416

    listing = json.loads(curl(served, "--fail", f"{served.url}/portal/bucket/2026/").stdout)
    assert [(e["name"], e["size"], e["md5"]) for e in listing["entries"]] == [
        ("f.bin", source.stat().st_size, md5(source))
    ]
    page = curl(served, "--fail", "-H", "Accept: text/html", f"{served.url}/portal/bucket/2026").stdout.decode()
    assert '<a href="/portal/bucket/2026/f.bin">f.bin</a>' in page
    assert [e["name"] for e in json.loads(curl(served, f"{served.url}/portal").stdout)["entries"]] == ["bucket", "site"]

    with session_scope(world) as session:
        [transfer] = session.exec(select(DataTransfer)).all()
        assert transfer.status == "Done"
    assert status_of(served, "-X", "DELETE", f"{served.url}/portal/bucket/2026/f.bin") == 204
    assert status_of(served, f"{served.url}/portal/bucket/2026/f.bin") == 404


def test_without_put_nothing_is_uploaded(served, world, tmp_path):
    source = tmp_path / "f.bin"
    source.write_bytes(b"data")
    done = curl(served, "-T", str(source), f"{served.url}/portal/bucket/f.bin", user=BOB)
    assert b"may not put" in done.stdout
    assert status_of(served, "-T", str(source), f"{served.url}/portal/bucket/g.bin", user=BOB) == 403
    with session_scope(world) as session:
        assert session.exec(select(DataTransfer)).all() == []


@pytest.mark.parametrize(
    "path",
    [
        "/portal/bucket/../other/secret.bin",
        "/portal/bucket/%2e%2e/other/secret.bin",
        "/portal/bucket/%2E%2E%2Fother%2Fsecret.bin",
        "/portal/bucket%2F..%2Fother/secret.bin",
        "/portal/other/secret.bin",
        "/portal/bucket//etc/passwd",
        "/portal/bucket/..%5C..%5Cother%5Csecret.bin",
    ],
)
def test_traversal_never_reaches_another_users_destination(served, world, tmp_path, path):
    secret = tmp_path / "secret.bin"
    secret.write_bytes(b"bob's secret")
    assert curl(served, "--fail", "-T", str(secret), f"{served.url}/portal/other/secret.bin", user=BOB).returncode == 0
    for method in ("GET", "PUT", "DELETE"):
        done = curl(served, "--path-as-is", "-X", method, "-d", "x", "-w", "\n%{http_code}", f"{served.url}{path}")
        body, _, code = done.stdout.rpartition(b"\n")
        assert int(code) in (400, 404, 405), (method, code, body)
        assert b"bob's secret" not in body
    with session_scope(world) as session:
        rows = session.exec(select(DataTransfer)).all()
        assert [(t.destination_name, t.target, t.status) for t in rows] == [("other", "secret.bin", "Queued")]


def test_quotas_answer_413_and_429(served, world, tmp_path):
    with session_scope(world) as session:
        update_data_user(session, "alice", {"upload_quota_bytes": 3000, "download_quota_bytes": 2000})
    small, big = tmp_path / "small.bin", tmp_path / "big.bin"
    small.write_bytes(os.urandom(2000))
    big.write_bytes(os.urandom(5000))
    assert status_of(served, "-T", str(big), f"{served.url}/portal/bucket/big.bin") == 413
    assert status_of(served, "-T", str(small), f"{served.url}/portal/bucket/small.bin") == 201
    assert status_of(served, f"{served.url}/portal/bucket/small.bin") == 200
    response = httpx.get(
        f"{served.url}/portal/bucket/small.bin",
        auth=("alice", PASSWORD),
        verify=ssl.create_default_context(cafile=str(served.cert)),
    )
    assert response.status_code == 429
    assert int(response.headers["retry-after"]) > 0
    assert "download quota" in response.json()["reason"]


def test_a_refused_duplicate_push_answers_409_over_the_network_and_keeps_the_first(served, world, tmp_path):
    """The refusal comes before the body is read: a large body must not hide it behind a broken pipe."""
    from api.client import ApiError, PdsClient

    source = tmp_path / "big.bin"
    source.write_bytes(os.urandom(16 * 1024 * 1024))
    http = httpx.Client(base_url=served.url, verify=str(served.cert), auth=("alice", PASSWORD), timeout=60)
    client = PdsClient(served.url, http=http)
    first = client.push(source, "site", "in/big.bin", if_exists="refuse")
    with pytest.raises(ApiError) as refused:
        client.push(source, "site", "in/big.bin", if_exists="refuse")
    assert refused.value.status == 409 and "site:in/big.bin already exists" in refused.value.reason
    replaced = client.push(source, "site", "in/big.bin", if_exists="requeue")
    with session_scope(world) as session:
        statuses = {
            t.data_file_id: t.status
            for t in session.exec(select(DataTransfer).where(DataTransfer.destination_name == "site")).all()
        }
    assert statuses == {first["data_file_id"]: "Stopped", replaced["data_file_id"]: "Queued"}
