"""moto's S3 server as a process: a real HTTP S3 endpoint for s3fs, boto3 and aws-cli."""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import httpx

from tests.servers._common import free_port, require, start, stop, wait_until


class S3Server:
    access_key = "testing"
    secret_key = "testing"
    region = "eu-west-1"  # s3fs bucket creation fails on moto with us-east-1

    def __init__(self) -> None:
        self.port = free_port()
        self.endpoint_url = f"http://127.0.0.1:{self.port}"
        self.log = Path(tempfile.mkdtemp(prefix="moto-")) / "moto.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> S3Server:
        binary = require(str(Path(sys.executable).with_name("moto_server")), "moto[server] (pip)")
        self.process = start([binary, "-H", "127.0.0.1", "-p", str(self.port)], self.log)
        wait_until(lambda: httpx.get(f"{self.endpoint_url}/moto-api/").status_code < 500, 60, "moto", self.log)
        return self

    def reset(self) -> None:
        httpx.post(f"{self.endpoint_url}/moto-api/reset").raise_for_status()

    def client(self):  # noqa: ANN201 — a boto3 client
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name=self.region,
        )

    def create_bucket(self, name: str) -> None:
        self.client().create_bucket(Bucket=name, CreateBucketConfiguration={"LocationConstraint": self.region})

    def stop(self) -> None:
        stop(self.process)
