"""moto's S3 server as a process: a real HTTP S3 endpoint for s3fs, boto3 and aws-cli.

A separate process (not moto's in-process mock) so that every client, including subprocesses and
aiobotocore's own HTTP stack, talks real HTTP to one shared endpoint.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any, Self

import httpx

from tests.servers._common import Server, free_port, spawn, terminate, venv_bin, wait_until


class S3Server(Server):
    """`moto_server -H 127.0.0.1 -p PORT`.

    Attributes: `endpoint_url`, `access_key`, `secret_key`, `region`; `reset()` forgets every bucket.
    """

    access_key = "testing"
    secret_key = "testing"
    region = "eu-west-1"  # s3fs bucket creation fails on moto with us-east-1

    def __init__(self, root_dir: Path | None = None) -> None:
        self._own_root = root_dir is None
        self.root = Path(tempfile.mkdtemp(prefix="pds-moto-")) if root_dir is None else Path(root_dir)
        self.host = "127.0.0.1"
        self.port = free_port()
        self.endpoint_url = f"http://{self.host}:{self.port}"
        self.log = self.root / "moto.log"
        self.process: subprocess.Popen[bytes] | None = None
        self._http = httpx.Client(trust_env=False, timeout=10)  # no proxy for 127.0.0.1

    def start(self) -> Self:
        if self.process is not None:
            return self
        binary = venv_bin("moto_server", "moto[server]")
        self.process = spawn([binary, "-H", self.host, "-p", str(self.port)], self.log)
        try:
            ready = lambda: self._http.get(f"{self.endpoint_url}/moto-api/", timeout=2).status_code == 200  # noqa: E731
            wait_until(ready, 60, "moto S3 server", log=self.log, process=self.process)
        except BaseException:
            self.stop()
            raise
        return self

    def reset(self) -> None:
        """Drop all buckets and objects (moto's state is global to the server)."""
        self._http.post(f"{self.endpoint_url}/moto-api/reset").raise_for_status()

    def client(self, connections: int = 10) -> Any:
        """A boto3 S3 client for this server, with up to `connections` connections (one per thread using it)."""
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name=self.region,
            config=Config(max_pool_connections=connections),
        )

    def create_bucket(self, name: str) -> None:
        self.client().create_bucket(Bucket=name, CreateBucketConfiguration={"LocationConstraint": self.region})

    def stop(self) -> None:
        terminate(self.process)
        self.process = None
        if self._own_root:
            shutil.rmtree(self.root, ignore_errors=True)
