from __future__ import annotations

import base64

import pytest
from litestar.testing import TestClient

from api.app import create_app


def basic(login: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{login}:{password}".encode()).decode()}


ADMIN = basic("admin", "admin")


@pytest.fixture
def app(settings, sqlite_engine, store):
    return create_app(settings, engine=sqlite_engine, store=store)


@pytest.fixture
def client(app):
    with TestClient(app) as client:
        yield client


@pytest.fixture
def site(client, tmp_path):
    assert client.post("/destinations", json={"name": "site1"}, headers=ADMIN).status_code == 201
    host = {"name": "h1", "protocol": "file", "address": str(tmp_path / "remote"), "password": "s3cret"}
    assert client.post("/hosts", json=host, headers=ADMIN).status_code == 201
    assert client.post("/destinations/site1/hosts", json={"host": "h1"}, headers=ADMIN).status_code == 201
    return "site1"


def cli_runner(client, monkeypatch, capsys):
    """`pds` run in-process against the app behind `client`, as the administrator: a function that
    takes the arguments and returns (exit code, stdout, stderr)."""
    from api.cli import main

    monkeypatch.setenv("PDS_USER", "admin")
    monkeypatch.setenv("PDS_PASSWORD", "admin")
    monkeypatch.delenv("PDS_TOKEN", raising=False)

    def run(*argv):
        code = main(list(argv), http=client)
        out, err = capsys.readouterr()
        return code, out, err

    return run


@pytest.fixture
def pds(client, site, monkeypatch, capsys):
    """Run the `pds` command against the app; returns (exit code, stdout, stderr)."""
    return cli_runner(client, monkeypatch, capsys)
