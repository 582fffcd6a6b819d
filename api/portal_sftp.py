"""The Data Portal over SFTP (and SCP): an asyncssh server whose file system is the portal's tree.

Data users log in with their password or an SSH public key of theirs. Every SFTP operation maps onto
`catalog.portal.Portal`, so permissions, quotas, uploads (pushes) and downloads are those of every
other protocol; nothing here touches the local file system. Paths are resolved inside the virtual
tree (`..` never rises above `/`), and links are refused.

Uploads must be written front to back (what sftp, scp and rclone do); a write at an earlier offset
fails, and writes that arrive ahead of their turn wait in a small buffer. Opening a file registered
without retrieval asks for it and waits up to `fetch_wait_seconds` for its content, then fails with
"try again later". Run it with
`python -m api.portal_sftp` (what `pds up` does) on `PDS_PORTAL_SFTP_PORT`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, TypeVar

import asyncssh
import sqlalchemy as sa
from asyncssh import SFTPAttrs, SFTPName

from catalog.data_users import public_keys
from catalog.database import read_scope
from catalog.errors import AccessDenied, Conflict, InvalidInput, NotFound, NotYetAvailable, PdsError, QuotaExceeded
from catalog.portal import Download, Entry, Portal, PortalUser, Upload, parse_path
from catalog.users import authenticate_password

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: Writes that may arrive ahead of their offset before the upload fails.
MAX_PENDING_WRITES = 64


def sftp_error(exc: PdsError) -> asyncssh.SFTPError:
    """The SFTP status a portal error maps to."""
    if isinstance(exc, NotFound):
        return asyncssh.SFTPNoSuchFile(str(exc))
    if isinstance(exc, AccessDenied):
        return asyncssh.SFTPPermissionDenied(str(exc))
    if isinstance(exc, Conflict) and "exists" in str(exc):
        return asyncssh.SFTPFileAlreadyExists(str(exc))
    if isinstance(exc, QuotaExceeded):
        return asyncssh.SFTPFailure(f"quota exceeded: {exc}")
    if isinstance(exc, InvalidInput | Conflict):
        return asyncssh.SFTPFailure(str(exc))
    return asyncssh.SFTPFailure(str(exc))


async def in_thread(function: Callable[..., T], *args: Any) -> T:
    """Run a blocking portal call off the event loop, its errors as SFTP errors."""
    try:
        return await asyncio.to_thread(function, *args)
    except PdsError as exc:
        raise sftp_error(exc) from exc


def attrs_of(entry: Entry) -> SFTPAttrs:
    mtime = int(entry.mtime.timestamp()) if entry.mtime else 0
    if entry.is_dir:
        return SFTPAttrs(type=asyncssh.FILEXFER_TYPE_DIRECTORY, permissions=0o40755, uid=0, gid=0, mtime=mtime)
    return SFTPAttrs(
        type=asyncssh.FILEXFER_TYPE_REGULAR,
        permissions=0o100644,
        size=entry.size,
        uid=0,
        gid=0,
        atime=mtime,
        mtime=mtime,
    )


def _path(path: bytes) -> str:
    # Relative paths are relative to the root: the tree has no per-user home directory.
    return "/" + path.decode("utf-8", errors="strict").lstrip("/")


class UploadHandle:
    """An open file being uploaded: writes in order, committed at close."""

    def __init__(self, upload: Upload) -> None:
        self.upload = upload
        self.pending: dict[int, bytes] = {}

    def write(self, offset: int, data: bytes) -> None:
        if offset < self.upload.size:
            self.upload.abort("upload rewrote bytes already sent")
            raise InvalidInput("the portal stores uploads front to back; rewriting is not supported")
        self.pending[offset] = data
        if len(self.pending) > MAX_PENDING_WRITES:
            self.upload.abort("upload wrote too far ahead")
            raise InvalidInput("writes too far ahead of the upload's end; write front to back")
        while self.upload.size in self.pending:
            self.upload.write(self.pending.pop(self.upload.size))


class PortalSFTPServer(asyncssh.SFTPServer):
    """One SFTP session of one data user over the portal tree."""

    def __init__(self, chan: asyncssh.SSHServerChannel[Any], portal: Portal) -> None:
        super().__init__(chan)
        self.portal = portal
        self.login: str = chan.get_extra_info("username")
        peer = chan.get_extra_info("peername")
        self.client_address: str | None = peer[0] if peer else None
        self._user: PortalUser | None = None
        self._handles: set[object] = set()

    async def user(self) -> PortalUser:
        # Reach is read once per session: grants changed meanwhile apply from the next login.
        if self._user is None:
            self._user = await in_thread(self.portal.user, self.login)
        return self._user

    # --- Paths and attributes ---

    async def realpath(self, path: bytes) -> bytes:
        try:
            return str(parse_path(_path(path))).encode()
        except PdsError as exc:
            raise sftp_error(exc) from exc

    async def stat(self, path: bytes) -> SFTPAttrs:
        return attrs_of(await in_thread(self.portal.stat, await self.user(), _path(path)))

    async def lstat(self, path: bytes) -> SFTPAttrs:
        return await self.stat(path)

    async def fstat(self, file_obj: object) -> SFTPAttrs:
        if isinstance(file_obj, Download):
            return attrs_of(file_obj.entry)
        assert isinstance(file_obj, UploadHandle)
        return SFTPAttrs(type=asyncssh.FILEXFER_TYPE_REGULAR, permissions=0o100644, size=file_obj.upload.size)

    async def setstat(self, path: bytes, attrs: SFTPAttrs) -> None:
        # Times and modes are the portal's; accept the request (clients send it after every upload).
        await self.stat(path)

    async def lsetstat(self, path: bytes, attrs: SFTPAttrs) -> None:
        await self.stat(path)

    async def fsetstat(self, file_obj: object, attrs: SFTPAttrs) -> None:
        return None

    async def scandir(self, path: bytes) -> AsyncIterator[SFTPName]:
        user = await self.user()
        entries = await in_thread(self.portal.list, user, _path(path))
        for name, entry in ((".", Entry(".", True)), ("..", Entry("..", True))):
            yield SFTPName(name.encode(), attrs=attrs_of(entry))
        for entry in entries:
            yield SFTPName(entry.name.encode(), attrs=attrs_of(entry))

    # --- Files ---

    async def open(self, path: bytes, pflags: int, attrs: SFTPAttrs) -> object:
        user = await self.user()
        if pflags & asyncssh.FXF_WRITE:
            if pflags & asyncssh.FXF_READ:
                raise asyncssh.SFTPOpUnsupported("the portal opens files for reading or writing, not both")
            if pflags & asyncssh.FXF_APPEND:
                raise asyncssh.SFTPOpUnsupported("the portal does not append to files")
            upload = await in_thread(
                lambda: self.portal.begin_upload(user, _path(path), protocol="sftp", client_address=self.client_address)
            )
            handle: object = UploadHandle(upload)
        else:
            handle = await self._open_read(user, _path(path))
        self._handles.add(handle)
        return handle

    async def _open_read(self, user: PortalUser, path: str) -> Download:
        """A download; a file registered without retrieval is asked for, then waited for on the event
        loop (no thread held) up to `fetch_wait_seconds`, then the open fails "try again later"."""
        deadline = time.monotonic() + self.portal.fetch_wait_seconds
        while True:
            try:
                return await asyncio.to_thread(
                    lambda: self.portal.open_read(user, path, protocol="sftp", client_address=self.client_address)
                )
            except NotYetAvailable as exc:
                if time.monotonic() >= deadline:
                    raise asyncssh.SFTPFailure(f"try again later: {exc}") from exc
                await asyncio.sleep(min(0.25, max(0.0, deadline - time.monotonic())))
            except PdsError as exc:
                raise sftp_error(exc) from exc

    async def read(self, file_obj: object, offset: int, size: int) -> bytes:
        if not isinstance(file_obj, Download):
            raise asyncssh.SFTPPermissionDenied("file not open for reading")
        return await in_thread(file_obj.read_at, offset, size)

    async def write(self, file_obj: object, offset: int, data: bytes) -> int:
        if not isinstance(file_obj, UploadHandle):
            raise asyncssh.SFTPPermissionDenied("file not open for writing")
        await in_thread(file_obj.write, offset, data)
        return len(data)

    async def close(self, file_obj: object) -> None:
        self._handles.discard(file_obj)
        if isinstance(file_obj, Download):
            await in_thread(file_obj.finish)
        elif isinstance(file_obj, UploadHandle):
            if file_obj.pending:
                await in_thread(file_obj.upload.abort, "upload closed with a gap in its bytes")
                raise asyncssh.SFTPFailure("the upload has a gap: some bytes were never written")
            if not file_obj.upload.done:
                await in_thread(file_obj.upload.commit)

    # --- The tree ---

    async def remove(self, path: bytes) -> None:
        await in_thread(self.portal.delete, await self.user(), _path(path))

    async def mkdir(self, path: bytes, attrs: SFTPAttrs) -> None:
        await in_thread(self.portal.mkdir, await self.user(), _path(path))

    async def rmdir(self, path: bytes) -> None:
        await in_thread(self.portal.rmdir, await self.user(), _path(path))

    async def rename(self, oldpath: bytes, newpath: bytes) -> None:
        await in_thread(self.portal.rename, await self.user(), _path(oldpath), _path(newpath))

    async def posix_rename(self, oldpath: bytes, newpath: bytes) -> None:
        await self.rename(oldpath, newpath)

    async def readlink(self, path: bytes) -> bytes:
        raise asyncssh.SFTPNoSuchFile("the portal has no links")

    async def symlink(self, oldpath: bytes, newpath: bytes) -> None:
        raise asyncssh.SFTPOpUnsupported("the portal has no links")

    async def link(self, oldpath: bytes, newpath: bytes) -> None:
        raise asyncssh.SFTPOpUnsupported("the portal has no links")

    def exit(self) -> None:
        # A session that ends with files still open (a dropped connection) leaves no upload half-queued.
        for handle in self._handles:
            if isinstance(handle, UploadHandle) and not handle.upload.done:
                handle.upload.abort("upload broke off: the SFTP session ended")
            elif isinstance(handle, Download):
                handle.finish()
        # OpenSSH's scp (SFTP mode) fails a session that ends without an exit status.
        self.channel.exit(0)


class PortalSSHServer(asyncssh.SSHServer):
    """Authentication for one connection: the data user's password or one of its SSH keys."""

    def __init__(self, portal: Portal) -> None:
        self.portal = portal
        self.engine: sa.Engine = portal.engine
        self.login: str | None = None
        self.conn: asyncssh.SSHServerConnection | None = None

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self.conn = conn

    def begin_auth(self, username: str) -> bool:
        with read_scope(self.engine) as session:
            keys = public_keys(session, username)
        if keys and self.conn is not None:
            self.conn.set_authorized_keys(asyncssh.import_authorized_keys("\n".join(keys) + "\n"))
        return True

    def password_auth_supported(self) -> bool:
        return True

    def public_key_auth_supported(self) -> bool:
        return True

    async def validate_password(self, username: str, password: str) -> bool:
        def check() -> bool:
            with read_scope(self.engine) as session:
                return authenticate_password(session, username, password) is not None

        return await asyncio.to_thread(check)

    def auth_completed(self) -> None:
        assert self.conn is not None
        login = self.conn.get_extra_info("username")
        try:
            self.portal.connections.acquire(login, self.portal.max_connections(login))
        except QuotaExceeded as exc:
            self.conn.disconnect(asyncssh.DISC_TOO_MANY_CONNECTIONS, str(exc))
            return
        self.login = login

    def connection_lost(self, exc: Exception | None) -> None:
        if self.login is not None:
            self.portal.connections.release(self.login)
            self.login = None


