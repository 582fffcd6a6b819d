"""A pds installation for the operations tests: the API and movers as real processes (uvicorn, `python -m
flows.mover`) on one database, reporting to the session's Prefect server."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx

from api.client import PdsClient
from tests.servers._common import free_port, spawn, terminate, wait_until


class PdsProcesses:
    def __init__(self, root: Path, prefect_api_url: str, database_url: str = "") -> None:
        self.root = root
        self.api_port = free_port()
        self.api_url = f"http://127.0.0.1:{self.api_port}"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("PDS_", "PREFECT_"))} | {
            "PDS_DATA_DIR": str(root / "data"),
            "PDS_API_PORT": str(self.api_port),
            "PDS_API_URL": self.api_url,
            "PDS_MOVER_POLL_SECONDS": "0.1",
            "PDS_MOVER_HEARTBEAT_SECONDS": "1",
            "PDS_MOVER_STALE_SECONDS": "4",
            "PDS_PREFECT_UI_URL": prefect_api_url.removesuffix("/api"),
            "PREFECT_API_URL": prefect_api_url,
            "PREFECT_LOGGING_LEVEL": "WARNING",
            "PYTHONUNBUFFERED": "1",
        }
        if database_url:
            self.env["PDS_DATABASE_URL"] = database_url
        self.api: subprocess.Popen[bytes] | None = None
        self.movers: dict[str, subprocess.Popen[bytes]] = {}
        self.client = PdsClient(self.api_url, user="admin", password="admin")

    def start_api(self) -> None:
        log = self.root / "api.log"
        self.api = spawn([sys.executable, "-m", "api"], log, self.env)
        wait_until(self._healthy, 60, "the pds API", log=log, process=self.api)

    def _healthy(self) -> bool:
        try:
            return httpx.get(f"{self.api_url}/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def start_mover(self, name: str, log_name: str = "", **env: str) -> subprocess.Popen[bytes]:
        log_name = log_name or name
        process = spawn([sys.executable, "-m", "flows.mover", "--name", name], self.log(log_name), self.env | env)
        self.movers[log_name] = process
        return process

    def log(self, name: str) -> Path:
        return self.root / f"{name}.log"

    def stop(self) -> None:
        for process in self.movers.values():
            terminate(process, grace=15)
        terminate(self.api)
