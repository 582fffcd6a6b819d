"""The monitor's pages and actions over HTTP: who may see and do what, forged forms refused, and the
Prometheus metrics at /metrics."""

from __future__ import annotations

import html
import re

import pytest
from litestar.testing import TestClient
from prometheus_client.parser import text_string_to_metric_families

from api.app import create_app
from api.metrics import PROXY_CACHE_HITS, PROXY_CACHE_MISSES
from catalog.data_users import grant
from catalog.database import session_scope
from catalog.operations import stop
from catalog.users import ensure_user
from tests.factories import destination, local_host, push


@pytest.fixture
def client(settings, sqlite_engine, store, tmp_path):
    destination(sqlite_engine, "site1", host=local_host("h1", str(tmp_path / "remote")))
    destination(sqlite_engine, "site2")
    with session_scope(sqlite_engine) as session:
        ensure_user(session, "viewer", "viewer-pw")  # a data user of site1
        grant(session, "viewer", "get,dir", destination="site1")
        ensure_user(session, "op", "op-pw")  # an operator of site1
        grant(session, "op", "all,operate", destination="site1")
    with TestClient(create_app(settings, engine=sqlite_engine, store=store)) as client:
        client.engine, client.store = sqlite_engine, store
        yield client


def form_token(html: str) -> str:
    return re.search(r'name="form_token" value="([^"]*)"', html).group(1)


def log_in(client, login="admin", password="admin", next_page="/monitor"):
    page = client.get("/monitor/login")
    return client.post(
        "/monitor/login",
        data={"login": login, "password": password, "form_token": form_token(page.text), "next": next_page},
        follow_redirects=False,
    )


