"""Operators act on transfers and destinations through the API and `pds`: each action is an allowed
edge of the status table, refused with a reason otherwise, and kept in the history with the user."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from catalog.data_users import grant
from catalog.database import session_scope
from catalog.users import ensure_user
from tests.api.conftest import ADMIN, basic


def transfer_of(client, data_file_id):
    return client.get("/transfers", params={"data_file_id": data_file_id}, headers=ADMIN).json()[0]


def test_hold_release_priority_now_extend_stop_and_requeue_through_pds(pds, client, tmp_path):
    f = tmp_path / "a.bin"
    f.write_bytes(b"a" * 100)
    code, out, _ = pds("push", str(f), "--destination", "site1")
    tid = transfer_of(client, int(out))["id"]

    steps = [
        (("hold",), "StandBy"),
        (("release",), "Queued"),
        (("priority", "5"), "Queued"),
        (("now",), "Queued"),
        (("extend", "3600"), "Queued"),
        (("stop",), "Stopped"),
        (("requeue",), "Requeued"),
    ]
    for argv, status in steps:
        code, out, err = pds("--json", "transfer", argv[0], str(tid), *argv[1:], "--reason", "ops test")
        assert (code, err) == (0, ""), argv
        assert json.loads(out)["status"] == status, argv
    t = client.get(f"/transfers/{tid}", headers=ADMIN).json()
    assert t["priority"] == 5 and t["expires_at"] is not None
    actions = [(h["action"], h["by"]) for h in t["history"]][-7:]
    assert actions == [
        ("hold", "admin"),
        ("release", "admin"),
        ("reprioritise", "admin"),
        ("schedule_now", "admin"),
        ("extend_lifetime", "admin"),
        ("stop", "admin"),
        ("requeue", "admin"),
    ]
    assert any("priority 99 → 5" in h["reason"] for h in t["history"])


def test_an_operation_the_status_does_not_allow_is_refused_and_changes_nothing(pds, client, tmp_path):
    f = tmp_path / "b.bin"
    f.write_bytes(b"b")
    code, out, _ = pds("push", str(f), "--destination", "site1")
    tid = transfer_of(client, int(out))["id"]
    code, _, err = pds("transfer", "release", str(tid))  # it is Queued, not StandBy
    assert code == 1 and "Queued" in err and "release" in err and err.count("\n") == 1
    response = client.post(f"/transfers/{tid}/release", headers=ADMIN)
    assert response.status_code == 409
    code, _, err = pds("transfer", "priority", str(tid), "120")
    assert code == 1 and "priority" in err
    code, _, err = pds("transfer", "priority", str(tid))
    assert code == 2 and "needs the new priority" in err
    assert client.post(f"/transfers/{tid}/explode", headers=ADMIN).status_code == 404
    assert client.post("/transfers/999999/stop", headers=ADMIN).status_code == 404
    t = client.get(f"/transfers/{tid}", headers=ADMIN).json()
    assert t["status"] == "Queued" and t["priority"] == 99


def test_only_operators_and_administrators_operate(client, site, sqlite_engine):
    with session_scope(sqlite_engine) as session:
        ensure_user(session, "reader", "pw-reader")
    response = client.post("/destinations/site1/hold", headers=basic("reader", "pw-reader"))
    assert response.status_code == 403 and "needs an operator's grant" in response.json()["reason"]
    assert client.get("/destinations/site1", headers=ADMIN).json()["destination"]["active"] is True


def test_destination_settings_hold_and_restart(pds, client):
    code, out, err = pds(
        "destination", "set", "site1", "--max-starts", "5", "--window", "22:00-02:00",
        "--on-host-failure", "next_and_retry", "--mqtt-topic", "pds/$destination", "--mqtt-payload", "wis2",
    )  # fmt: skip
    assert (code, err) == (0, ""), err
    view = client.get("/destinations/site1", headers=ADMIN).json()["destination"]
    assert (view["max_starts"], view["window_start"], view["window_end"]) == (5, "22:00", "02:00")
    assert view["on_host_failure"] == "next_and_retry" and view["mqtt_payload"] == "wis2"
    code, _, err = pds("destination", "set", "site1", "--window", "25:00-02:00")
    assert code == 1 and "HH:MM" in err
    code, _, err = pds("destination", "set", "site1", "--mqtt-topic", "a/#")
    assert code == 1 and "wildcard" in err
    assert client.patch("/destinations/site1", json={"name": "other"}, headers=ADMIN).status_code == 400
    assert client.patch("/destinations/site1", json={"max_starts": 0}, headers=ADMIN).status_code == 400

    code, out, _ = pds("--json", "destination", "hold", "site1")
    held = json.loads(out)
    assert held["destination"]["active"] is False and held["state"]["hold_reason"] == "put on hold by admin"
    code, out, _ = pds("destination", "list")
    assert "on hold" in out
    code, out, _ = pds("--json", "destination", "restart", "site1")
    restarted = json.loads(out)
    assert restarted["destination"]["active"] is True and restarted["state"]["hold_reason"] is None


def test_destination_history_shows_who_held_restarted_and_changed_it(pds, client, sqlite_engine):
    with session_scope(sqlite_engine) as session:
        ensure_user(session, "op", "pw-operator")
        grant(session, "op", "all,operate", destination="site1")
        ensure_user(session, "reader", "pw-reader")
        grant(session, "reader", "get,dir", destination="site1")
    operator = basic("op", "pw-operator")
    assert client.post("/destinations/site1/hold", headers=operator).status_code == 200
    assert pds("destination", "restart", "site1")[0] == 0
    assert pds("destination", "set", "site1", "--max-starts", "7")[0] == 0

    code, out, err = pds("destination", "history", "site1")
    assert (code, err) == (0, ""), err
    lines = out.splitlines()
    assert [line.split(" ", 1)[1] for line in lines] == [
        "create by admin",
        "attach_host by admin: dissemination host h1 at rank 0",
        "hold by op: put on hold",
        "restart by admin: restarted (it was put on hold by op)",
        "update by admin: max_starts 3 → 7",
    ]
    history = client.get("/destinations/site1/history", headers=operator).json()
    assert [(h["action"], h["by"]) for h in history][-3:] == [("hold", "op"), ("restart", "admin"), ("update", "admin")]
    assert client.get("/destinations/site1/history?limit=1", headers=ADMIN).json()[0]["action"] == "update"
    # Hosts are named there: operators' knowledge, as the hosts themselves.
    assert client.get("/destinations/site1/history", headers=basic("reader", "pw-reader")).status_code == 403
    assert client.get("/destinations/nowhere/history", headers=ADMIN).status_code == 404
    code, _, err = pds("destination", "history")
    assert code == 2 and "needs a NAME" in err


def test_aliases_queue_matching_files_elsewhere_with_their_own_target_priority_and_delay(pds, client, tmp_path):
    assert client.post("/destinations", json={"name": "mirror"}, headers=ADMIN).status_code == 201
    code, _, err = pds(
        "destination", "alias", "site1", "--to", "mirror", "--pattern", r"^grib/(.*)\.grib$",
        "--replace", r"gridded/\1.grb", "--alias-priority", "7", "--delay", "600",
    )  # fmt: skip
    assert (code, err) == (0, "")
    aliases = client.get("/destinations/site1", headers=ADMIN).json()["aliases"]
    assert aliases == [
        {"alias_name": "mirror", "pattern": r"^grib/(.*)\.grib$", "priority": 7, "delay_seconds": 600,
         "replacement": r"gridded/\1.grb"}
    ]  # fmt: skip
    grib, text = tmp_path / "t.grib", tmp_path / "t.txt"
    grib.write_bytes(b"GRIB")
    text.write_bytes(b"TEXT")
    _, out, _ = pds("push", str(grib), "--destination", "site1", "--target", "grib/t2m.grib")
    transfers = {
        t["destination"]: t for t in client.get("/transfers", params={"data_file_id": int(out)}, headers=ADMIN).json()
    }
    assert transfers["site1"]["target"] == "grib/t2m.grib" and transfers["site1"]["priority"] == 99
    assert transfers["mirror"]["target"] == "gridded/t2m.grb" and transfers["mirror"]["priority"] == 7
    delay = datetime.fromisoformat(transfers["mirror"]["scheduled_at"]) - datetime.fromisoformat(
        transfers["site1"]["scheduled_at"]
    )
    assert 590 <= delay.total_seconds() <= 610
    _, out, _ = pds("push", str(text), "--destination", "site1", "--target", "notes/t.txt")
    assert [
        t["destination"] for t in client.get("/transfers", params={"data_file_id": int(out)}, headers=ADMIN).json()
    ] == ["site1"]

    code, _, err = pds("destination", "alias", "site1", "--to", "mirror")
    assert code == 1 and "already an alias" in err
    code, _, err = pds("destination", "alias", "site1", "--to", "nowhere")
    assert code == 1 and "nowhere" in err
    response = client.post("/destinations/mirror/aliases", json={"alias": "site1", "pattern": "(["}, headers=ADMIN)
    assert response.status_code == 400 and "regular expression" in response.json()["reason"]


def test_push_at_a_time_with_a_lifetime(pds, client, tmp_path):
    f = tmp_path / "later.bin"
    f.write_bytes(b"later")
    code, out, err = pds("push", str(f), "--destination", "site1", "--at", "2099-01-01T06:00Z", "--lifetime", "60")
    assert (code, err) == (0, "")
    (t,) = client.get("/transfers", params={"data_file_id": int(out)}, headers=ADMIN).json()
    scheduled = datetime.fromisoformat(t["scheduled_at"])
    assert 0 <= (scheduled - datetime(2099, 1, 1, 6, tzinfo=UTC)).total_seconds() < 5
    code, _, err = pds("push", str(f), "--destination", "site1", "--at", "tomorrow")
    assert code == 2 and "ISO 8601" in err
    code, _, err = pds("push", str(f), "--destination", "site1", "--at", "2099-01-01", "--delay", "5")
    assert code == 2 and "not both" in err


def test_a_second_push_of_a_target_is_refused_unless_it_says_requeue_or_force(pds, client, tmp_path):
    """As with ecpds: `--requeue` replaces the file the destination has (it must have one), `--force`
    replaces it or pushes it new; the older transfers stop, so only the new content is sent."""
    assert client.post("/destinations", json={"name": "mirror"}, headers=ADMIN).status_code == 201
    alias = {"alias": "mirror"}
    assert client.post("/destinations/site1/aliases", json=alias, headers=ADMIN).status_code == 201
    old, new = tmp_path / "old.grib", tmp_path / "new.grib"
    old.write_bytes(b"old" * 10)
    new.write_bytes(b"new" * 20)
    code, out, _ = pds("push", str(old), "-d", "site1", "-t", "fc/t.grib")
    first = int(out)
    older = client.get("/transfers", params={"data_file_id": first}, headers=ADMIN).json()
    assert sorted(t["destination"] for t in older) == ["mirror", "site1"]

    code, out, err = pds("push", str(new), "-d", "site1", "-t", "fc/t.grib")
    assert code == 1 and out == "" and err.count("\n") == 1
    assert "site1:fc/t.grib already exists" in err and "--requeue or --force" in err
    assert all(
        t["status"] == "Queued" for t in client.get("/transfers", params={"data_file_id": first}, headers=ADMIN).json()
    )

    code, out, err = pds("--json", "push", str(new), "-d", "site1", "-t", "fc/t.grib", "--requeue")
    assert (code, err) == (0, "")
    second = json.loads(out)["data_file_id"]
    for t in client.get("/transfers", params={"data_file_id": first}, headers=ADMIN).json():
        assert t["status"] == "Stopped"
        detail = client.get(f"/transfers/{t['id']}", headers=ADMIN).json()
        assert detail["history"][-1]["action"] == "replace" and detail["history"][-1]["by"] == "admin"
    replacing = client.get("/transfers", params={"data_file_id": second}, headers=ADMIN).json()
    assert sorted((t["destination"], t["status"]) for t in replacing) == [("mirror", "Queued"), ("site1", "Queued")]
    status = json.loads(pds("--json", "status", str(second))[1])
    assert status["data_file"]["size"] == 60

    code, out, err = pds("push", str(new), "-d", "site1", "-t", "fc/other.grib", "--requeue")
    assert code == 1 and "nothing to requeue: site1:fc/other.grib" in err
    code, out, err = pds("push", str(new), "-d", "site1", "-t", "fc/other.grib", "--force")
    assert (code, err) == (0, "")  # nothing to replace: pushed as new
    code, out, err = pds("push", str(old), "-d", "site1", "-t", "fc/other.grib", "--force")
    assert (code, err) == (0, "")
    code, _, err = pds("push", str(old), "-d", "site1", "--force", "--requeue")
    assert code == 2 and "not allowed with" in err


def test_replacing_waits_for_a_transfer_that_is_moving_bytes(pds, client, tmp_path, sqlite_engine):
    from catalog.statuses import TransferStatus
    from catalog.transfers import change_status

    f = tmp_path / "a.bin"
    f.write_bytes(b"a")
    _, out, _ = pds("push", str(f), "-d", "site1")
    tid = transfer_of(client, int(out))["id"]
    with session_scope(sqlite_engine) as session:
        change_status(session, tid, "claim", TransferStatus.TRANSFERRING, by="mover")
    code, _, err = pds("push", str(f), "-d", "site1", "--force")
    assert code == 1 and f"transfer {tid} is Transferring" in err
    assert client.get(f"/transfers/{tid}", headers=ADMIN).json()["status"] == "Transferring"


def test_notification_on_arrival_is_set_through_pds_and_bad_values_are_refused(pds, client):
    code, _, err = pds("destination", "set", "site1", "--mqtt-on-arrival", "yes")
    assert code == 1 and "mqtt_on_arrival needs an mqtt_topic" in err  # nowhere to publish to
    code, _, err = pds("destination", "set", "site1", "--mqtt-topic", "pds/$destination", "--mqtt-on-arrival", "yes")
    assert (code, err) == (0, ""), err
    assert client.get("/destinations/site1", headers=ADMIN).json()["destination"]["mqtt_on_arrival"] is True
    code, _, err = pds("destination", "set", "site1", "--mqtt-on-arrival", "maybe")
    assert code == 2 and "invalid choice: 'maybe'" in err

    refused = client.patch("/destinations/site1", json={"mqtt_on_arrival": "maybe"}, headers=ADMIN)
    assert refused.status_code == 400 and "mqtt_on_arrival" in refused.text
    refused = client.patch("/destinations/site1", json={"mqtt_topic": None}, headers=ADMIN)
    assert refused.status_code == 400 and "mqtt_on_arrival needs an mqtt_topic" in refused.text
    view = client.get("/destinations/site1", headers=ADMIN).json()["destination"]
    assert (view["mqtt_on_arrival"], view["mqtt_topic"]) == (True, "pds/$destination")  # nothing changed
    code, _, err = pds("destination", "set", "site1", "--mqtt-on-arrival", "no")
    assert (code, err) == (0, ""), err
    assert client.get("/destinations/site1", headers=ADMIN).json()["destination"]["mqtt_on_arrival"] is False