def host_key(path: Path) -> asyncssh.SSHKey:
    """The server's host key, made (ed25519) on first start so clients can pin it."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        key = asyncssh.generate_private_key("ssh-ed25519")
        key.write_private_key(str(path))
        os.chmod(path, 0o600)
    return asyncssh.read_private_key(str(path))


async def start_sftp_server(portal: Portal, host: str, port: int, key_path: Path) -> asyncssh.SSHAcceptor:
    """Listen for SFTP (and SCP) sessions; returns the acceptor (`close()` it to stop)."""
    return await asyncssh.create_server(
        lambda: PortalSSHServer(portal),
        host,
        port,
        server_host_keys=[host_key(key_path)],
        sftp_factory=lambda chan: PortalSFTPServer(chan, portal),
        allow_scp=True,
        # No shells, no port forwarding: the server speaks SFTP and SCP only.
        allow_pty=False,
        agent_forwarding=False,
        x11_forwarding=False,
    )


def _serve() -> None:
    from catalog.portal import portal_from_environment

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings, portal = portal_from_environment()
    key_path = Path(settings.portal_ssh_host_key or settings.data_dir / "portal" / "ssh_host_key")

    async def main() -> None:
        await start_sftp_server(portal, settings.portal_host, settings.portal_sftp_port, key_path)
        logger.info("portal SFTP listening on %s:%s", settings.portal_host, settings.portal_sftp_port)
        await asyncio.Event().wait()

    asyncio.run(main())


if __name__ == "__main__":
    _serve()
