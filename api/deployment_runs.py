"""The monitor's view of prefect.yaml's deployments on the Prefect server: what is deployed, how it is
scheduled, how its last run went, and starting a run now.

The API reaches Prefect at `PREFECT_API_URL` (set by `pds up`, compose and Kubernetes). Without it
there is nothing to show: Prefect's client would otherwise start a throw-away server of its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

import httpx
from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.client.schemas.filters import (
    DeploymentFilter,
    DeploymentFilterId,
    FlowRunFilter,
    FlowRunFilterDeploymentId,
)
from prefect.client.schemas.sorting import FlowRunSort
from prefect.settings import PREFECT_API_URL

from catalog.errors import InvalidInput, NotFound


class PrefectUnavailable(Exception):
    """No Prefect server is configured, or it did not answer; the message says which."""


@dataclass(frozen=True)
class DeploymentRow:
    id: UUID
    name: str
    """`flow/deployment`, as `prefect deployment run` and `run_deployment` name it."""
    description: str
    work_pool: str
    schedules: list[tuple[str, bool]]
    """Each schedule as text (`every 300 s`, a cron line) and whether it is active."""
    last_state: str
    last_start: datetime | None
    last_run_id: UUID | None


def _client() -> SyncPrefectClient:
    """A client of the configured server (its URL, key and auth from Prefect's own settings)."""
    if not PREFECT_API_URL.value():
        raise PrefectUnavailable("no Prefect server is configured for the API (set PREFECT_API_URL)")
    return get_client(sync_client=True)


def _describe(schedule: object) -> str:
    interval = getattr(schedule, "interval", None)
    if interval is not None:
        return f"every {int(interval.total_seconds())} s"
    for field in ("cron", "rrule"):
        value = getattr(schedule, field, None)
        if value:
            return str(value)
    return type(schedule).__name__


def list_deployments() -> list[DeploymentRow]:
    """Every deployment, by name, with its schedules and its latest flow run."""
    try:
        with _client() as client:
            deployments = client.read_deployments()
            flows = {f.id: f.name for f in client.read_flows()}
            rows = []
            for d in sorted(deployments, key=lambda d: (flows.get(d.flow_id, ""), d.name)):
                runs = client.read_flow_runs(
                    flow_run_filter=FlowRunFilter(deployment_id=FlowRunFilterDeploymentId(any_=[d.id])),
                    sort=FlowRunSort.EXPECTED_START_TIME_DESC,
                    limit=1,
                )
                last = runs[0] if runs else None
                rows.append(
                    DeploymentRow(
                        id=d.id,
                        name=f"{flows.get(d.flow_id, '?')}/{d.name}",
                        description=(d.description or "").strip(),
                        work_pool=d.work_pool_name or "-",
                        schedules=[(_describe(s.schedule), s.active) for s in d.schedules],
                        last_state=(last.state_name or "-") if last else "never run",
                        last_start=(last.start_time or last.expected_start_time) if last else None,
                        last_run_id=last.id if last else None,
                    )
                )
            return rows
    except httpx.HTTPError as exc:
        raise PrefectUnavailable(f"the Prefect server did not answer: {exc}") from exc


def start_run(deployment_id: str) -> tuple[str, UUID]:
    """Create a flow run of the deployment now, with its default parameters; (its name, the run id).

    A worker of the deployment's work pool picks it up, as for a scheduled run.
    """
    try:
        wanted = UUID(deployment_id)
    except ValueError:
        raise InvalidInput(f"{deployment_id!r} is not a deployment id") from None
    try:
        with _client() as client:
            found = client.read_deployments(deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[wanted])))
            if not found:
                raise NotFound(f"no deployment {deployment_id} on the Prefect server")
            deployment = found[0]
            flow = client.read_flow(deployment.flow_id)
            run = client.create_flow_run_from_deployment(deployment.id, tags=["pds-monitor"])
            return f"{flow.name}/{deployment.name}", run.id
    except httpx.HTTPError as exc:
        raise PrefectUnavailable(f"the Prefect server did not answer: {exc}") from exc
