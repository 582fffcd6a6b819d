"""A real Prefect server (on SQLite) as a process, for the flow-level tests.

Prefect's ephemeral in-process server would hide the client/server split the deployment relies on
(state reporting over HTTP, task runs recorded from events), so the tests talk to a real one.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any, Self

import httpx

from tests.servers._common import Server, free_port, spawn, terminate, venv_bin, wait_until


class PrefectServer(Server):
    """`prefect server start --host 127.0.0.1 --port PORT`, its home and database inside `root_dir`.

    Attributes: `host`, `port`, `api_url` (`http://127.0.0.1:PORT/api`), `log`.
    """

    def __init__(self, root_dir: Path) -> None:
        self.root = Path(root_dir).resolve()
        self.host = "127.0.0.1"
        self.port = free_port()
        self.api_url = f"http://{self.host}:{self.port}/api"
        self.log = self.root / "prefect-server.log"
        self.process: subprocess.Popen[bytes] | None = None
        self._http = httpx.Client(trust_env=False, timeout=30)  # no proxy for 127.0.0.1

    def env(self) -> dict[str, str]:
        """The server's environment: the caller's, minus any Prefect client settings that would leak in."""
        env = {k: v for k, v in os.environ.items() if k not in ("PREFECT_API_URL", "PREFECT_API_KEY")}
        return env | {
            "PREFECT_HOME": str(self.root / "prefect"),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_UI_ENABLED": "false",
            "PREFECT_API_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{self.root / 'prefect.db'}",
            "PREFECT_LOGGING_LEVEL": "WARNING",
            "PREFECT_SERVER_LOGGING_LEVEL": "WARNING",
        }

    def start(self) -> Self:
        if self.process is not None:
            return self
        prefect = venv_bin("prefect", "prefect")
        self.root.mkdir(parents=True, exist_ok=True)
        command = [prefect, "server", "start", "--host", self.host, "--port", str(self.port)]
        self.process = spawn(command, self.log, self.env(), cwd=self.root)
        try:
            ready = lambda: self._http.get(f"{self.api_url}/health", timeout=5).status_code == 200  # noqa: E731
            wait_until(ready, 120, "Prefect server", log=self.log, process=self.process, interval=0.5)
        except BaseException:
            self.stop()
            raise
        return self

    def flow_runs(self, **filters: Any) -> list[dict[str, Any]]:
        """`POST /flow_runs/filter` with `filters` as the body, e.g. `flow_runs={"id": {"any_": [id]}}`."""
        runs: list[dict[str, Any]] = (
            self._http.post(f"{self.api_url}/flow_runs/filter", json=filters).raise_for_status().json()
        )
        return runs

    def task_runs(self, **filters: Any) -> list[dict[str, Any]]:
        """`POST /task_runs/filter`; task runs appear shortly after their flow run finishes (events)."""
        runs: list[dict[str, Any]] = (
            self._http.post(f"{self.api_url}/task_runs/filter", json=filters).raise_for_status().json()
        )
        return runs

    def stop(self) -> None:
        terminate(self.process, grace=10)
        self.process = None
