"""Host credentials sealed at rest: with PDS_HOST_SECRET_KEY set, a host's password and `secret_*`
options are encrypted in the database, and a transfer still logs in to a real SFTP server with them;
without the key, or with another, the host says why it cannot be used."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from sqlmodel import Session

from blocks.registry import block_for
from catalog.database import session_scope
from catalog.errors import InvalidInput
from catalog.models import Host
from catalog.sealing import KEY_VARIABLE, seal_stored_hosts
from tests.api.conftest import ADMIN


def stored_row(engine, name):
    with engine.connect() as connection:
        return connection.execute(sa.text("SELECT password, options FROM host WHERE name = :n"), {"n": name}).one()


def test_a_sealed_password_is_not_in_the_database_and_still_logs_in(
    client, sqlite_engine, sftp_password_server, monkeypatch
):
    server = sftp_password_server
    monkeypatch.setenv(KEY_VARIABLE, "a key the operator keeps")
    host = {
        "name": "sealed-sftp",
        "protocol": "sftp",
        "address": f"{server.host}:{server.port}",
        "login": server.username,
        "password": server.password,
        "options": {"known_hosts": str(server.known_hosts_path), "secret_passphrase": "not used here"},
    }
    assert client.post("/hosts", json=host, headers=ADMIN).status_code == 201
    password, options = stored_row(sqlite_engine, "sealed-sftp")
    assert password.startswith("sealed:v1:") and server.password not in password
    assert "not used here" not in str(options) and '"known_hosts"' in str(options)
    assert client.get("/hosts/sealed-sftp", headers=ADMIN).json()["has_password"] is True

    (server.data_dir / "hello.txt").write_text("hello")
    with Session(sqlite_engine) as session:
        stored = session.get(Host, "sealed-sftp")
    block = block_for(stored)
    assert block.password.get_secret_value() == server.password
    assert block.options["secret_passphrase"] == "not used here"
    assert block.filesystem().cat_file("/hello.txt") == b"hello"

    monkeypatch.setenv(KEY_VARIABLE, "another key")
    with pytest.raises(InvalidInput, match=f"sealed with another {KEY_VARIABLE}"):
        block_for(stored)
    monkeypatch.delenv(KEY_VARIABLE)
    with pytest.raises(InvalidInput, match=f"host sealed-sftp's credentials are sealed: set {KEY_VARIABLE}"):
        block_for(stored)


def test_hosts_stored_before_a_key_was_set_are_sealed_by_migrate(client, sqlite_engine, monkeypatch):
    monkeypatch.delenv(KEY_VARIABLE, raising=False)
    host = {"name": "old", "protocol": "file", "address": "/tmp", "password": "plain", "options": {"secret_x": "y"}}
    assert client.post("/hosts", json=host, headers=ADMIN).status_code == 201
    assert tuple(stored_row(sqlite_engine, "old"))[0] == "plain"  # no key: stored as given, as before

    monkeypatch.setenv(KEY_VARIABLE, "the new key")
    with session_scope(sqlite_engine) as session:
        assert seal_stored_hosts(session) == 1
    with session_scope(sqlite_engine) as session:
        assert seal_stored_hosts(session) == 0  # already sealed: nothing sealed twice
    password, options = stored_row(sqlite_engine, "old")
    assert password.startswith("sealed:v1:") and "plain" not in password and '"y"' not in str(options)
    with Session(sqlite_engine) as session:
        block = block_for(session.get(Host, "old"))
    assert (block.password.get_secret_value(), block.options["secret_x"]) == ("plain", "y")
