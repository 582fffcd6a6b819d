"""The password-authenticated SFTP server (tests/servers/sftp_server.py) as a process; with a
`failure_rate`, an unreliable one."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path
from typing import Self

import asyncssh

from tests.servers._common import Server, free_port, spawn, terminate, wait_until


class PasswordSftpServer(Server):
    """Attributes: `host`, `port`, `username`, `password`, `known_hosts_path`, `data_dir` (what the
    client sees as `/`)."""

    username = "pds"
    password = "sftp-secret"  # noqa: S105 — a test server's fixed password

    def __init__(self, root_dir: Path, failure_rate: float = 0.0) -> None:
        self.failure_rate = failure_rate
        self.root = Path(root_dir).resolve()
        self.host, self.port = "127.0.0.1", free_port()
        self.data_dir = self.root / "data"
        self.known_hosts_path = self.root / "known_hosts"
        self.log = self.root / "sftp-password.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Self:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        host_key = self.root / "host_key"
        key = asyncssh.generate_private_key("ssh-ed25519")
        key.write_private_key(str(host_key))
        kind, blob = key.export_public_key().decode().split()[:2]
        self.known_hosts_path.write_text(f"[{self.host}]:{self.port} {kind} {blob}\n")
        command = [sys.executable, "-m", "tests.servers.sftp_server", str(self.port), str(self.data_dir)]
        command += [self.username, self.password, str(host_key), str(self.failure_rate)]
        self.process = spawn(command, self.log, cwd=Path(__file__).resolve().parents[2])
        wait_until(self._banner, 20, "asyncssh SFTP server", log=self.log, process=self.process)
        return self

    def _banner(self) -> bool:
        with socket.create_connection((self.host, self.port), timeout=1) as s:
            return s.recv(64).startswith(b"SSH-2.0")

    def stop(self) -> None:
        terminate(self.process)
        self.process = None
