"""A continental mover as a real process: a main mover and a continental mover (`--proxy-host`, its own
store location) on one database, SQLite or PostgreSQL. Files are copied to the continental store before their
scheduled time and sent from there; when the continental mover is SIGKILLed, the main mover takes
its transfers over and sends them from the Data Store. Every file arrives once and whole."""

from __future__ import annotations

import glob
import hashlib
import os
import signal
import time
import uuid
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa

from catalog.database import make_engine, migrate
from catalog.events import parse_line
from tests.ops.stack import PdsProcesses
from tests.servers._common import wait_until
from tests.test_embedded import SiteWatcher

DELAY = 10  # seconds between push and scheduled time: the window pre-replication must use
SIZE = 256 * 1024


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def stack(request, tmp_path, prefect_server):
    """The API as a process on a fresh database; the test starts the movers."""
    url = ""
    if request.param == "postgres":
        url = request.getfixturevalue("postgres").create_database(f"t_{uuid.uuid4().hex[:12]}")
        engine = make_engine(url)
        migrate(engine)
        engine.dispose()
    stack = PdsProcesses(tmp_path, prefect_server.api_url, database_url=url)
    stack.start_api()
    yield stack
    stack.stop()


def events(stack, category):
    path = stack.root / "data" / "logs" / "events.log"
    lines = path.read_text().splitlines() if path.exists() else []
    return [dict(parse_line(line)[1]) for line in lines if line.startswith(category + ";")]


def objects(directory):
    """The objects of a store location by MD5 (objects appear only once whole)."""
    return {
        hashlib.md5(path.read_bytes(), usedforsecurity=False).hexdigest(): path
        for path in (directory / "objects").rglob("*")
        if path.is_file()
    }


def mover_pid(stack, name):
    engine = make_engine(stack.env.get("PDS_DATABASE_URL") or f"sqlite:///{stack.root / 'data' / 'pds.db'}")
    try:
        with engine.connect() as connection:
            return int(connection.execute(sa.text("SELECT pid FROM mover WHERE name = :n"), {"n": name}).scalar() or 0)
    finally:
        engine.dispose()


def push_all(stack, tmp_path, files, destination):
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
        stack.client.push(tmp_path / name, destination, name, delay=DELAY)


