"""Azurite's blob service as a process: a real HTTP Azure Blob Storage endpoint for adlfs.

Azurite comes from npm and is installed once into a cache directory (`PDS_TEST_SERVERS_CACHE`,
default `~/.cache/pds-test-servers`), reused between runs; a fresh CI machine installs it on first
start, which needs the npm registry. Version 3.35.0 is pinned because later releases need Node 21+.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Self

import httpx

from tests.servers._common import Server, free_port, require, spawn, terminate, wait_until

AZURITE_VERSION = "3.35.0"


def cache_dir() -> Path:
    base = os.environ.get("PDS_TEST_SERVERS_CACHE") or Path.home() / ".cache" / "pds-test-servers"
    return Path(base) / "azurite"


def azurite_blob_binary() -> str:
    """The `azurite-blob` script of the pinned version, installed from npm into the cache if missing."""
    prefix = cache_dir() / AZURITE_VERSION
    binary = prefix / "node_modules" / ".bin" / "azurite-blob"
    if binary.exists():
        return str(binary)
    prefix.mkdir(parents=True, exist_ok=True)
    # Parallel test workers (pytest-xdist) may all get here on a fresh machine: one installs, the others wait.
    with (prefix.parent / f"{AZURITE_VERSION}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not binary.exists():
            npm = require("npm", "Node.js with npm (Debian: nodejs npm)")
            result = subprocess.run(
                [npm, "install", "--prefix", str(prefix), "--no-audit", "--no-fund", f"azurite@{AZURITE_VERSION}"],
                capture_output=True,
                text=True,
                check=False,
            )
            if result.returncode != 0 or not binary.exists():
                raise RuntimeError(f"npm install azurite@{AZURITE_VERSION} failed:\n{result.stdout}\n{result.stderr}")
    return str(binary)


class AzuriteServer(Server):
    """`azurite-blob --blobHost 127.0.0.1 --blobPort PORT -l DIR --skipApiVersionCheck --loose`.

    Attributes: `account_name`, `account_key` (Azurite's well-known development account),
    `blob_endpoint`, `connection_string`; `create_container(name)`, `sas_token(container)`.
    """

    account_name = "devstoreaccount1"
    account_key = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="

    def __init__(self, root_dir: Path) -> None:
        self.root = Path(root_dir)
        self.host = "127.0.0.1"
        self.port = free_port()
        self.blob_endpoint = f"http://{self.host}:{self.port}/{self.account_name}"
        self.connection_string = (
            f"DefaultEndpointsProtocol=http;AccountName={self.account_name};"
            f"AccountKey={self.account_key};BlobEndpoint={self.blob_endpoint};"
        )
        self.data_dir = self.root / "data"
        self.log = self.root / "azurite.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Self:
        if self.process is not None:
            return self
        binary = azurite_blob_binary()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        command = [
            binary,
            "--blobHost",
            self.host,
            "--blobPort",
            str(self.port),
            "-l",
            str(self.data_dir),
            "--skipApiVersionCheck",
            "--loose",
            "--disableTelemetry",  # it would otherwise try to reach Application Insights
        ]
        self.process = spawn(command, self.log, cwd=self.root)

        def ready() -> bool:
            # Any HTTP answer (403 for an unsigned listing) means the service is up.
            return httpx.get(f"{self.blob_endpoint}?comp=list", timeout=2, trust_env=False).status_code < 500

        try:
            wait_until(ready, 60, "Azurite blob service", log=self.log, process=self.process)
        except BaseException:
            self.stop()
            raise
        return self

    def service(self) -> Any:
        """An azure-storage-blob `BlobServiceClient` for this server."""
        from azure.storage.blob import BlobServiceClient

        return BlobServiceClient.from_connection_string(self.connection_string)

    def create_container(self, name: str) -> None:
        self.service().create_container(name)

    def sas_token(self, container: str, hours: int = 4) -> str:
        """A container SAS (without a leading `?`) allowing read, write, delete, list, add and create."""
        from azure.storage.blob import ContainerSasPermissions, generate_container_sas

        permission = ContainerSasPermissions(read=True, write=True, delete=True, list=True, add=True, create=True)
        return generate_container_sas(
            self.account_name,
            container,
            account_key=self.account_key,
            permission=permission,
            expiry=datetime.now(UTC) + timedelta(hours=hours),
        )

    def stop(self) -> None:
        terminate(self.process)
        self.process = None
