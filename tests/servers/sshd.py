"""Debian's OpenSSH server on a high port, key authentication, internal-sftp."""

from __future__ import annotations

import getpass
import os
import socket
import subprocess
from pathlib import Path

from tests.servers._common import free_port, require, start, stop, wait_until


class SshServer:
    def __init__(self, root_dir: Path) -> None:
        self.root = Path(root_dir)
        self.host, self.port = "127.0.0.1", free_port()
        self.username = getpass.getuser()
        self.client_key_path = self.root / "client_key"
        self.known_hosts_path = self.root / "known_hosts"
        self.data_dir = self.root / "data"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> SshServer:
        sshd = require("/usr/sbin/sshd", "openssh-server")
        keygen = require("ssh-keygen", "openssh-client")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        host_key, config, log = self.root / "host_key", self.root / "sshd_config", self.root / "sshd.log"
        for key in (host_key, self.client_key_path):
            if not key.exists():
                subprocess.run([keygen, "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
        (self.root / "authorized_keys").write_text(Path(f"{self.client_key_path}.pub").read_text())
        public_host_key = Path(f"{host_key}.pub").read_text().split()
        self.known_hosts_path.write_text(f"[{self.host}]:{self.port} {public_host_key[0]} {public_host_key[1]}\n")
        lines = [
            f"Port {self.port}",
            f"ListenAddress {self.host}",
            f"HostKey {host_key}",
            f"AuthorizedKeysFile {self.root / 'authorized_keys'}",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "StrictModes no",
            "UsePAM no",
            f"PidFile {self.root / 'sshd.pid'}",
            "Subsystem sftp internal-sftp",
            "MaxSessions 50",
            "MaxStartups 50",
        ]
        if os.geteuid() == 0:
            lines.append("PermitRootLogin prohibit-password")
            Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        config.write_text("\n".join(lines) + "\n")
        self.process = start([sshd, "-D", "-e", "-f", str(config)], log)
        wait_until(self._banner, 20, "sshd", log)
        return self

    def _banner(self) -> bool:
        with socket.create_connection((self.host, self.port), timeout=1) as s:
            return s.recv(64).startswith(b"SSH-2.0")

    def stop(self) -> None:
        stop(self.process)

    def __enter__(self) -> SshServer:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()
