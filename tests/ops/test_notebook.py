"""The example notebook, executed by nbclient against a real API, Prefect server and a process worker
on the `pds-movers` pool with prefect.yaml's deployments registered as `pds up` registers them: the
flow the notebook starts completes and delivers the file it pushed."""

from __future__ import annotations

from pathlib import Path

import httpx
import nbformat
from nbclient import NotebookClient

from api.deployments import register
from tests.servers._common import spawn, terminate, venv_bin

NOTEBOOK = Path(__file__).resolve().parents[2] / "infra" / "notebooks" / "quickstart.ipynb"


def run_notebook(directory: Path) -> nbformat.NotebookNode:
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": directory}}).execute()
    return notebook


def test_the_quickstart_notebook_completes_a_flow_and_runs_again(processes, prefect_server, tmp_path, monkeypatch):
    assert register(prefect_server.api_url, pause_schedules=True) == ["pds-continental", "pds-movers"]
    deployments = httpx.post(f"{prefect_server.api_url}/deployments/filter", json={}).json()
    by_name = {d["name"]: d for d in deployments}
    assert {"mover", "continental", "drain", "dispatch-now"} <= set(by_name)
    # The long-lived flows' schedules are paused (the stack runs them); purge and replication keep theirs.
    for name in ("mover", "retrieval", "acquisition-scheduler", "proxy-fetcher", "subscriptions"):
        assert by_name[name]["schedules"] and not any(s["active"] for s in by_name[name]["schedules"]), name
    for name in ("purge", "replication"):
        assert by_name[name]["schedules"] and all(s["active"] for s in by_name[name]["schedules"]), name
    worker = spawn(
        [venv_bin("prefect", "prefect"), "worker", "start", "--pool", "pds-movers"],
        tmp_path / "worker.log",
        processes.env | {"PREFECT_WORKER_QUERY_SECONDS": "1"},
    )
    try:
        site = tmp_path / "site"
        for key, value in {
            "PDS_API_URL": processes.api_url,
            "PDS_USER": "admin",
            "PDS_PASSWORD": "admin",
            "PREFECT_API_URL": prefect_server.api_url,
            "QUICKSTART_SITE_DIR": str(site),
        }.items():
            monkeypatch.setenv(key, value)
        notebook = run_notebook(tmp_path)
        # A second run, as a user who runs it again without naming a site directory: what the first run
        # made (destination, host) is reused, and the file arrives where that host writes.
        monkeypatch.delenv("QUICKSTART_SITE_DIR")
        run_notebook(tmp_path)
    finally:
        terminate(worker, grace=15)
    outputs = "\n".join(
        o.get("text", "") for cell in notebook.cells if cell.cell_type == "code" for o in cell.get("outputs", [])
    )
    assert "signed in as admin" in outputs
    assert "COMPLETED" in outputs
    first, second = sorted(processes.client.transfers(destination="notebook-site"), key=lambda t: t["id"])
    assert first["status"] == second["status"] == "Done"
    transfer = first
    assert transfer["mover"].startswith("drain-")  # delivered by the flow the notebook started
    run = httpx.get(f"{prefect_server.api_url}/flow_runs/{transfer['flow_run_id']}").json()
    assert run["name"].startswith("dispatch") and run["state_type"] == "COMPLETED"
    data_file = processes.client.data_file(transfer["data_file_id"])
    assert (data_file["stream"], data_file["data_type"], data_file["time_step"]) == ("oper", "fc", "6")
    assert (site / "2026" / "forecast.grib").stat().st_size == 4 + 256 * 1024
