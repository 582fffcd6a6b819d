"""`pds` at parity with `ecpds`: product status PRS lines, push metadata and options, scheduler and
destination start/stop, one-line errors with non-zero exits, and --json after any command."""

from __future__ import annotations

import json

import pytest
from litestar.testing import TestClient

from api.app import create_app
from catalog.events import parse_line
from tests.factories import destination, local_host


@pytest.fixture
def pds(settings, sqlite_engine, store, tmp_path, monkeypatch, capsys):
    from api.cli import main

    monkeypatch.setenv("PDS_USER", "admin")
    monkeypatch.setenv("PDS_PASSWORD", "admin")
    monkeypatch.delenv("PDS_TOKEN", raising=False)
    destination(sqlite_engine, "site1", host=local_host("h1", str(tmp_path / "remote")))
    destination(sqlite_engine, "site2")
    with TestClient(create_app(settings, engine=sqlite_engine, store=store)) as client:

        def run(*argv):
            capsys.readouterr()
            code = main(list(argv), http=client)
            out, err = capsys.readouterr()
            # Only what pds itself wrote (the in-process app's log records go to stderr too).
            err = "".join(line for line in err.splitlines(keepends=True) if line.startswith(("pds", "{")))
            return code, out, err

        yield run


def test_product_status_writes_prs_lines(pds, settings):
    code, out, _ = pds(
        "product",
        "expected",
        "--stream",
        "GWAEF",
        "--type",
        "EF",
        "--time",
        "2025-02-12T06:00Z",
        "--step",
        "144",
        "--schedule-time",
        "2025-02-12T13:04Z",
    )
    assert code == 0
    assert out.startswith("PRS;StatusCode=SCHE;DataStream=GWAEF;TimeStep=144;TimeBase=2025-02-12 06:00:00.0;Type=EF;")
    assert "ScheduleTime=2025-02-12 13:04:00.0;LastUpdate=" in out
    assert pds("product", "started", "--stream", "GWAEF")[0] == 0
    code, out, _ = pds("--json", "product", "completed", "--stream", "GWAEF")
    assert json.loads(out)["line"].startswith("PRS;StatusCode=DONE;")
    lines = (settings.data_dir / "logs" / "events.log").read_text().splitlines()
    assert [dict(parse_line(line)[1])["StatusCode"] for line in lines] == ["SCHE", "EXEC", "DONE"]


def test_product_status_errors_are_one_line(pds):
    code, _, err = pds("product", "done", "--stream", "x")
    assert code == 2 and err.count("\n") == 1 and "invalid choice" in err
    code, _, err = pds("product", "started", "--stream", "x", "--schedule-time", "tomorrow")
    assert code == 1 and err.count("\n") == 1 and "ISO 8601" in err


def test_push_metadata_options_and_remove_source(pds, tmp_path):
    source = tmp_path / "fc.grib"
    source.write_bytes(b"GRIB" * 10)
    code, out, err = pds(
        "push",
        str(source),
        "-d",
        "site1",
        "--asap",
        "--stream",
        "oper",
        "--type",
        "fc",
        "--time",
        "00",
        "--step",
        "6",
        "-m",
        "expver=0001",
        "-m",
        "class=od",
        "--remove-source",
        "--json",
    )
    assert code == 0, err
    result = json.loads(out)
    assert not source.exists()  # removed once stored
    code, out, _ = pds("status", str(result["data_file_id"]), "--json")
    status = json.loads(out)
    assert status["data_file"]["meta"] == {"expver": "0001", "class": "od"}
    assert (status["data_file"]["stream"], status["data_file"]["data_type"]) == ("oper", "fc")
    assert status["transfers"][0]["priority"] == 0


def test_push_refuses_asap_with_a_priority_and_keeps_the_source(pds, tmp_path):
    source = tmp_path / "fc.grib"
    source.write_bytes(b"x")
    code, _, err = pds("push", str(source), "-d", "site1", "--asap", "-p", "5", "--remove-source")
    assert code == 2 and "--asap" in err and err.count("\n") == 1
    assert source.exists()
    code, _, err = pds("push", str(tmp_path / "missing"), "-d", "site1", "--json")
    assert code == 1 and "no such file" in json.loads(err)["error"]


def test_scheduler_and_destination_stop_and_start(pds):
    code, out, _ = pds("scheduler", "stop", "--json")
    assert code == 0 and json.loads(out)["destinations"] == ["site1", "site2"]
    code, out, _ = pds("destination", "show", "site1", "--json")
    assert json.loads(out)["destination"]["active"] is False
    assert pds("scheduler", "start", "-d", "site1")[1].strip() == "scheduler started: site1"
    assert pds("destination", "stop", "site2")[0] == 0
    code, out, _ = pds("--json", "destination", "list")
    active = {d["destination"]["name"]: d["destination"]["active"] for d in json.loads(out)}
    assert active == {"site1": True, "site2": False}
    assert pds("destination", "start", "site2")[0] == 0
    code, _, err = pds("scheduler", "stop", "-d", "nowhere")
    assert code == 1 and err.startswith("pds: error: 404")


def test_product_statuses_are_listed_and_late_ones_flagged(pds):
    assert (
        pds(
            "product",
            "expected",
            "--stream",
            "oper",
            "--type",
            "fc",
            "--time",
            "00",
            "--schedule-time",
            "2020-01-01T06:00Z",
        )[0]
        == 0
    )
    assert pds("product", "expected", "--stream", "enfo", "--schedule-time", "2099-01-01T06:00Z")[0] == 0
    assert pds("product", "started", "--stream", "enfo", "--schedule-time", "2099-01-01T06:00Z")[0] == 0
    code, out, _ = pds("--json", "product", "list")
    rows = {p["stream"]: p for p in json.loads(out)}
    assert rows["oper"]["status"] == "expected" and rows["oper"]["late"] is True
    assert rows["oper"]["updated_by"] == "admin" and rows["oper"]["type"] == "fc"
    assert rows["enfo"]["status"] == "started" and rows["enfo"]["late"] is False
    assert rows["enfo"]["expected_at"] is not None and rows["enfo"]["started_at"] is not None
    code, out, _ = pds("product", "list", "--late")
    assert out.splitlines() == ["oper\tfc\t00\t-\texpected LATE\tdue 2020-01-01T06:00:00Z"]
    assert pds("product", "completed", "--stream", "oper", "--type", "fc", "--time", "00")[0] == 0
    code, out, _ = pds("product", "list", "--late")
    assert out.strip() == "no product status recorded"
    code, _, err = pds("product", "started")
    assert code == 2 and "needs --stream" in err
