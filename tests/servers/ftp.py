"""pyftpdlib as a process: plain FTP, explicit FTPS or implicit FTPS, with a self-signed certificate."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Self

from tests.servers._common import (
    Server,
    free_port,
    self_signed_certificate,
    spawn,
    tcp_ready,
    terminate,
    wait_until,
)


class FtpServer(Server):
    username = "pds"
    password = "secret"  # noqa: S105 — a test server's fixed password

    def __init__(self, root_dir: Path, mode: str = "plain") -> None:
        self.root = Path(root_dir)
        self.mode = mode
        self.host, self.port = "127.0.0.1", free_port()
        self.data_dir = self.root / "data"
        self.cert_path = self.root / "cert.pem"
        self.log = self.root / f"ftp-{mode}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Self:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        command = [
            sys.executable,
            "-m",
            "tests.servers.ftp_server",
            str(self.port),
            str(self.data_dir),
            self.username,
            self.password,
            self.mode,
        ]
        if self.mode != "plain":
            self_signed_certificate(self.cert_path, self.cert_path)
            command.append(str(self.cert_path))
        self.process = spawn(command, self.log, cwd=Path(__file__).resolve().parents[2])
        wait_until(
            lambda: tcp_ready(self.host, self.port), 20, f"FTP server ({self.mode})", log=self.log, process=self.process
        )
        return self

    def stop(self) -> None:
        terminate(self.process)
