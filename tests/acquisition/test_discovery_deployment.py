"""Discovery left running: the `discovery` flow served as a deployment on the real Prefect server, its
interval schedule firing pass after pass (a file added between two passes is registered by the next
one, nothing twice), and a run started now from another Python process, as a notebook does with
`run_deployment("discovery/discovery", ...)`.

Slow by nature (measured 127 s on a loaded two-core machine, most of it process start-up): the runner
starts each pass as its own `python -m prefect.engine` process, as a worker does in production, and
the test waits for two scheduled passes and one run started now."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

import httpx
import pytest
from sqlmodel import Session, select

from catalog.models import DataTransfer
from tests.acquisition.conftest import _local_source, acquisition_setup
from tests.servers._common import spawn, terminate

ROOT = Path(__file__).resolve().parents[2]


def targets(engine) -> list[str]:
    with Session(engine) as session:
        return sorted(session.exec(select(DataTransfer.target)))


def completed_runs(prefect_server, deployment_id: str) -> list[dict]:
    runs = prefect_server.flow_runs(
        flow_runs={"deployment_id": {"any_": [deployment_id]}, "state": {"type": {"any_": ["COMPLETED"]}}}
    )
    return sorted(runs, key=lambda r: r["start_time"])


def wait_for(condition, seconds: float, what: str, served: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert served.poll() is None, log.read_text()[-3000:]
        assert time.monotonic() < deadline, f"{what}: {log.read_text()[-3000:]}"
        time.sleep(0.5)


@pytest.mark.parametrize("rt", ["sqlite"], indirect=True)
def test_a_served_schedule_fires_pass_after_pass_and_a_notebook_runs_one_now(rt, prefect_server, tmp_path):
    from catalog.models import HostCreate, HostKind

    def provider(name: str):
        root = tmp_path / name
        return _local_source(HostCreate(name=name, kind=HostKind.ACQUISITION, protocol="file", address=str(root)), root)

    scheduled, on_demand = provider("provider-scheduled"), provider("provider-notebook")
    scheduled.put("a.dat", b"a")
    acquisition_setup(rt.engine, scheduled)
    acquisition_setup(rt.engine, on_demand, destination="acq-notebook")

    api = prefect_server.api_url
    env = {"PREFECT_API_URL": api, "PREFECT_RUNNER_POLL_FREQUENCY": "1"}
    # Served from its entrypoint, as a worker runs prefect.yaml's deployments: each run is a
    # `python -m prefect.engine` process that imports flows/discovery.py.
    serve = textwrap.dedent(
        """
        import asyncio

        from prefect.deployments.runner import RunnerDeployment
        from prefect.runner import Runner

        runner = Runner(name="discovery-test")
        runner.add_deployment(
            RunnerDeployment.from_entrypoint(
                "flows/discovery.py:discovery",
                name="discovery",
                interval=3,
                parameters={"host": "provider-scheduled"},
            )
        )
        asyncio.run(runner.start())
        """
    )
    import os

    log = tmp_path / "served.log"
    served = spawn([sys.executable, "-c", serve], log, dict(os.environ) | env, cwd=ROOT)
    deployment: dict = {}
    try:

        def deployed() -> bool:
            answer = httpx.get(f"{api}/deployments/name/discovery/discovery", timeout=10)
            deployment.update(answer.json() if answer.status_code == 200 else {})
            return bool(deployment)

        wait_for(deployed, 60, "the served deployment", served, log)
        assert deployment["schedules"][0]["schedule"]["interval"] == 3.0
        # Passes fire every 3 s and each is a new process: on a loaded machine one may start while the
        # first is still listing, and is skipped (the host's lease) and completes first. So wait for a
        # completed pass *and* its registration, not for the first completed run alone.
        wait_for(
            lambda: len(completed_runs(prefect_server, deployment["id"])) >= 1 and targets(rt.engine) == ["a.dat"],
            90,
            "a first pass",
            served,
            log,
        )
        first = completed_runs(prefect_server, deployment["id"])
        scheduled.put("b.dat", b"b")  # arrives between two passes
        wait_for(
            lambda: len(completed_runs(prefect_server, deployment["id"])) >= len(first) + 1
            and len(targets(rt.engine)) == 2,
            90,
            "a later pass",
            served,
            log,
        )
        assert targets(rt.engine) == ["a.dat", "b.dat"]  # each registered once, however many passes ran
        runs = completed_runs(prefect_server, deployment["id"])
        assert {r["name"] for r in runs} == {"discovery provider-scheduled"}
        assert all(r["auto_scheduled"] for r in runs)

        # The schedule is paused (its future runs are dropped), and a notebook starts a pass of another
        # host now, and waits for it.
        httpx.post(f"{api}/deployments/{deployment['id']}/pause_deployment", timeout=10).raise_for_status()
        on_demand.put("n.dat", b"n")
        notebook = textwrap.dedent(
            """
            from prefect.deployments import run_deployment
            run = run_deployment("discovery/discovery", parameters={"host": "provider-notebook"}, timeout=120)
            print(run.state.type.value, run.name)
            """
        )
        answer = subprocess.run(  # noqa: S603
            [sys.executable, "-c", notebook], env=dict(os.environ) | env, capture_output=True, text=True, timeout=180
        )
        assert answer.returncode == 0, answer.stderr[-3000:]
        assert answer.stdout.strip().splitlines()[-1].startswith("COMPLETED")
        with Session(rt.engine) as session:
            rows = session.exec(select(DataTransfer.destination_name, DataTransfer.target)).all()
        assert sorted(rows) == [("acq", "a.dat"), ("acq", "b.dat"), ("acq-notebook", "n.dat")]
    finally:
        terminate(served, grace=10)
        if deployment:  # its schedule would go on making runs nobody serves
            httpx.delete(f"{api}/deployments/{deployment['id']}", timeout=10)
