"""An asyncssh SFTP server confined to one directory, with password authentication.

OpenSSH's sshd here authenticates by key only (password logins need a system account with a
password); SFTP hosts that log in with a password are tested against this server. Started as a
process by tests/servers/sftp_password.py:
python -m tests.servers.sftp_server PORT ROOT USER PASSWORD HOST_KEY [FAILURE_RATE]

With FAILURE_RATE (0…1) it is an unreliable server: that share of the operations that change or read
files (open, write, close, stat, rename, remove, mkdir) fail at random with an SFTP failure, before
they do anything — like a site with a flaky disk or an overloaded server.
"""

from __future__ import annotations

import asyncio
import hmac
import random
import sys
from typing import Any

import asyncssh

_FLAKY = ("open", "write", "close", "stat", "lstat", "fstat", "rename", "posix_rename", "remove", "mkdir")


def unreliable(failure_rate: float) -> type[asyncssh.SFTPServer]:
    """An SFTPServer whose file operations fail at random, `failure_rate` of the time."""

    def flaky(name: str) -> Any:
        operation = getattr(asyncssh.SFTPServer, name)

        def maybe_fail(self: asyncssh.SFTPServer, *args: Any, **kwargs: Any) -> Any:
            if random.random() < failure_rate:  # noqa: S311 — test chaos, not cryptography
                raise asyncssh.SFTPFailure(f"injected failure of {name}")
            return operation(self, *args, **kwargs)

        return maybe_fail

    return type("UnreliableSFTPServer", (asyncssh.SFTPServer,), {name: flaky(name) for name in _FLAKY})


def main(port: int, root: str, username: str, password: str, host_key: str, failure_rate: float = 0.0) -> None:
    server_class = unreliable(failure_rate) if failure_rate else asyncssh.SFTPServer

    class PasswordOnly(asyncssh.SSHServer):
        def begin_auth(self, user: str) -> bool:
            return True  # authentication is always required

        def password_auth_supported(self) -> bool:
            return True

        def validate_password(self, user: str, offered: str) -> bool:
            return user == username and hmac.compare_digest(offered, password)

    async def serve() -> None:
        await asyncssh.create_server(
            PasswordOnly,
            "127.0.0.1",
            port,
            server_host_keys=[host_key],
            sftp_factory=lambda channel: server_class(channel, chroot=root.encode()),
        )
        await asyncio.Event().wait()

    asyncio.run(serve())


if __name__ == "__main__":
    rate = float(sys.argv[6]) if len(sys.argv) > 6 else 0.0
    main(int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5], rate)
