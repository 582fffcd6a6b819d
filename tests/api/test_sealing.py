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
from catalog.sealing import KEY_VARIABLE, PREVIOUS_KEYS_VARIABLE, seal_stored_hosts
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
        assert seal_stored_hosts(session).changed == 1
    with session_scope(sqlite_engine) as session:
        assert seal_stored_hosts(session).changed == 0  # already sealed: nothing sealed twice
    password, options = stored_row(sqlite_engine, "old")
    assert password.startswith("sealed:v1:") and "plain" not in password and '"y"' not in str(options)
    with Session(sqlite_engine) as session:
        block = block_for(session.get(Host, "old"))
    assert (block.password.get_secret_value(), block.options["secret_x"]) == ("plain", "y")


def test_pds_migrate_rotates_the_key_and_hosts_keep_working(client, sqlite_engine, monkeypatch, capsys):
    """The operator's rotation: new key in PDS_HOST_SECRET_KEY, old one in PDS_HOST_SECRET_KEY_PREVIOUS,
    `pds migrate`; afterwards the old key opens nothing and the new one alone opens everything."""
    from api.cli import main

    monkeypatch.setenv("PDS_DATABASE_URL", str(sqlite_engine.url))
    monkeypatch.setenv(KEY_VARIABLE, "the old key")
    host = {"name": "rotated", "protocol": "file", "address": "/tmp", "password": "pw", "options": {"secret_t": "tok"}}
    assert client.post("/hosts", json=host, headers=ADMIN).status_code == 201
    sealed_by_old = tuple(stored_row(sqlite_engine, "rotated"))

    monkeypatch.setenv(KEY_VARIABLE, "the new key")
    with Session(sqlite_engine) as session, pytest.raises(InvalidInput, match=PREVIOUS_KEYS_VARIABLE):
        block_for(session.get(Host, "rotated"))  # the old key not given: refused, saying where it goes

    monkeypatch.setenv(PREVIOUS_KEYS_VARIABLE, "a key long gone, the old key")
    with Session(sqlite_engine) as session:  # during the rotation the host still opens
        assert block_for(session.get(Host, "rotated")).password.get_secret_value() == "pw"
    assert main(["migrate"]) == 0
    out, _ = capsys.readouterr()
    assert "credentials of 1 host(s) sealed under the current key" in out
    password, options = stored_row(sqlite_engine, "rotated")
    assert password.startswith("sealed:v1:") and (password, options) != sealed_by_old
    assert main(["migrate"]) == 0  # nothing left under the old key
    assert "sealed under the current key" not in capsys.readouterr().out

    monkeypatch.delenv(PREVIOUS_KEYS_VARIABLE)
    with Session(sqlite_engine) as session:
        block = block_for(session.get(Host, "rotated"))
    assert (block.password.get_secret_value(), block.options["secret_t"]) == ("pw", "tok")
    monkeypatch.setenv(KEY_VARIABLE, "the old key")
    with Session(sqlite_engine) as session, pytest.raises(InvalidInput, match="sealed with another"):
        block_for(session.get(Host, "rotated"))


def test_pds_migrate_names_the_hosts_it_cannot_open(client, sqlite_engine, monkeypatch, capsys):
    from api.cli import main

    monkeypatch.setenv("PDS_DATABASE_URL", str(sqlite_engine.url))
    monkeypatch.setenv(KEY_VARIABLE, "a lost key")
    host = {"name": "orphan", "protocol": "file", "address": "/tmp", "password": "pw"}
    assert client.post("/hosts", json=host, headers=ADMIN).status_code == 201
    before = tuple(stored_row(sqlite_engine, "orphan"))
    monkeypatch.setenv(KEY_VARIABLE, "another key")
    assert main(["migrate"]) == 0  # the database is migrated all the same
    _, err = capsys.readouterr()
    assert "orphan" in err and PREVIOUS_KEYS_VARIABLE in err
    assert tuple(stored_row(sqlite_engine, "orphan")) == before  # left as it was, not lost
