"""Registering pds's deployments (prefect.yaml) with a Prefect server, as `pds deploy` and `pds up` do.

It creates the work pools the file names (process pools), runs `prefect deploy --all` from the
checkout, and — on the embedded stack, where `pds up` supervises its own long-lived flows (the mover,
the retriever, …) — pauses those flows' schedules, so their deployments are there to be run on
demand (from a notebook, the monitor or the Prefect UI) without starting a second copy. The periodic
flows (purge, replication) keep their schedules and the worker runs them.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import httpx
import yaml  # type: ignore[import-untyped]
from prefect.client.orchestration import PrefectClient
from prefect.client.schemas.filters import (
    DeploymentFilter,
    DeploymentFilterId,
    DeploymentFilterName,
    FlowRunFilter,
    FlowRunFilterState,
    FlowRunFilterStateType,
)
from prefect.client.schemas.objects import StateType

#: The checkout holding prefect.yaml and the flows (an editable install runs from it).
CHECKOUT = Path(__file__).resolve().parents[1]
PREFECT_FILE = CHECKOUT / "prefect.yaml"


#: prefect.yaml's deployments of long-lived flows, which `pds up` starts and restarts itself.
SUPERVISED = ("mover", "proxy-fetcher", "acquisition-scheduler", "retrieval", "subscriptions")


class DeploymentError(Exception):
    """A step of the registration failed; the message holds the command's own words."""


def work_pools(prefect_file: Path = PREFECT_FILE) -> list[str]:
    document: dict[str, Any] = yaml.safe_load(prefect_file.read_text())
    pools = {d["work_pool"]["name"] for d in document.get("deployments", []) if d.get("work_pool")}
    return sorted(pools)


def _prefect(args: list[str], env: dict[str, str], timeout: float) -> str:
    prefect = str(Path(sys.executable).with_name("prefect"))
    done = subprocess.run(  # noqa: S603 — Prefect's own command, from this environment
        [prefect, *args], env=env, cwd=CHECKOUT, capture_output=True, text=True, timeout=timeout, check=False
    )
    if done.returncode != 0:
        last = (done.stderr or done.stdout).strip().splitlines()[-5:]
        raise DeploymentError(f"prefect {' '.join(args)} failed: {' '.join(last)}")
    return done.stdout


def register(prefect_api_url: str, *, pause_schedules: bool = False, timeout: float = 300) -> list[str]:
    """Create the work pools and every deployment of prefect.yaml on the server; return the pools."""
    env = dict(os.environ) | {"PREFECT_API_URL": prefect_api_url, "PDS_CHECKOUT": str(CHECKOUT)}
    pools = work_pools()
    for pool in pools:
        _prefect(["work-pool", "create", pool, "--type", "process", "--overwrite"], env, timeout)
    _prefect(["--no-prompt", "deploy", "--all", "--prefect-file", str(PREFECT_FILE)], env, timeout)
    if pause_schedules:
        anyio.run(pause_supervised, prefect_api_url)
    return pools


async def pause_supervised(prefect_api_url: str) -> list[str]:
    """Pause the schedules of the long-lived flows' deployments; return the deployments paused.

    Prefect's scheduler may have created runs from those schedules in the moment between `prefect
    deploy` and the pause: they are deleted, or the worker would start a second mover under the name of
    the one `pds up` runs, and it would take that mover's transfers in flight for interrupted ones.
    """
    paused = []
    async with PrefectClient(prefect_api_url) as client:
        deployments = await client.read_deployments(
            deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=list(SUPERVISED)))
        )
        for deployment in deployments:
            for schedule in deployment.schedules:
                await client.update_deployment_schedule(deployment.id, schedule.id, active=False)
            paused.append(deployment.name)
        if deployments:
            scheduled = await client.read_flow_runs(
                deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[d.id for d in deployments])),
                flow_run_filter=FlowRunFilter(
                    state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.SCHEDULED]))
                ),
            )
            for run in scheduled:
                await client.delete_flow_run(run.id)
    return sorted(paused)


def main() -> int:
    """`python -m api.deployments [--pause-schedules]`: what `pds up` runs in the background."""
    pause = "--pause-schedules" in sys.argv[1:]
    try:
        pools = register(os.environ["PREFECT_API_URL"], pause_schedules=pause)
    except (KeyError, DeploymentError, subprocess.TimeoutExpired, httpx.HTTPError) as exc:
        print(f"deployments not registered: {exc}", file=sys.stderr)
        return 1
    print(f"deployments registered; work pools: {', '.join(pools)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
