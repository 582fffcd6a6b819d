"""Acquisition through the API and `pds`: rules, schedules, run now, register by group and wait."""

from __future__ import annotations

import contextvars
import json
import threading

import pytest
from litestar.testing import TestClient

from api.app import create_app
from tests.api.conftest import ADMIN, cli_runner


@pytest.fixture
def client(rt, settings):
    with TestClient(create_app(rt.settings, engine=rt.engine, store=rt.store)) as client:
        yield client


@pytest.fixture
def pds(client, monkeypatch, capsys):
    return cli_runner(client, monkeypatch, capsys)


@pytest.fixture
def provider(client, local_source):
    assert client.post("/destinations", json={"name": "acq"}, headers=ADMIN).status_code == 201
    body = local_source.host.model_dump(mode="json")
    assert client.post("/hosts", json=body, headers=ADMIN).status_code == 201
    return local_source


def test_rules_schedule_and_run_now_from_pds(pds, provider, prefect_server, rt):
    provider.put("20260101/a.grib", b"a")
    provider.put("20260101/b.txt", b"b")
    code, out, err = pds("acquisition", "rule", "provider-file", "-d", "acq", "--pattern", r"\.grib$", "--depth", "1")
    assert code == 0, err
    code, out, err = pds("acquisition", "schedule", "provider-file", "--every", "0")
    assert code == 0 and "only when run" in out
    code, out, err = pds("--json", "acquisition", "show", "provider-file")
    shown = json.loads(out)
    assert shown["schedule"]["next_run_at"] is None and len(shown["rules"]) == 1

    from flows.discovery import acquisition_scheduler

    assert acquisition_scheduler(stop_when_idle=True)["passes"] == 0  # not due: nothing runs
    code, out, err = pds("acquisition", "run", "provider-file")
    assert code == 0 and "requested" in out
    assert acquisition_scheduler(stop_when_idle=True)["passes"] == 1
    code, out, err = pds("--json", "acquisition", "show", "provider-file")
    state = json.loads(out)["schedule"]
    assert state["last_registered"] == 1 and state["last_error"] is None and state["next_run_at"] is None
    runs = prefect_server.flow_runs(flow_runs={"name": {"any_": ["discovery provider-file"]}})
    assert runs and runs[0]["state_type"] == "COMPLETED"


def test_bad_rules_and_unknown_hosts_are_refused_with_a_reason(client, provider):
    bad = client.post("/acquisition/provider-file/rules", json={"destination": "acq", "pattern": "("}, headers=ADMIN)
    assert bad.status_code == 400 and "not a regular expression" in bad.json()["reason"]
    bad = client.post(
        "/acquisition/provider-file/rules", json={"destination": "acq", "directory": "$date{%Y,soon}"}, headers=ADMIN
    )
    assert bad.status_code == 400 and "bad date delta" in bad.json()["reason"]
    missing = client.post("/acquisition/nowhere/run", headers=ADMIN)
    assert missing.status_code == 404
    dissemination = {"name": "dh", "protocol": "file", "address": "/tmp"}  # noqa: S108
    assert client.post("/hosts", json=dissemination, headers=ADMIN).status_code == 201
    wrong = client.post("/acquisition/dh/rules", json={"destination": "acq"}, headers=ADMIN)
    assert wrong.status_code == 400 and "acquisition host" in wrong.json()["reason"]
    assert client.get("/groups/never", headers=ADMIN).status_code == 404


def test_register_a_group_then_wait_until_it_is_retrieved(pds, provider, rt, prefect_server):
    for i in range(5):
        provider.put(f"out/{i}.dat", b"x" * (i + 1))
    files = [f"{provider.local_root}/out/{i}.dat" for i in range(5)]
    code, out, err = pds(
        "register", *files[:4], f"{files[4]}=renamed/last.dat", "-d", "acq", "--host", "provider-file", "-g", "run-42"
    )
    assert code == 0, err
    ids = [int(line) for line in out.split()]
    assert len(ids) == 5
    code, out, err = pds("--json", "wait", "run-42", "--timeout", "0.5")
    assert code == 1 and "not retrieved" in err

    from flows.retrieval import retrieval

    # The thread runs in a copy of this context, where the test's Prefect server is the API.
    context = contextvars.copy_context()
    worker = threading.Thread(target=context.run, args=(retrieval,), kwargs={"name": "r-group", "stop_when_idle": True})
    worker.start()
    code, out, err = pds("--json", "wait", "run-42", "--timeout", "120")
    worker.join()
    assert code == 0, err
    state = json.loads(out)
    assert state == {"group": "run-42", "total": 5, "retrieved": 5, "waiting": 0, "failed": 0, "complete": True}
    targets = [t["target"] for t in json.loads(pds("--json", "status", str(ids[4]))[1])["transfers"]]
    assert targets == ["renamed/last.dat"]


def test_wait_reports_failed_files_and_exits_non_zero(pds, provider, rt):
    missing = f"{provider.local_root}/nonexistent/file.dat"
    code, out, err = pds("register", missing, "-d", "acq", "--host", "provider-file", "-g", "bad")
    assert code == 0
    from catalog.database import session_scope
    from catalog.retrieval import claim_fetches
    from tasks.retrieval import retrieve

    with session_scope(rt.engine) as session:
        (fetch,) = claim_fetches(session, "r", 5, default_per_host=2)
    retrieve(fetch, "r")
    code, out, err = pds("wait", "bad", "--timeout", "5")
    assert code == 1 and "1 file(s) of group bad failed" in err


def test_pds_acquisition_rule_takes_the_listing_format_and_refuses_a_bad_one(pds, provider):
    search = "stac/search?collections=s2&datetime=$date{%Y-%m-%d,-1d}T00:00:00Z/.."
    code, out, err = pds(
        "acquisition", "rule", "provider-file", "-d", "acq", "--format", "stac-api", "--directory", search
    )
    assert code == 0, err
    code, out, _ = pds("--json", "acquisition", "show", "provider-file")
    (rule,) = json.loads(out)["rules"]
    assert (rule["listing_format"], rule["directory"]) == ("stac-api", search)
    code, _, err = pds("acquisition", "rule", "provider-file", "-d", "acq", "--format", "xml")
    assert code == 1 and "unknown listing format 'xml'" in err and err.count("\n") == 1
