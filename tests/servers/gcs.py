"""gcp-storage-emulator as a process: a real HTTP Google Cloud Storage JSON API endpoint for gcsfs.

Every process that uses gcsfs against it needs `GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT=false` in its
environment (set by `GcsServer.start()` for the test process): otherwise gcsfs asks for the bucket's
storage layout, which the emulator does not serve, and each call waits out a 60 s timeout.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Self

import httpx

from tests.servers._common import Server, free_port, spawn, terminate, venv_bin, wait_until

GCSFS_ENV = {"GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false"}


class GcsServer(Server):
    """`gcp-storage-emulator start -H 127.0.0.1 --port PORT`, storing its data under `root_dir`.

    Attributes: `endpoint_url`, `project`; `create_bucket(name)`.
    """

    project = "pds-test"

    def __init__(self, root_dir: Path) -> None:
        self.root = Path(root_dir)
        self.host = "127.0.0.1"
        self.port = free_port()
        self.endpoint_url = f"http://{self.host}:{self.port}"
        self.log = self.root / "gcs-emulator.log"
        self.process: subprocess.Popen[bytes] | None = None
        self._http = httpx.Client(trust_env=False, timeout=10)  # no proxy for 127.0.0.1

    def start(self) -> Self:
        if self.process is not None:
            return self
        os.environ.update(GCSFS_ENV)
        binary = venv_bin("gcp-storage-emulator", "gcp-storage-emulator")
        self.root.mkdir(parents=True, exist_ok=True)
        # The emulator keeps its files in ./.cloudstorage, so the working directory is the root.
        self.process = spawn(
            [binary, "start", "-H", self.host, "--port", str(self.port), "-q"],
            self.log,
            env={**os.environ, **GCSFS_ENV},
            cwd=self.root,
        )
        try:
            ready = lambda: self._http.get(f"{self.endpoint_url}/", timeout=2).status_code == 200  # noqa: E731
            wait_until(ready, 60, "GCS emulator", log=self.log, process=self.process)
        except BaseException:
            self.stop()
            raise
        return self

    def create_bucket(self, name: str) -> None:
        response = self._http.post(
            f"{self.endpoint_url}/storage/v1/b", params={"project": self.project}, json={"name": name}
        )
        response.raise_for_status()

    def stop(self) -> None:
        terminate(self.process)
        self.process = None
