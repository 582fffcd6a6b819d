"""An asyncssh SFTP server confined to one directory, with password authentication.

OpenSSH's sshd here authenticates by key only (password logins need a system account with a
password); SFTP hosts that log in with a password are tested against this server. Started as a
process by tests/servers/sftp_password.py: python -m tests.servers.sftp_server PORT ROOT USER PASSWORD HOST_KEY
"""

from __future__ import annotations

import asyncio
import hmac
import sys

import asyncssh


def main(port: int, root: str, username: str, password: str, host_key: str) -> None:
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
            sftp_factory=lambda channel: asyncssh.SFTPServer(channel, chroot=root.encode()),
        )
        await asyncio.Event().wait()

    asyncio.run(serve())


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5])
