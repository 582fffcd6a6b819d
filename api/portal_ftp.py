"""The Data Portal over FTP and explicit FTPS (pyftpdlib): the portal's tree as the server's file system.

Data users log in with their password. The file system (`PortalFS`) maps every FTP command onto
`catalog.portal.Portal`, so permissions, quotas, uploads (pushes) and downloads are those of every
other protocol; nothing touches the local disk and `..` never rises above `/`. An upload is committed
only when its data connection ends normally; a quota used up answers `552`. A file registered
without retrieval is fetched when RETR asks for it: the command waits up to `fetch_wait_seconds`,
then answers `450` (try again later) if the content is still on its way. Resuming (REST before
STOR) and appending (APPE) are refused: an upload is a new data file. One thread per session, since
each command may wait on the database. Run it with `python -m api.portal_ftp` (what `pds up` does).
"""

from __future__ import annotations

import errno
import logging
import os
import stat
import time
from pathlib import Path
from typing import Any

from OpenSSL import SSL
from pyftpdlib.authorizers import AuthenticationFailed, DummyAuthorizer
from pyftpdlib.filesystems import AbstractedFS
from pyftpdlib.handlers import DTPHandler, FTPHandler, TLS_DTPHandler, TLS_FTPHandler
from pyftpdlib.servers import ThreadedFTPServer

from catalog.database import read_scope
from catalog.errors import AccessDenied, NotFound, NotYetAvailable, PdsError, QuotaExceeded
from catalog.portal import Download, Entry, Portal, PortalUser, Upload, parse_path
from catalog.users import authenticate_password

logger = logging.getLogger(__name__)


def os_error(exc: PdsError) -> OSError:
    """pyftpdlib answers 550 with the error's text for any OSError raised by the file system."""
    code = errno.ENOENT if isinstance(exc, NotFound) else errno.EACCES if isinstance(exc, AccessDenied) else errno.EIO
    return OSError(code, str(exc))


class IllegalPath(OSError):
    """A path the portal refuses to parse (a backslash, a control character): the command answers 550."""


class PortalAuthorizer(DummyAuthorizer):  # type: ignore[misc]  # pyftpdlib has no type hints
    """Data users and their passwords; what each may do is the portal's business (PortalFS)."""

    def __init__(self, portal: Portal) -> None:
        super().__init__()
        self.portal = portal

    def validate_authentication(self, username: str, password: str, handler: Any) -> None:
        with read_scope(self.portal.engine) as session:
            if authenticate_password(session, username, password) is None:
                raise AuthenticationFailed("authentication failed")

    def get_home_dir(self, username: str) -> str:
        return "/"

    def has_user(self, username: str) -> bool:
        return True

    def has_perm(self, username: str, perm: str, path: str | None = None) -> bool:
        return True

    def get_perms(self, username: str) -> str:
        return "elradfmwMT"

    def get_msg_login(self, username: str) -> str:
        return f"Welcome to the pds Data Portal, {username}."

    def get_msg_quit(self, username: str) -> str:
        return "Goodbye."

    def impersonate_user(self, username: str, password: str) -> None:
        return None

    def terminate_impersonation(self, username: str) -> None:
        return None


def _stat(entry: Entry) -> os.stat_result:
    mtime = entry.mtime.timestamp() if entry.mtime else 0.0
    mode = (stat.S_IFDIR | 0o755) if entry.is_dir else (stat.S_IFREG | 0o644)
    return os.stat_result((mode, 0, 0, 1, 0, 0, entry.size, mtime, mtime, mtime))


class ReadFile:
    """A download as the file object pyftpdlib reads from."""

    def __init__(self, download: Download, name: str) -> None:
        self.download, self.name, self.closed = download, name, False
        self.position = 0

    def seek(self, offset: int, whence: int = 0) -> None:
        self.position = offset

    def read(self, size: int = 65536) -> bytes:
        data = self.download.read_at(self.position, size)
        self.position += len(data)
        return data

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.download.finish()


