"""Attempts through the mover, against the test OpenSSH server: a stalled connection frees its slot
within the host's timeout, a stop cuts an attempt that is moving bytes, and every attempt can be
followed (its Prefect flow run and task run, host, times, bytes and error)."""

from __future__ import annotations

import contextvars
import os
import re
import threading
import time
from datetime import UTC, datetime, timedelta
from uuid import UUID

import pytest
from litestar.testing import TestClient
from prefect.client.orchestration import get_client

from api.app import create_app
from api.cli import _attempt_line
from catalog.database import session_scope
from catalog.models import HostCreate
from catalog.operations import stop
from tests.factories import destination, push
from tests.flows.test_mover import public
from tests.ops.test_monitor import log_in
from tests.servers._common import free_port, wait_until
from tests.servers.fault_proxy import StallingProxy

TIMEOUT = 3


@pytest.fixture(autouse=True)
def sqlite_only(rt):
    if rt.settings.resolved_database_url().startswith("postgresql"):
        pytest.skip("the mover's side of attempts does not depend on the database; PostgreSQL runs in tests/catalog")


def sftp_host(sshd, name: str, address: str, **options) -> HostCreate:
    return HostCreate(
        name=name,
        protocol="sftp",
        address=address,
        login=sshd.username,
        directory=str(sshd.data_dir / name),
        options={"key_filename": str(sshd.client_key_path), **options},
    )


def once(rt, name: str, host: HostCreate, **settings) -> None:
    """A destination whose transfers fail for good after one attempt (unless the host retries)."""
    settings = {"max_starts": 1, "max_requeue": 0, "start_frequency_seconds": 0, **settings}
    destination(rt.engine, name, host=host, **settings)


def run_mover(name: str) -> threading.Thread:
    from flows.mover import mover

    context = contextvars.copy_context()  # the test's Prefect server, in the thread too
    thread = threading.Thread(
        target=context.run, args=(mover,), kwargs={"name": name, "stop_when_idle": True}, daemon=True
    )
    thread.start()
    return thread


def test_a_connection_that_stalls_mid_file_frees_its_slot_within_the_timeout(rt, sshd):
    proxy = StallingProxy(sshd.port, stall_after=2 * 1024 * 1024)
    try:
        # No known_hosts: the proxy's port is not the one the server's key is pinned for.
        once(rt, "stalling", sftp_host(sshd, "stalling", f"127.0.0.1:{proxy.port}", timeout=TIMEOUT))
        (tid,) = push(rt.engine, rt.store, "stalling", "big.bin", data=os.urandom(40 * 1024 * 1024))[1]
        started = time.monotonic()
        mover = run_mover("stall-mover")
        mover.join(120)
        assert not mover.is_alive(), "the mover is still held by the stalled connection"
        assert proxy.stalled_at is not None, "the connection never stalled: the test proves nothing"
        stalled_for = time.monotonic() - proxy.stalled_at
    finally:
        proxy.close()
    transfer = public(rt, tid)
    assert transfer.status == "Failed", transfer
    (attempt,) = transfer.attempts
    assert f"no progress for {TIMEOUT} s" in attempt.error and "while writing" in attempt.error
    assert 2 * 1024 * 1024 <= attempt.bytes_sent < 40 * 1024 * 1024 or attempt.bytes_sent == 0
    # The slot was free within the timeout and a few seconds of the stall (the mover then ended).
    assert stalled_for < TIMEOUT + 5, f"the mover ended {stalled_for:.1f} s after the stall"
    assert time.monotonic() - started < 60
    assert not (sshd.data_dir / "stalling" / "big.bin").exists()
    print(f"\nslot free {stalled_for:.2f} s after the stall (timeout {TIMEOUT} s)")


def test_a_server_that_accepts_and_never_answers_holds_an_attempt_for_the_timeout_only(rt, sshd):
    proxy = StallingProxy(sshd.port)
    proxy.stall()  # every connection silent from the first byte
    try:
        once(rt, "silent", sftp_host(sshd, "silent", f"127.0.0.1:{proxy.port}", timeout=TIMEOUT))
        (tid,) = push(rt.engine, rt.store, "silent", "f.bin", data=b"x" * 1000)[1]
        mover = run_mover("silent-mover")
        mover.join(60)
        assert not mover.is_alive()
    finally:
        proxy.close()
    (attempt,) = public(rt, tid).attempts
    assert "while connecting" in attempt.error
    held = attempt.ended_at - attempt.started_at
    assert held < timedelta(seconds=TIMEOUT + 3), f"one attempt held its slot {held}"
    print(f"\nan attempt on a silent server held its slot {held.total_seconds():.2f} s (timeout {TIMEOUT} s)")