def test_continental_mover_pre_replicates_sends_and_is_taken_over_when_killed(stack, tmp_path):
    client = stack.client
    remote, continental = tmp_path / "site", tmp_path / "continental-store"
    client.create_destination("far", max_parallel_transfers=4)
    client.create_host("far-disk", "file", address=str(remote), options={"max_rate": 150_000})
    client.attach_host("far", "far-disk")
    client.create_host("eu-west", "file", address=str(continental), kind="proxy", options={"lead_seconds": 60})
    client.attach_host("far", "eu-west", "proxy")
    assert client.destination("far")["hosts"]["proxy"] == ["eu-west"]

    stack.start_mover("main-1")
    stack.start_mover("continental-1", PDS_MOVER_PROXY_HOST="eu-west")
    wait_until(
        lambda: mover_pid(stack, "continental-1") > 0, 60, "the continental mover", log=stack.log("continental-1")
    )

    # 1. Pre-replicated before the scheduled time, then sent from the continental store.
    first = {f"a{i:02}.bin": os.urandom(SIZE) for i in range(8)}
    watcher = SiteWatcher(remote, {name: len(data) for name, data in first.items()})
    pushed_at = time.monotonic()
    push_all(stack, tmp_path, first, "far")
    md5s = {hashlib.md5(data, usedforsecurity=False).hexdigest() for data in first.values()}
    wait_until(lambda: md5s <= set(objects(continental)), DELAY, "the files in the continental store")
    assert time.monotonic() - pushed_at < DELAY
    assert not any(remote.glob("a*.bin")), "nothing is sent before its scheduled time"

    def proxy_copies():
        return [e for e in events(stack, "CPY") if e["Action"] == "proxy"]

    # An object is in the store before its copy is verified and its CPY line written.
    wait_until(lambda: len(proxy_copies()) >= len(first), 30, "a CPY line per pre-replicated file")
    copies = proxy_copies()
    assert len(copies) == len(first) and all(e["Status"] == "true" for e in copies)
    assert {e["Target"] for e in copies} == {str(continental)}
    assert all(e["Caller"] == "continental-1" for e in copies)
    for transfer in client.transfers(destination="far"):
        assert transfer["status"] == "Queued"
        copy = next(e for e in copies if e["DataTransferId"] == str(transfer["id"]))
        assert datetime.fromisoformat(copy["StartTime"]).replace(tzinfo=UTC) < datetime.fromisoformat(
            transfer["scheduled_at"]
        )

    # Only the continental copies are left to send from: the Data Store's objects of these files go.
    for md5, path in objects(stack.root / "data" / "store").items():
        if md5 in md5s:
            path.unlink()
    wait_until(
        lambda: len(client.transfers(destination="far", status="Done")) == len(first),
        120,
        "the first files delivered",
        log=stack.log("continental-1"),
    )
    for transfer in client.transfers(destination="far"):
        assert (transfer["mover"], transfer["proxy_host"]) == ("continental-1", "eu-west")
        claimed = [h for h in client.transfer(transfer["id"])["history"] if h["action"] == "claim"]
        assert "from the store of proxy host eu-west" in claimed[-1]["reason"]
    uph = [e for e in events(stack, "UPH") if e["FileName"] in first]
    assert len(uph) == len(first)
    assert all((e["Proxied"], e["ProxyHost"], e["TransferServer"]) == ("true", "eu-west", "continental-1") for e in uph)

    wait_until(
        lambda: not md5s & set(objects(continental)), 10, "the copies of the delivered files removed from its store"
    )

    # 2. The continental mover dies with files on the wire: the main mover takes over.
    second = {f"b{i:02}.bin": os.urandom(SIZE) for i in range(16)}
    watcher.stop()
    watcher = SiteWatcher(remote, {name: len(data) for name, data in (first | second).items()})
    push_all(stack, tmp_path, second, "far")

    def by_mover(status):
        counts: dict[str, int] = {}
        for t in client.transfers(destination="far", status=status, limit=1000):
            if t["target"] in second:
                counts[t["mover"]] = counts.get(t["mover"], 0) + 1
        return counts

    try:
        wait_until(
            lambda: by_mover("Transferring").get("continental-1", 0) > 0,
            DELAY + 60,
            "the continental mover sending the second files",
            log=stack.log("continental-1"),
        )
        os.kill(mover_pid(stack, "continental-1"), signal.SIGKILL)
        assert sum(by_mover("Done").values()) < len(second), "all done before the kill: the test proves nothing"
        wait_until(
            lambda: sum(by_mover("Done").values()) == len(second),
            180,
            "every second file Done after the takeover",
            log=stack.log("main-1"),
        )
    finally:
        watcher.stop()

    for name, data in (first | second).items():
        assert (remote / name).read_bytes() == data, f"{name} differs at the site"
    assert not watcher.partial, f"seen partial under the final name: {sorted(watcher.partial)}"
    assert not watcher.twice, f"written twice under the final name: {sorted(watcher.twice)}"
    assert not glob.glob(str(remote / ".*.tmp"))

    transfers = [client.transfer(t["id"]) for t in client.transfers(destination="far", limit=1000)]
    for t in transfers:
        assert [h["to_status"] for h in t["history"]].count("Done") == 1, f"transfer {t['id']} sent twice"
    taken_over = [t for t in transfers if t["mover"] == "main-1"]
    assert taken_over, "the main mover took nothing over"
    for t in taken_over:
        assert t["target"] in second and t["proxy_host"] is None
        claimed = [h for h in t["history"] if h["action"] == "claim"]
        assert "takeover from proxy host eu-west (its continental mover is silent)" in claimed[-1]["reason"]
    lines = events(stack, "UPH")
    uph = {e["FileName"]: e for e in lines}
    assert len(lines) == len(uph) == len(first) + len(second), "one UPH line per file"
    for t in transfers:
        proxied = t["mover"] == "continental-1"
        assert uph[t["target"]]["Proxied"] == ("true" if proxied else "false")
        assert uph[t["target"]]["ProxyHost"] == ("eu-west" if proxied else "-")
        assert uph[t["target"]]["TransferServer"] == t["mover"]
