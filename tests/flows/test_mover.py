"""The mover flow against a real Prefect server: dispatches are subflow runs with task runs per file
or per batch, failures are requeued with their reason, and a restart recovers interrupted transfers."""

from __future__ import annotations

import hashlib
import os

from catalog.database import session_scope
from catalog.models import HostCreate
from catalog.transfers import claim, claim_ids, transfer_public
from tests.factories import destination, local_host, push
from tests.servers._common import free_port


def run_mover(name="test-mover"):
    from flows.mover import mover

    return mover(name=name, stop_when_idle=True)


def public(rt, transfer_id):
    with session_scope(rt.engine) as session:
        return transfer_public(session, transfer_id)


def test_small_files_go_in_one_batch_task_and_large_files_alone(rt, prefect_server, tmp_path):
    remote = tmp_path / "remote"
    destination(rt.engine, "site1", host=local_host("h1", str(remote)), max_parallel_transfers=10)
    small = [push(rt.engine, rt.store, "site1", f"small/{i}.bin")[1][0] for i in range(5)]
    big_data = os.urandom(40 * 1024 * 1024)
    (big,) = push(rt.engine, rt.store, "site1", "big.bin", data=big_data)[1]
    counts = run_mover()
    assert counts["transfers"] == 6
    for tid in [*small, big]:
        assert public(rt, tid).status == "Done"
    assert hashlib.md5((remote / "big.bin").read_bytes()).hexdigest() == hashlib.md5(big_data).hexdigest()
    runs = {public(rt, tid).flow_run_id for tid in [*small, big]}
    task_names = []
    for run_id in runs:
        (flow_run,) = prefect_server.flow_runs(flow_runs={"id": {"any_": [run_id]}})
        assert flow_run["state_type"] == "COMPLETED" and flow_run["name"].startswith("dispatch")
        task_names += [t["name"] for t in prefect_server.task_runs(flow_runs={"id": {"any_": [run_id]}})]
    assert sum(n.startswith("send h1 batch of 5") for n in task_names) == 1
    assert sum(n.startswith("send /") and n.endswith("big.bin") for n in task_names) == 1


def test_a_failing_host_requeues_the_transfer_and_fails_the_dispatch_run(rt, prefect_server):
    unreachable = HostCreate(name="down", protocol="sftp", address=f"127.0.0.1:{free_port()}", directory="in")
    destination(rt.engine, "down-site", host=unreachable, start_frequency_seconds=3600)
    (tid,) = push(rt.engine, rt.store, "down-site", "x.bin")[1]
    run_mover()
    transfer = public(rt, tid)
    assert transfer.status == "Requeued"
    assert "cannot reach host down" in transfer.error
    (flow_run,) = prefect_server.flow_runs(flow_runs={"id": {"any_": [transfer.flow_run_id]}})
    assert flow_run["state_type"] == "FAILED"


def test_a_restarted_mover_recovers_its_interrupted_transfers(rt, tmp_path):
    destination(rt.engine, "site2", host=local_host("h2", str(tmp_path / "r2")))
    (tid,) = push(rt.engine, rt.store, "site2", "x.bin")[1]
    with session_scope(rt.engine) as session:
        assert [t.id for t in claim(session, "crashed-mover", 10)] == [tid]  # then the process "dies"
    counts = run_mover("crashed-mover")
    assert counts["recovered"] == 1
    transfer = public(rt, tid)
    assert [h.to_status for h in transfer.history] == [
        "Arriving",
        "Queued",
        "Transferring",
        "Interrupted",
        "Queued",
        "Transferring",
        "Done",
    ]


def test_a_restarted_mover_ends_the_dispatch_runs_its_dead_run_left_running(rt, prefect_server):
    """A dispatch that waited for work when its mover was killed names no transfer: the mover's next
    run ends it in Prefect all the same, and leaves other movers' runs alone."""
    from prefect.client.orchestration import get_client
    from prefect.states import Running

    from flows.dispatch import dispatch

    with get_client(sync_client=True) as client:
        left = {
            mover: client.create_flow_run(dispatch, parameters={"transfer_ids": [1], "mover": mover}, state=Running())
            for mover in ("killed-mover", "other-mover")
        }
    run_mover("killed-mover")
    with get_client(sync_client=True) as client:
        state = {mover: client.read_flow_run(run.id).state for mover, run in left.items()}
    assert state["killed-mover"].type.value == "CRASHED"
    assert "killed-mover took over" in state["killed-mover"].message
    assert state["other-mover"].type.value == "RUNNING"