def test_a_stop_cuts_an_attempt_that_is_moving_bytes(rt, sshd):
    remote = sshd.data_dir / "stopped-site"
    # 200 MiB at 10 MB/s: about 20 s on the wire, so the stop lands mid-file.
    once(
        rt,
        "stopped-site",
        sftp_host(
            sshd,
            "stopped-site",
            f"{sshd.host}:{sshd.port}",
            known_hosts=str(sshd.known_hosts_path),
            max_rate=10_000_000,
        ),
    )
    (tid,) = push(rt.engine, rt.store, "stopped-site", "large.bin", data=os.urandom(200 * 1024 * 1024))[1]
    temporary = remote / f".large.bin.pds-{tid}.tmp"
    mover = run_mover("stop-mover")
    wait_until(lambda: temporary.exists() and temporary.stat().st_size > 1024 * 1024, 60, "bytes at the site")
    with session_scope(rt.engine) as session:
        stop(session, tid, by="alice")
    stopped_at = time.monotonic()
    wait_until(lambda: not temporary.exists(), 5, "the temporary file to go")
    removed_after = time.monotonic() - stopped_at
    # Nothing writes any more: no temporary file comes back, nothing under the final name.
    time.sleep(2)
    assert not temporary.exists() and not (remote / "large.bin").exists()
    mover.join(30)
    assert not mover.is_alive()
    transfer = public(rt, tid)
    assert transfer.status == "Stopped"
    assert [(h.to_status, h.by) for h in transfer.history][-1] == ("Stopped", "alice")
    (attempt,) = transfer.attempts
    assert attempt.outcome == "Stopped" and attempt.error == "stopped by alice"
    assert list(remote.iterdir()) == []
    print(f"\ntemporary file removed {removed_after:.2f} s after the stop")


def test_each_failing_attempt_is_its_own_task_run_in_a_linked_flow_run(rt, sshd):
    # Nothing listens on the port: each attempt fails at once; the destination allows three starts.
    refused = sftp_host(sshd, "refusing", f"127.0.0.1:{free_port()}")
    once(rt, "refusing", refused, max_starts=3)
    (tid,) = push(rt.engine, rt.store, "refusing", "f.bin", data=b"x" * 1000)[1]
    run_mover("refused-mover").join(120)
    transfer = public(rt, tid)
    assert transfer.status == "Failed", transfer
    attempts = transfer.attempts
    assert [a.number for a in attempts] == [1, 2, 3]
    tasks = {a.task_run_id for a in attempts}
    assert None not in tasks and len(tasks) == 3, "each attempt names the task run that ran it"
    with get_client(sync_client=True) as prefect:
        for a in attempts:  # the task run exists in Prefect, within the dispatch flow run the attempt names
            assert a.flow_run_id is not None
            assert str(prefect.read_task_run(UUID(a.task_run_id)).flow_run_id) == a.flow_run_id
            assert prefect.read_flow_run(UUID(a.flow_run_id)).name.startswith("dispatch refused-mover")
    for a in attempts:
        assert a.host == "refusing" and a.mover == "refused-mover" and a.ended_at >= a.started_at
        assert "cannot reach host refusing" in a.error
    assert [a.outcome for a in attempts] == ["Requeued", "Requeued", "Failed"]
    # What a user reads: the monitor's transfer page and `pds status --transfer` link each attempt to its
    # runs in the Prefect UI.
    ui = rt.settings.resolved_prefect_ui_url()
    with TestClient(create_app(rt.settings, engine=rt.engine, store=rt.store)) as client:
        page = client.get(f"/monitor/transfers/{tid}", auth=("admin", "admin"))
        if "login" in str(page.url):
            log_in(client)
            page = client.get(f"/monitor/transfers/{tid}")
        table = re.search(r'<table id="attempts">(.*?)</table>', page.text, re.S).group(1)
        for a in attempts:
            assert f'href="{ui}/runs/flow-run/{a.flow_run_id}"' in table
            assert f'href="{ui}/runs/task-run/{a.task_run_id}"' in table
        shown = client.get(f"/transfers/{tid}", auth=("admin", "admin")).json()
    lines = [_attempt_line(a) for a in shown["attempts"]]
    assert lines[0].startswith("  attempt 1 by refused-mover to refusing: ") and "Requeued" in lines[0]
    assert f"task {ui}/runs/task-run/{attempts[2].task_run_id}" in lines[2]


def test_bad_credentials_stop_the_transfer_after_one_attempt(rt, sshd, tmp_path):
    other_key = tmp_path / "other_key"
    os.system(f"ssh-keygen -q -t ed25519 -N '' -f {other_key}")  # noqa: S605 — a fixed command
    host = sftp_host(sshd, "wrong-key", f"{sshd.host}:{sshd.port}", known_hosts=str(sshd.known_hosts_path))
    host.options["key_filename"] = str(other_key)
    destination(rt.engine, "wrong-key", host=host, start_frequency_seconds=0)
    (tid,) = push(rt.engine, rt.store, "wrong-key", "f.bin", data=b"x" * 1000)[1]
    run_mover("credentials-mover").join(60)
    transfer = public(rt, tid)
    assert transfer.status == "Stopped"
    (attempt,) = transfer.attempts
    assert attempt.outcome == "Stopped" and "Permission denied for user" in attempt.error
    assert attempt.flow_run_id is not None and attempt.ended_at is not None
    assert datetime.now(UTC) - attempt.started_at < timedelta(minutes=5)
