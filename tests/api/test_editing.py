"""Everything an administrator configures can be changed and removed: hosts (any field, credentials
sealed and never shown back, order in a destination, in or out of use) and destinations — refused
with a reason while transfers move bytes, never losing what is in flight."""

from __future__ import annotations

import json

from sqlmodel import select

from catalog.config import MOVING
from catalog.database import session_scope
from catalog.models import DataTransfer, Host, TransferHistory
from tests.api.conftest import ADMIN


def _set_status(engine, transfer_id: int, status: str, host: str | None = None) -> None:
    """Stand in for a mover that is (or stops) moving the transfer's bytes."""
    with session_scope(engine) as session:
        transfer = session.get(DataTransfer, transfer_id)
        transfer.status = status
        if host:
            transfer.host_name = host
        session.add(transfer)


def _push(client, destination: str, name: str) -> tuple[int, int]:
    pushed = client.put(f"/portal/{destination}/{name}", content=b"data", headers=ADMIN)
    assert pushed.status_code == 201, pushed.text
    return pushed.json()["data_file_id"], pushed.json()["transfers"][0]["id"]


def test_pds_host_set_changes_any_field_and_never_shows_a_secret(pds, client, sqlite_engine, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    code, out, err = pds(
        "host", "set", "h1", "--address", str(elsewhere), "--login", "ops2", "-o", "secret_token=abc", "-o", "port=2222"
    )
    assert code == 0, err
    assert out.strip() == "host h1 updated: address, login, options"
    shown = client.get("/hosts/h1", headers=ADMIN).json()
    assert (shown["address"], shown["login"]) == (str(elsewhere), "ops2")
    assert shown["options"] == {"secret_token": "***", "port": 2222} and shown["has_password"] is True
    assert "abc" not in json.dumps(shown) and "s3cret" not in json.dumps(shown)

    code, out, err = pds("host", "set", "h1", "--remove-option", "port", "--disable")
    assert code == 0, err
    shown = client.get("/hosts/h1", headers=ADMIN).json()
    assert shown["options"] == {"secret_token": "***"} and shown["active"] is False
    with session_scope(sqlite_engine) as session:  # the secret kept, not the mask the API shows
        assert session.get(Host, "h1").options["secret_token"] != "***"

    code, _, err = pds("host", "set", "h1", "--protocol", "gopher")
    assert code == 1 and "unknown protocol 'gopher'" in err
    response = client.patch("/hosts/h1", json={"name": "h2"}, headers=ADMIN)
    assert response.status_code == 400 and "cannot change name" in response.json()["reason"]
    code, _, err = pds("host", "set", "h1")
    assert code == 2 and "needs at least one change" in err  # a usage error


def test_a_host_moves_in_its_destinations_order(pds, client, tmp_path):
    (tmp_path / "backup").mkdir()
    code, _, err = pds(
        "host", "add", "h2", "--protocol", "file", "--address", str(tmp_path / "backup"), "--destination", "site1"
    )
    assert code == 0, err
    assert client.get("/destinations/site1", headers=ADMIN).json()["hosts"]["dissemination"] == ["h1", "h2"]
    code, out, err = pds("host", "set", "h2", "--destination", "site1", "--rank", "0")
    assert code == 0 and "rank 0 at site1" in out, err
    assert client.get("/destinations/site1", headers=ADMIN).json()["hosts"]["dissemination"] == ["h2", "h1"]


def test_a_host_in_use_is_not_deleted_until_its_transfers_end(pds, client, site, sqlite_engine):
    _, transfer_id = _push(client, "site1", "a.bin")
    _set_status(sqlite_engine, transfer_id, "Transferring", host="h1")
    code, _, err = pds("host", "delete", "h1")
    assert code == 1 and "1 transfer(s) moving bytes" in err and str(transfer_id) in err
    assert client.get("/hosts/h1", headers=ADMIN).status_code == 200

    _set_status(sqlite_engine, transfer_id, "Done")
    code, out, err = pds("host", "delete", "h1")
    assert (code, out.strip()) == (0, "host h1 deleted"), err
    assert client.get("/hosts/h1", headers=ADMIN).status_code == 404
    assert client.get("/destinations/site1", headers=ADMIN).json()["hosts"]["dissemination"] == []


def test_a_host_files_were_registered_from_is_disabled_not_deleted(client, tmp_path):
    (tmp_path / "src" / "out").mkdir(parents=True)
    (tmp_path / "src" / "out" / "a.dat").write_bytes(b"a")
    assert client.post("/destinations", json={"name": "acq"}, headers=ADMIN).status_code == 201
    source = {"name": "src", "kind": "acquisition", "protocol": "file", "address": str(tmp_path / "src")}
    assert client.post("/hosts", json=source, headers=ADMIN).status_code == 201
    body = {"destination": "acq", "host": "src", "group": "g", "files": [{"path": "out/a.dat"}]}
    assert client.post("/register", json=body, headers=ADMIN).status_code == 201
    response = client.delete("/hosts/src", headers=ADMIN)
    assert response.status_code == 409 and "disable it instead" in response.json()["reason"]
    assert client.patch("/hosts/src", json={"active": False}, headers=ADMIN).json()["active"] is False


def test_pds_destination_delete_removes_its_transfers_but_waits_for_moving_ones(pds, client, site, sqlite_engine):
    _, queued = _push(client, "site1", "queued.bin")
    _, moving = _push(client, "site1", "moving.bin")
    _set_status(sqlite_engine, moving, "Transferring", host="h1")
    assert "Transferring" in {s.value for s in MOVING}

    code, _, err = pds("destination", "delete", "site1")
    assert code == 1 and "moving bytes" in err
    code, _, err = pds("destination", "delete", "site1", "--force")
    assert code == 1 and "moving bytes" in err  # the waiting one is stopped; the moving one holds it back
    stopped = client.get(f"/transfers/{queued}", headers=ADMIN).json()
    assert stopped["status"] == "Stopped" and stopped["history"][-1]["by"] == "admin"
    assert client.get(f"/transfers/{moving}", headers=ADMIN).json()["status"] == "Transferring"

    _set_status(sqlite_engine, moving, "Done")
    code, out, err = pds("destination", "delete", "site1")
    assert code == 0 and out.strip() == "destination site1 deleted with its 2 transfer(s)", err
    assert client.get("/destinations/site1", headers=ADMIN).status_code == 404
    with session_scope(sqlite_engine) as session:
        assert session.exec(select(DataTransfer)).all() == []
        assert session.exec(select(TransferHistory)).all() == []
    code, _, err = pds("destination", "delete", "site1")
    assert code == 1 and "no destination 'site1'" in err