def test_a_claim_whose_dispatch_cannot_start_waits_for_the_next_and_is_given_back_when_the_mover_stops(rt, tmp_path):
    """The Prefect API cannot be reached as a dispatch starts (its server, or the message broker behind
    it, is down): the claim stays queued for the next dispatch the mover starts, and when the mover
    stops with it still unsent it is queued again at once instead of held as Transferring (and its
    destination's places with it) until the mover's next start; then it is sent."""
    from concurrent.futures import ThreadPoolExecutor

    from prefect.settings import (
        PREFECT_API_URL,
        PREFECT_CLIENT_MAX_RETRIES,
        PREFECT_LOGGING_TO_API_ENABLED,
        temporary_settings,
    )

    from flows.mover import _Dispatches

    remote = tmp_path / "r3"
    destination(rt.engine, "site3", host=local_host("h3", str(remote)), max_parallel_transfers=1)
    (tid,) = push(rt.engine, rt.store, "site3", "x.bin")[1]
    with session_scope(rt.engine) as session:
        claimed = claim_ids(session, "api-down-mover", 10)
    assert claimed == [tid]
    unreachable = f"http://127.0.0.1:{free_port()}/api"
    down = {PREFECT_API_URL: unreachable, PREFECT_CLIENT_MAX_RETRIES: 0, PREFECT_LOGGING_TO_API_ENABLED: False}
    with temporary_settings(updates=down):
        with ThreadPoolExecutor(1) as pool:
            dispatches = _Dispatches(pool, "api-down-mover", parallel=1)
            assert dispatches.hand_over(claimed) == 1
            (first,) = dispatches.in_flight
            assert first.exception(timeout=120) is not None  # its flow run could not be created
            assert not dispatches.can_take()  # no more claims while this one waits
            assert dispatches.start_if_needed() == 1  # the claim waits for the next dispatch
            assert public(rt, tid).status == "Transferring"
            dispatches.close()
        dispatches.settle()
    transfer = public(rt, tid)
    assert transfer.status == "Queued", [(h.to_status, h.reason) for h in transfer.history]
    interrupted = next(h for h in transfer.history if h.to_status == "Interrupted")
    assert interrupted.reason == "its mover stopped before sending it"
    assert not remote.exists() or not any(remote.iterdir()), "nothing was sent by the dispatches that failed"

    run_mover("api-down-mover")
    assert public(rt, tid).status == "Done"
    assert (remote / "x.bin").exists()


def test_a_compressing_destination_receives_the_compressed_file_and_its_md5(rt, tmp_path):
    import gzip

    remote = tmp_path / "gz"
    destination(rt.engine, "gz-site", host=local_host("hgz", str(remote)), compression="gzip")
    data = b"temperature 273.15\n" * 50_000
    (squeezed,) = push(rt.engine, rt.store, "gz-site", "obs.txt", data=data)[1]
    (random_file,) = push(rt.engine, rt.store, "gz-site", "noise.bin", data=os.urandom(50_000))[1]
    run_mover()
    transfer = public(rt, squeezed)
    sent = (remote / "obs.txt.gz").read_bytes()
    assert gzip.decompress(sent) == data
    assert (transfer.status, transfer.compression, transfer.bytes_sent) == ("Done", "gzip", len(sent))
    assert transfer.sent_md5 == hashlib.md5(sent).hexdigest()
    transfer = public(rt, random_file)
    assert transfer.compression is None and (remote / "noise.bin").exists()
    assert not (remote / "noise.bin.gz").exists()


def test_a_file_delivered_just_before_the_crash_is_not_sent_again(rt, tmp_path):
    remote = tmp_path / "r3"
    destination(rt.engine, "site3", host=local_host("h3", str(remote)))
    data = os.urandom(10_000)
    (tid,) = push(rt.engine, rt.store, "site3", "x.bin", data=data)[1]
    with session_scope(rt.engine) as session:
        claim(session, "crashed-mover", 10)
    remote.mkdir()
    (remote / "x.bin").write_bytes(data)  # renamed into place, then the mover died before recording Done
    inode = (remote / "x.bin").stat().st_ino
    run_mover("crashed-mover")
    transfer = public(rt, tid)
    assert transfer.status == "Done" and "already at the site" in transfer.history[-1].reason
    assert (remote / "x.bin").stat().st_ino == inode  # not written a second time


def test_a_different_file_left_at_the_site_is_replaced_after_a_crash(rt, tmp_path):
    remote = tmp_path / "r4"
    destination(rt.engine, "site4", host=local_host("h4", str(remote)))
    data = os.urandom(10_000)
    (tid,) = push(rt.engine, rt.store, "site4", "x.bin", data=data)[1]
    remote.mkdir()
    (remote / "x.bin").write_bytes(os.urandom(5_000))  # yesterday's product, another size
    with session_scope(rt.engine) as session:
        claim(session, "crashed-mover", 10)
    run_mover("crashed-mover")
    assert public(rt, tid).status == "Done"
    assert (remote / "x.bin").read_bytes() == data