class WriteFile:
    """An upload as the file object pyftpdlib writes into; `finish` commits or aborts it."""

    def __init__(self, upload: Upload, name: str) -> None:
        self.upload, self.name, self.closed = upload, name, False
        self.quota_error: QuotaExceeded | None = None

    def write(self, data: bytes) -> int:
        try:
            self.upload.write(data)
        except QuotaExceeded as exc:
            self.quota_error = exc
            raise OSError(errno.EDQUOT, str(exc)) from exc
        return len(data)

    def finish(self, complete: bool) -> None:
        if self.closed:
            return
        self.closed = True
        if complete and self.quota_error is None:
            self.upload.commit()
        else:
            self.upload.abort("upload broke off: the FTP data connection closed early")

    def close(self) -> None:
        self.finish(False)


class PortalFS(AbstractedFS):  # type: ignore[misc]  # pyftpdlib has no type hints
    """The portal's tree for one FTP session; paths are virtual and stay virtual."""

    def __init__(self, root: str, cmd_channel: Any) -> None:
        super().__init__("/", cmd_channel)
        self.portal: Portal = cmd_channel.portal
        self._user: PortalUser | None = None

    @property
    def user(self) -> PortalUser:
        if self._user is None:
            self._user = self.portal.user(self.cmd_channel.username)
        return self._user

    def _call(self, function: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return function(*args, **kwargs)
        except PdsError as exc:
            raise os_error(exc) from exc

    # Paths: the FTP path is the tree path.
    def ftpnorm(self, ftppath: str) -> str:
        joined = ftppath if ftppath.startswith("/") else f"{self.cwd}/{ftppath}"
        try:
            return str(parse_path(joined))
        except PdsError as exc:
            raise IllegalPath(errno.EINVAL, str(exc)) from exc

    def ftp2fs(self, ftppath: str) -> str:
        return self.ftpnorm(ftppath)

    def fs2ftp(self, fspath: str) -> str:
        return fspath

    def validpath(self, path: str) -> bool:
        return True

    def realpath(self, path: str) -> str:
        return path

    # Files.
    def open(self, filename: str, mode: str) -> Any:
        if "r" in mode and "+" not in mode:
            download = self._call(
                self.portal.open_read, self.user, filename, protocol="ftp", client_address=self.cmd_channel.remote_ip
            )
            return ReadFile(download, filename)
        if mode != "wb":
            raise OSError(errno.EPERM, "resuming and appending are not supported: upload the whole file")
        upload = self._call(
            self.portal.begin_upload, self.user, filename, protocol="ftp", client_address=self.cmd_channel.remote_ip
        )
        return WriteFile(upload, filename)

    def chdir(self, path: str) -> None:
        if not self._call(self.portal.stat, self.user, path).is_dir:
            raise OSError(errno.ENOTDIR, f"{path} is not a directory")
        self.cwd = path

    def mkdir(self, path: str) -> None:
        self._call(self.portal.mkdir, self.user, path)

    def rmdir(self, path: str) -> None:
        self._call(self.portal.rmdir, self.user, path)

    def remove(self, path: str) -> None:
        self._call(self.portal.delete, self.user, path)

    def rename(self, src: str, dst: str) -> None:
        self._call(self.portal.rename, self.user, src, dst)

    def chmod(self, path: str, mode: int) -> None:
        raise OSError(errno.EPERM, "modes are not kept in the portal")

    def utime(self, path: str, timeval: float) -> None:
        raise OSError(errno.EPERM, "times are not kept in the portal")

    # Listings and attributes.
    def listdir(self, path: str) -> list[str]:
        return [e.name for e in self._call(self.portal.list, self.user, path)]

    def listdirinfo(self, path: str) -> list[str]:
        return self.listdir(path)

    def stat(self, path: str) -> os.stat_result:
        return _stat(self._call(self.portal.stat, self.user, path))

    lstat = stat

    def readlink(self, path: str) -> str:
        raise OSError(errno.EINVAL, "the portal has no links")

    def _entry(self, path: str) -> Entry | None:
        try:
            return self.portal.stat(self.user, path)
        except PdsError:
            return None

    def isfile(self, path: str) -> bool:
        entry = self._entry(path)
        return entry is not None and not entry.is_dir

    def isdir(self, path: str) -> bool:
        entry = self._entry(path)
        return entry is not None and entry.is_dir

    def islink(self, path: str) -> bool:
        return False

    def lexists(self, path: str) -> bool:
        return self._entry(path) is not None

    def getsize(self, path: str) -> int:
        return int(self.stat(path).st_size)

    def getmtime(self, path: str) -> float:
        return float(self.stat(path).st_mtime)

    def get_user_by_uid(self, uid: int) -> str:
        return "pds"

    def get_group_by_gid(self, gid: int) -> str:
        return "pds"

    def format_list(self, basedir: str, listing: list[str], ignore_err: bool = True) -> Any:
        entries = {e.name: e for e in self._call(self.portal.list, self.user, basedir)} if listing else {}
        for name in listing:
            entry = entries.get(name) or self._entry(basedir.rstrip("/") + "/" + name)
            if entry is None:
                continue
            kind = "d" if entry.is_dir else "-"
            mode = "rwxr-xr-x" if entry.is_dir else "rw-r--r--"
            when = time.strftime("%b %d %H:%M", time.gmtime(entry.mtime.timestamp() if entry.mtime else 0))
            yield f"{kind}{mode}   1 pds      pds      {entry.size:>12} {when} {name}\r\n".encode("utf8", "replace")


class _PortalDataMixin:
    """Commits an upload only when its data connection ended normally; a quota used up answers 552."""

    file_obj: Any
    transfer_finished: bool
    _closed: bool
    _resp: Any
    _error: bool

    def close(self) -> None:
        if not self._closed and isinstance(self.file_obj, WriteFile) and not self.file_obj.closed:
            try:
                self.file_obj.finish(self.transfer_finished)
            except PdsError as exc:
                self._resp = (f"451 {exc}", logger.warning)
            if self.file_obj.quota_error is not None:
                self._resp = (f"552 {self.file_obj.quota_error}", logger.warning)
        super().close()  # type: ignore[misc]

    def handle_error(self) -> None:
        # A used-up quota is the user's error, not the server's: answer 552 on every variant (the TLS
        # handler's own error path would close the channel without any answer).
        if isinstance(self.file_obj, WriteFile) and self.file_obj.quota_error is not None:
            self._error = True
            self.close()
            return
        super().handle_error()  # type: ignore[misc]


class PortalDTPHandler(_PortalDataMixin, DTPHandler):  # type: ignore[misc]  # pyftpdlib has no type hints
    pass


class PortalTLSDTPHandler(_PortalDataMixin, TLS_DTPHandler):  # type: ignore[misc]  # pyftpdlib has no type hints
    pass


class _PortalControlMixin:
    """Checks the quota before a STOR so an upload that cannot fit is refused with 552 at once."""

    portal: Portal
    username: str
    fs: PortalFS
    _portal_login: str | None = None

    def pre_process_command(self, line: str, cmd: str, arg: str) -> Any:
        # pyftpdlib turns a command's path into the file system's before the command runs, outside
        # the error handling of each command: a path the portal refuses would end the session.
        try:
            return super().pre_process_command(line, cmd, arg)  # type: ignore[misc]
        except IllegalPath as exc:
            self.respond(f"550 {exc.strerror}.")  # type: ignore[attr-defined]
            self.log_cmd(cmd, arg, 550, exc.strerror)  # type: ignore[attr-defined]
            return None

    def ftp_RETR(self, file: str) -> Any:
        """A file registered without retrieval is asked for and waited for (`fetch_wait_seconds`);
        still not fetched by then, the answer is 450 "try again later". This session's thread waits."""
        try:
            self.portal.require_content(self.fs.user, file, protocol="ftp", wait=self.portal.fetch_wait_seconds)
        except NotYetAvailable as exc:
            self.respond(f"450 {exc}.")  # type: ignore[attr-defined]
            return None
        except PdsError:
            pass  # Other refusals come from open() with their own 550 text.
        return super().ftp_RETR(file)  # type: ignore[misc]

    def ftp_STOR(self, file: str, mode: str = "w") -> Any:
        try:
            self.portal.check_upload(self.fs.user, file)
        except QuotaExceeded as exc:
            self.respond(f"552 {exc}")  # type: ignore[attr-defined]
            return None
        except PdsError:
            pass  # Other refusals come from open() with their own 550 text.
        return super().ftp_STOR(file, mode)  # type: ignore[misc]

    def on_login(self, username: str) -> None:
        try:
            self.portal.connections.acquire(username, self.portal.max_connections(username))
        except QuotaExceeded as exc:
            self.respond(f"421 {exc}")  # type: ignore[attr-defined]
            self.close_when_done()  # type: ignore[attr-defined]
            return
        self._portal_login = username

    def close(self) -> None:
        login = getattr(self, "_portal_login", None)
        if login is not None:
            self._portal_login = None
            self.portal.connections.release(login)
        super().close()  # type: ignore[misc]


def make_handler(
    portal: Portal, *, certificate: str = "", passive_ports: range | None = None, masquerade_address: str = ""
) -> type[FTPHandler]:
    """The FTP handler class for a server over `portal` (explicit FTPS when a certificate is given)."""
    attributes: dict[str, Any] = {
        "portal": portal,
        "authorizer": PortalAuthorizer(portal),
        "abstracted_fs": PortalFS,
        "banner": "pds Data Portal ready.",
        "permit_foreign_addresses": False,
        "use_sendfile": False,
    }
    if passive_ports is not None:
        attributes["passive_ports"] = passive_ports
    if masquerade_address:
        attributes["masquerade_address"] = masquerade_address
    if certificate:
        context = SSL.Context(SSL.TLS_SERVER_METHOD)
        # TLS 1.3 silently truncated one in six FTPS uploads with pyftpdlib (its issue #602).
        context.set_max_proto_version(SSL.TLS1_2_VERSION)
        context.use_certificate_chain_file(certificate)
        context.use_privatekey_file(certificate)
        attributes |= {"ssl_context": context, "dtp_handler": PortalTLSDTPHandler, "tls_control_required": False}
        return type("PortalFTPSHandler", (_PortalControlMixin, TLS_FTPHandler), attributes)
    attributes["dtp_handler"] = PortalDTPHandler
    return type("PortalFTPHandler", (_PortalControlMixin, FTPHandler), attributes)


def make_server(
    portal: Portal,
    host: str,
    port: int,
    *,
    certificate: str = "",
    passive_ports: range | None = None,
    masquerade_address: str = "",
) -> ThreadedFTPServer:
    handler = make_handler(
        portal, certificate=certificate, passive_ports=passive_ports, masquerade_address=masquerade_address
    )
    return ThreadedFTPServer((host, port), handler)


def _passive_ports(text: str) -> range | None:
    if not text:
        return None
    first, _, last = text.partition("-")
    return range(int(first), int(last) + 1)


def _serve() -> None:
    from catalog.portal import portal_from_environment

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings, portal = portal_from_environment()
    certificate = settings.portal_tls_certificate
    if certificate and not Path(certificate).exists():
        raise SystemExit(f"PDS_PORTAL_TLS_CERTIFICATE {certificate} does not exist")
    server = make_server(
        portal,
        settings.portal_host,
        settings.portal_ftp_port,
        certificate=certificate,
        passive_ports=_passive_ports(settings.portal_passive_ports),
        masquerade_address=settings.portal_ftp_masquerade_address,
    )
    server.serve_forever()


if __name__ == "__main__":
    _serve()