def test_pages_need_a_log_in_and_return_to_the_page_asked_for(client):
    r = client.get("/monitor/destinations/site1", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/monitor/login?next=%2Fmonitor%2Fdestinations%2Fsite1"
    assert log_in(client, password="wrong").status_code == 401
    r = log_in(client, next_page="/monitor/destinations/site1")
    assert r.status_code == 303 and r.headers["location"] == "/monitor/destinations/site1"
    cookie = r.headers["set-cookie"]
    assert "HttpOnly" in cookie and "samesite=strict" in cookie.lower()
    assert "Destination site1" in client.get("/monitor/destinations/site1").text


def test_a_log_in_may_only_send_back_to_the_monitor(client):
    assert log_in(client, next_page="https://elsewhere.example/").headers["location"] == "/monitor"
    assert log_in(client, next_page="//elsewhere.example/monitor").headers["location"] == "/monitor"


def test_a_log_in_form_from_elsewhere_is_refused(client):
    r = client.post("/monitor/login", data={"login": "admin", "password": "admin", "form_token": "x"})
    assert r.status_code == 403 and "pds_session" not in r.headers.get("set-cookie", "")


def test_a_forged_session_cookie_is_ignored(client):
    client.cookies.set("pds_session", "admin|9999999999|00|" + "0" * 64, path="/monitor")
    assert client.get("/monitor", follow_redirects=False).status_code == 303


def test_overview_shows_queue_and_state(client):
    push(client.engine, client.store, "site1", "a.bin")
    push(client.engine, client.store, "site1", "b.bin")
    log_in(client)
    client.post(
        "/monitor/destinations/site2/hold",
        data={"form_token": form_token(client.get("/monitor/destinations/site2").text)},
    )
    html = client.get("/monitor").text
    row = re.search(r'<tr id="destination-site1">(.*?)</tr>', html, re.S).group(1)
    assert '<td class="num queued">2</td>' in row and "active" in row and "h1" in row
    row2 = re.search(r'<tr id="destination-site2">(.*?)</tr>', html, re.S).group(1)
    assert "on hold" in row2 and "put on hold by admin" in row2 and "(portal bucket)" in row2
    assert "h1" in client.get("/monitor/hosts").text
    page = client.get("/monitor/destinations/site2").text
    history = re.search(r'<details id="history">(.*?)</details>', page, re.S).group(1)
    assert re.search(r"<td>hold</td><td>admin</td><td>put on hold</td>", history)


def test_a_destinations_history_is_shown_to_its_operators_only(client):
    log_in(client, "op", "op-pw")
    token = form_token(client.get("/monitor/destinations/site1").text)
    client.post("/monitor/destinations/site1/hold", data={"form_token": token})
    page = client.get("/monitor/destinations/site1").text
    history = re.search(r'<details id="history">(.*?)</details>', page, re.S).group(1)
    assert "<td>hold</td><td>op</td>" in history and "dissemination host h1" in history
    client.cookies.clear()
    log_in(client, "viewer", "viewer-pw")
    assert 'id="history"' not in client.get("/monitor/destinations/site1").text


def test_actions_need_the_page_token_and_an_operator(client):
    _, (transfer_id,) = push(client.engine, client.store, "site1", "a.bin")
    log_in(client, "viewer", "viewer-pw")
    page = client.get("/monitor/destinations/site1").text
    assert f"/monitor/transfers/{transfer_id}/stop" not in page  # no buttons for a data user
    assert "Hosts in order" not in page  # nor its hosts
    r = client.post(f"/monitor/transfers/{transfer_id}/stop", data={"form_token": form_token(page)})
    assert r.status_code == 403 and "not an operator of destination &#39;site1&#39;" in r.text
    assert client.get("/monitor/destinations/site2").status_code == 404  # not granted: not there

    client.cookies.clear()
    log_in(client, "op", "op-pw")
    page = client.get("/monitor/destinations/site1").text
    assert f"/monitor/transfers/{transfer_id}/hold" in page  # an operator of site1 has the buttons

    client.cookies.clear()
    log_in(client)
    r = client.post(f"/monitor/transfers/{transfer_id}/stop", data={"form_token": "forged"})
    assert r.status_code == 403 and "reload the page" in r.text
    assert client.get(f"/transfers/{transfer_id}", auth=("admin", "admin")).json()["status"] == "Queued"

    token = form_token(client.get("/monitor/destinations/site1").text)
    r = client.post(
        f"/monitor/transfers/{transfer_id}/priority",
        data={"form_token": token, "priority": "5", "next": "/monitor/destinations/site1"},
        follow_redirects=False,
    )
    assert r.headers["location"].startswith("/monitor/destinations/site1?message=")
    r = client.post(f"/monitor/transfers/{transfer_id}/stop", data={"form_token": token, "reason": "withdrawn"})
    assert f"transfer {transfer_id}: stop done" in r.text
    transfer = client.get(f"/transfers/{transfer_id}", auth=("admin", "admin")).json()
    assert transfer["status"] == "Stopped" and transfer["priority"] == 5
    assert transfer["history"][-1]["by"] == "admin" and transfer["history"][-1]["reason"] == "withdrawn"
    # A refused edge is said on the page, not a crash.
    r = client.post(f"/monitor/transfers/{transfer_id}/hold", data={"form_token": token})
    assert r.status_code == 200 and f"transfer {transfer_id}: hold refused" in r.text


def message_of(response) -> str:
    return html.unescape(re.search(r'class="message"[^>]*>(.*?)<', response.text, re.S).group(1).strip())


def test_an_administrator_edits_and_deletes_a_host_from_the_monitor(client, tmp_path):
    api = ("admin", "admin")
    client.patch("/hosts/h1", json={"password": "site-secret", "options": {"secret_token": "t0k3n"}}, auth=api)
    log_in(client, "op", "op-pw")  # an operator of site1 sees its host, without forms
    page = client.get("/monitor/hosts/h1").text
    assert 'id="edit-host"' not in page and str(tmp_path / "remote") in page
    r = client.post("/monitor/hosts/h1/edit", data={"form_token": form_token(page), "comment": "mine"})
    assert r.status_code == 403 and client.get("/hosts/h1", auth=api).json()["comment"] == ""

    client.cookies.clear()
    log_in(client)
    page = client.get("/monitor/hosts/h1").text
    assert 'id="edit-host"' in page and "t0k3n" not in page and "site-secret" not in page
    assert "secret_token" in page  # named as kept, never shown
    fields = {
        "form_token": form_token(page),
        "protocol": "file",
        "address": str(tmp_path / "elsewhere"),
        "directory": "",
        "login": "",
        "comment": "moved to the new disk",
        "password": "",  # left empty: the password stays
        "active": "on",
        "options": '{"max_rate": 1000000}',
    }
    r = client.post("/monitor/hosts/h1/edit", data=fields)
    assert "host h1: saved" in message_of(r)
    host = client.get("/hosts/h1", auth=api).json()
    assert host["address"] == str(tmp_path / "elsewhere") and host["comment"] == "moved to the new disk"
    assert host["has_password"] and host["options"] == {"max_rate": 1000000, "secret_token": "***"}
    history = client.get("/destinations/site1/history", auth=api).json()
    assert history[-1]["action"] == "host-update" and history[-1]["by"] == "admin"
    assert "moved to the new disk" in history[-1]["reason"] and "site-secret" not in history[-1]["reason"]

    r = client.post("/monitor/hosts/h1/edit", data=fields | {"options": "{not json"})
    assert "host h1: edit refused: options are not a JSON object" in message_of(r)
    r = client.post("/monitor/hosts/h1/edit", data=fields | {"protocol": "gopher"})
    assert "edit refused: unknown protocol 'gopher'" in message_of(r)
    assert client.get("/hosts/h1", auth=api).json()["protocol"] == "file"

    r = client.post("/monitor/hosts/h1/delete", data={"form_token": fields["form_token"]})
    assert "host h1 deleted" in message_of(r)
    assert client.get("/hosts/h1", auth=api).status_code == 404
    assert client.get("/destinations/site1", auth=api).json()["hosts"]["dissemination"] == []


def test_an_administrator_edits_and_deletes_a_destination_from_the_monitor(client):
    api = ("admin", "admin")
    push(client.engine, client.store, "site2", "queued.bin")
    log_in(client, "op", "op-pw")
    page = client.get("/monitor/destinations/site1").text
    assert 'id="edit-destination"' not in page  # an operator holds and restarts; settings are the admin's
    r = client.post("/monitor/destinations/site1/edit", data={"form_token": form_token(page), "max_starts": "9"})
    assert r.status_code == 403

    client.cookies.clear()
    log_in(client)
    page = client.get("/monitor/destinations/site2").text
    assert 'id="edit-destination"' in page and 'name="max_starts" value="3"' in page
    token = form_token(page)
    form = {"form_token": token, "max_starts": "5", "window_start": "22:00", "window_end": "04:00"}
    form |= {"mqtt_retain": "on", "lifetime_seconds": ""}
    r = client.post("/monitor/destinations/site2/edit", data=form)
    assert "destination site2: edit done" in message_of(r)
    settings = client.get("/destinations/site2", auth=api).json()["destination"]
    assert (settings["max_starts"], settings["window_start"], settings["window_end"]) == (5, "22:00", "04:00")
    assert settings["mqtt_retain"] is True and settings["lifetime_seconds"] is None
    history = client.get("/destinations/site2/history", auth=api).json()
    assert history[-1]["action"] == "update" and history[-1]["by"] == "admin"

    r = client.post("/monitor/destinations/site2/edit", data=form | {"max_starts": "0"})
    assert "destination site2: edit refused: invalid destination settings: max_starts" in message_of(r)
    assert client.get("/destinations/site2", auth=api).json()["destination"]["max_starts"] == 5

    # Notification on arrival is a checkbox next to the other MQTT settings; it needs a topic.
    assert 'id="setting-mqtt_on_arrival" name="mqtt_on_arrival" type="checkbox">' in page
    r = client.post("/monitor/destinations/site2/edit", data=form | {"mqtt_on_arrival": "on"})
    assert "edit refused: mqtt_on_arrival needs an mqtt_topic" in message_of(r)
    r = client.post("/monitor/destinations/site2/edit", data=form | {"mqtt_on_arrival": "on", "mqtt_topic": "in/$name"})
    assert "destination site2: edit done" in message_of(r)
    settings = client.get("/destinations/site2", auth=api).json()["destination"]
    assert (settings["mqtt_on_arrival"], settings["mqtt_topic"]) == (True, "in/$name")

    r = client.post("/monitor/destinations/site2/delete", data={"form_token": token, "force": "on"})
    assert "destination site2 deleted with its 1 transfer(s) (1 stopped first)" in message_of(r)
    assert client.get("/destinations/site2", auth=api).status_code == 404


def metric_values(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_metrics_count_queues_statuses_bytes_and_proxy_cache(client):
    push(client.engine, client.store, "site1", "a.bin", data=b"x" * 1000)
    _, (stopped,) = push(client.engine, client.store, "site1", "b.bin")
    with session_scope(client.engine) as session:
        stop(session, stopped, by="test")
    before = metric_values(client.get("/metrics").text)
    PROXY_CACHE_HITS.labels(dataset="era5").inc(3)
    PROXY_CACHE_MISSES.labels(dataset="era5").inc()
    r = client.get("/metrics")  # no credentials, like /health
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    values = metric_values(r.text)
    assert values[("pds_queue_depth", (("destination", "site1"),))] == 1
    assert values[("pds_queue_depth", (("destination", "site2"),))] == 0
    assert values[("pds_transfers", (("destination", "site1"), ("status", "Stopped")))] == 1
    assert values[("pds_transfers", (("destination", "site1"), ("status", "Done")))] == 0
    assert values[("pds_bytes_sent", (("destination", "site1"),))] == 0
    hits = ("pds_proxy_cache_hits_total", (("dataset", "era5"),))
    misses = ("pds_proxy_cache_misses_total", (("dataset", "era5"),))
    assert values[hits] - before.get(hits, 0) == 3
    assert values[misses] - before.get(misses, 0) == 1


def test_the_products_page_shows_statuses_and_flags_late_ones(client):
    from datetime import UTC, datetime

    from catalog.products import ProductState, record_product_status

    with session_scope(client.engine) as session:
        past, future = datetime(2020, 1, 1, 6, tzinfo=UTC), datetime(2099, 1, 1, 6, tzinfo=UTC)
        record_product_status(session, ProductState.EXPECTED, "oper", type="fc", schedule_time=past, by="feeder")
        record_product_status(session, ProductState.STARTED, "enfo", schedule_time=future, by="feeder")
    log_in(client, "viewer", "viewer-pw")  # site1 receives neither stream: nothing to see
    assert '<tr id="product-' not in client.get("/monitor/products").text
    client.cookies.clear()
    log_in(client)
    page = client.get("/monitor/products").text
    rows = re.findall(r'<tr id="product-\d+"( class="late")?><td>(\w+)</td>', page)
    assert sorted((stream, bool(late)) for late, stream in rows) == [("enfo", False), ("oper", True)]
    assert "expected (late)" in page and "started" in page and "2020-01-01 06:00:00" in page
    late_only = client.get("/monitor/products", params={"late": "true"}).text
    assert re.findall(r'<tr id="product-\d+" class="late"><td>(\w+)</td>', late_only) == ["oper"]
    assert "enfo" not in late_only
    assert client.get("/monitor/products", params={"stream": "enfo"}).text.count('<tr id="product-') == 1


def test_the_monitor_shows_continental_movers_and_what_they_sent(client):
    from catalog.models import DataTransfer
    from catalog.transfers import heartbeat

    (tid,) = push(client.engine, client.store, "site1", "f.bin")[1]
    with session_scope(client.engine) as session:
        heartbeat(session, "continental-1", machine="eu-box", pid=7, starting=True, proxy_host="eu-west")
        transfer = session.get(DataTransfer, tid)
        transfer.mover, transfer.proxy_host = "continental-1", "eu-west"  # as its claim records them
        session.add(transfer)
    log_in(client)
    overview = client.get("/monitor").text
    assert re.search(r"<td>continental-1</td><td>eu-west</td><td>eu-box</td><td>7</td>", overview)
    page = client.get(f"/monitor/transfers/{tid}").text
    assert "continental-1 (continental, from the store of proxy host eu-west)" in page


def test_the_deployments_page_shows_schedules_and_an_administrator_starts_a_run(client, prefect_server):
    import httpx

    from api.deployments import register

    register(prefect_server.api_url, pause_schedules=True)
    log_in(client, "viewer", "viewer-pw")
    assert client.get("/monitor/deployments").status_code == 403  # operators' page
    client.cookies.clear()
    log_in(client, "op", "op-pw")
    page = client.get("/monitor/deployments").text
    row = re.search(r'<tr id="deployment-mover-mover">(.*?)</tr>', page, re.S).group(1)
    assert "every 60 s (paused)" in row and "pds-movers" in row
    purge = re.search(r'<tr id="deployment-purge-purge">(.*?)</tr>', page, re.S).group(1)
    assert "every 3600 s (active)" in purge
    drain = re.search(r'<tr id="deployment-drain-drain">(.*?)</tr>', page, re.S).group(1)
    assert "on demand" in drain and "<button" not in drain  # no button for a non-administrator
    deployment_id = next(
        d["id"]
        for d in httpx.post(f"{prefect_server.api_url}/deployments/filter", json={}).json()
        if d["name"] == "drain"
    )
    r = client.post(f"/monitor/deployments/{deployment_id}/run", data={"form_token": form_token(page)})
    assert r.status_code == 403 and "not an administrator" in r.text

    client.cookies.clear()
    log_in(client)
    page = client.get("/monitor/deployments").text
    drain = re.search(r'<tr id="deployment-drain-drain">(.*?)</tr>', page, re.S).group(1)
    assert f'action="/monitor/deployments/{deployment_id}/run"' in drain and ">Run now</button>" in drain
    r = client.post(f"/monitor/deployments/{deployment_id}/run", data={"form_token": form_token(page)})
    assert r.status_code == 200
    message = re.search(r'<p class="message" id="message">(.*?)</p>', r.text).group(1)
    assert message.startswith("drain/drain: flow run ") and message.endswith(" started by admin")
    run_id = message.split()[3]
    run = httpx.get(f"{prefect_server.api_url}/flow_runs/{run_id}").json()
    assert run["deployment_id"] == deployment_id and "pds-monitor" in run["tags"]
    assert run["state_type"] in ("SCHEDULED", "PENDING", "RUNNING", "COMPLETED")  # a worker picks it up
    # The page now shows it as the deployment's latest run, linked to the Prefect UI.
    row = re.search(r'<tr id="deployment-drain-drain">(.*?)</tr>', client.get("/monitor/deployments").text, re.S)
    assert f"/runs/flow-run/{run_id}" in row.group(1)

    r = client.post("/monitor/deployments/not-an-id/run", data={"form_token": form_token(page)})
    assert "run refused: &#39;not-an-id&#39; is not a deployment id" in r.text


def test_the_deployments_page_says_when_no_prefect_server_is_configured(client):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    log_in(client)
    with temporary_settings(updates={PREFECT_API_URL: ""}):
        page = client.get("/monitor/deployments")
    assert page.status_code == 200
    assert "no Prefect server is configured for the API (set PREFECT_API_URL)" in page.text


def test_an_administrator_edits_and_deletes_a_data_user_from_the_monitor(client):
    api = ("admin", "admin")
    log_in(client, "op", "op-pw")
    assert client.get("/monitor/datausers").status_code == 403  # an operator is no administrator
    assert "Data users" not in client.get("/monitor").text

    client.cookies.clear()
    log_in(client)
    listing = client.get("/monitor/datausers").text
    assert 'id="datauser-viewer"' in listing and "site1: get,dir" in listing
    page = client.get("/monitor/datausers/viewer").text
    token = form_token(page)
    form = {
        "form_token": token,
        "description": "the night shift",
        "country_code": "",
        "upload_quota_bytes": "1000000",
        "download_quota_bytes": "",
        "quota_period_seconds": "86400",
        "max_connections": "3",
        "password": "",
        "active": "on",
    }
    r = client.post("/monitor/datausers/viewer/edit", data=form)
    assert message_of(r).startswith("data user viewer: saved")
    user = client.get("/datausers/viewer", auth=api).json()
    assert (user["description"], user["upload_quota_bytes"], user["max_connections"]) == ("the night shift", 1000000, 3)
    assert user["download_quota_bytes"] is None and user["active"] and not user["is_admin"]
    assert client.get("/transfers", auth=("viewer", "viewer-pw")).status_code == 200  # the password stayed

    r = client.post("/monitor/datausers/viewer/edit", data=form | {"max_connections": "many"})
    assert "edit refused: max_connections must be a whole number" in message_of(r)
    r = client.post("/monitor/datausers/viewer/edit", data=form | {"password": "new-pw-1"})
    assert message_of(r) == "data user viewer: saved (password)"
    assert client.get("/transfers", auth=("viewer", "new-pw-1")).status_code == 200
    r = client.post("/monitor/datausers/viewer/edit", data={k: v for k, v in form.items() if k != "active"})
    assert "active False" in message_of(r)
    assert client.get("/transfers", auth=("viewer", "new-pw-1")).status_code == 401  # disabled

    admin_form = {"form_token": token, "description": "", "quota_period_seconds": "86400"}  # unticked: not admin
    r = client.post("/monitor/datausers/admin/edit", data=admin_form | {"active": "on"})
    assert "you cannot disable yourself or take away your own administrator role" in message_of(r)
    assert "you cannot delete yourself" in message_of(client.post("/monitor/datausers/admin/delete", data=form))

    r = client.post("/monitor/datausers/viewer/delete", data={"form_token": token})
    assert message_of(r) == "data user viewer deleted"
    assert client.get("/datausers/viewer", auth=api).status_code == 404
