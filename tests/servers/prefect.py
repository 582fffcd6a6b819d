"""A real Prefect server (SQLite) for the flow-level tests, as a process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx

from tests.servers._common import free_port, start, stop, wait_until


class PrefectServer:
    def __init__(self, root_dir: Path) -> None:
        self.root = Path(root_dir)
        self.port = free_port()
        self.api_url = f"http://127.0.0.1:{self.port}/api"
        self.process: subprocess.Popen[bytes] | None = None

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.pop("PREFECT_API_URL", None)
        return env | {
            "PREFECT_HOME": str(self.root / "prefect"),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_UI_ENABLED": "false",
            "PREFECT_API_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{self.root / 'prefect.db'}",
            "PREFECT_LOGGING_LEVEL": "WARNING",
        }

    def start(self) -> PrefectServer:
        log = self.root / "prefect.log"
        command = [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(self.port)]
        self.process = start(command, log, self.env())
        wait_until(lambda: httpx.get(f"{self.api_url}/health").status_code == 200, 180, "Prefect server", log)
        return self

    def flow_runs(self, **filters: object) -> list[dict]:
        return httpx.post(f"{self.api_url}/flow_runs/filter", json=filters).raise_for_status().json()

    def task_runs(self, **filters: object) -> list[dict]:
        return httpx.post(f"{self.api_url}/task_runs/filter", json=filters).raise_for_status().json()

    def stop(self) -> None:
        stop(self.process, grace=10)
