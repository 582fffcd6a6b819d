"""Debian's OpenSSH server on a free port with key authentication and internal-sftp.

A real sshd (not an in-Python stand-in) so SFTP hosts are tested against the server they will meet in
production. It logs in as the current user only: as root that needs `PermitRootLogin`, as a normal
user sshd runs without privilege separation and can only authenticate its own user.
"""

from __future__ import annotations

import getpass
import os
import pwd
import socket
import subprocess
from pathlib import Path
from typing import Self

from tests.servers._common import IS_ROOT, Server, free_port, log_tail, require, spawn, terminate, wait_until


def current_user() -> str:
    """The login name sshd will check: from the password database, not $USER (which may be stale)."""
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:  # a uid without a passwd entry (some CI containers): sshd cannot log it in anyway
        return getpass.getuser()


class SshServer(Server):
    """`sshd -D -e -f <root_dir>/sshd_config` listening on 127.0.0.1:`port`.

    Attributes: `host`, `port`, `username`, `client_key_path` (private key, no passphrase),
    `known_hosts_path` (pins the host key for `[127.0.0.1]:port`), `data_dir` (absolute, writable).
    """

    def __init__(self, root_dir: Path) -> None:
        self.root = Path(root_dir).resolve()
        self.host = "127.0.0.1"
        self.port = free_port()
        self.username = current_user()
        self.client_key_path = self.root / "client_key"
        self.passphrase_key_path = self.root / "passphrase_key"
        self.passphrase = "correct horse battery staple"
        self.known_hosts_path = self.root / "known_hosts"
        self.data_dir = self.root / "data"
        self.log = self.root / "sshd.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Self:
        if self.process is not None:
            return self
        sshd = require("/usr/sbin/sshd", "the Debian package openssh-server")
        keygen = require("ssh-keygen", "the Debian package openssh-client")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        host_key, config = self.root / "host_key", self.root / "sshd_config"
        for key in (host_key, self.client_key_path):
            if not key.exists():
                subprocess.run([keygen, "-q", "-t", "ed25519", "-N", "", "-C", "pds-tests", "-f", str(key)], check=True)
        # A second client key, protected by a passphrase, for hosts configured with one.
        if not self.passphrase_key_path.exists():
            subprocess.run(
                [keygen, "-q", "-t", "ed25519", "-N", self.passphrase, "-f", str(self.passphrase_key_path)],
                check=True,
            )
        (self.root / "authorized_keys").write_text(
            Path(f"{self.client_key_path}.pub").read_text() + Path(f"{self.passphrase_key_path}.pub").read_text()
        )
        kind, blob = Path(f"{host_key}.pub").read_text().split()[:2]
        self.known_hosts_path.write_text(f"[{self.host}]:{self.port} {kind} {blob}\n")
        lines = [
            f"Port {self.port}",
            f"ListenAddress {self.host}",
            f"HostKey {host_key}",
            f"AuthorizedKeysFile {self.root / 'authorized_keys'}",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "StrictModes no",  # pytest's temp dirs and CI checkouts are not what sshd calls safe
            "UsePAM no",  # PAM needs root; also keeps the system's login policy out of the tests
            f"PidFile {self.root / 'sshd.pid'}",
            "Subsystem sftp internal-sftp",
            "MaxSessions 100",
            "MaxStartups 100",  # parallel transfers open many connections at once
        ]
        if IS_ROOT:
            lines.append("PermitRootLogin prohibit-password")
            # sshd running as root refuses to start without its privilege separation directory.
            Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        config.write_text("\n".join(lines) + "\n")
        self.process = spawn([sshd, "-D", "-e", "-f", str(config)], self.log)
        try:
            wait_until(self._banner, 30, "sshd", log=self.log, process=self.process)
            self._check_login(require("sftp", "the Debian package openssh-client"))
        except BaseException:
            self.stop()
            raise
        return self

    def _banner(self) -> bool:
        with socket.create_connection((self.host, self.port), timeout=1) as s:
            return s.recv(64).startswith(b"SSH-2.0")

    def _check_login(self, sftp: str) -> None:
        """Log in once over SFTP, so a refused login (e.g. a locked account) fails here, with sshd's log."""
        command = [
            sftp, "-b", "-", "-F", "/dev/null", "-i", str(self.client_key_path), "-P", str(self.port),
            "-o", "IdentitiesOnly=yes", "-o", f"UserKnownHostsFile={self.known_hosts_path}",
            "-o", "StrictHostKeyChecking=yes", f"{self.username}@{self.host}",
        ]  # fmt: skip
        result = subprocess.run(command, input=f"ls {self.data_dir}\n", capture_output=True, text=True, timeout=30)
        if result.returncode != 0:
            raise RuntimeError(
                f"sshd is up but an SFTP login as {self.username} failed:\n{result.stderr}\n"
                f"--- {self.log} ---\n{log_tail(self.log)}"
            )

    def stop(self) -> None:
        terminate(self.process)
        self.process = None
