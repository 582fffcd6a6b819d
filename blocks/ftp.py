"""FTP and FTPS (explicit AUTH TLS or implicit TLS) through fsspec's FTP filesystem.

`address` is `host[:port]` (21 by default, 990 for implicit TLS); `directory` is where files land
(absolute, or from the login directory). Options: `passive` (true; false for active mode), `tls`
(`none`, `explicit` or `implicit`), `verify_tls` (true), `cafile` (a CA bundle or the server's own
certificate), `timeout` (30 s). TLS is capped at 1.2: pyftpdlib servers have truncated uploads over
TLS 1.3 while both ends reported success.

Uploads stream through one data connection (`STOR`, or `STOR` after `REST` to resume), never one
connection per buffer as fsspec's own FTP file does.
"""

from __future__ import annotations

import contextlib
import os
import socket
import ssl
from datetime import UTC, datetime
from ftplib import FTP, FTP_TLS, error_perm, error_reply, error_temp
from typing import IO, Any, ClassVar

import fsspec
from fsspec.implementations.ftp import FTPFileSystem

from blocks.base import HostBlock
from catalog.errors import FailOverToNextHost, FailTransfer, InvalidInput, RetryOnSameHost, TransferError

TLS_MODES = ("none", "explicit", "implicit")
_AUTH_CODES = ("530", "532")
_DENIED_CODES = ("550", "553")


class ImplicitFTPTLS(FTP_TLS):
    """FTP over TLS from the first byte; the server's name is checked like any TLS client does."""

    def connect(self, host: str = "", port: int = 0, timeout: float = -999, source_address: Any = None) -> str:
        self.host, self.port = host or self.host, port or self.port
        if timeout != -999:
            self.timeout = timeout
        raw = socket.create_connection((self.host, self.port), self.timeout, source_address=source_address)
        self.sock = self.context.wrap_socket(raw, server_hostname=self.host)
        self.af = self.sock.family
        self.file = self.sock.makefile("r", encoding=self.encoding)
        self.welcome = self.getresp()
        return self.welcome


class StreamingUpload:
    """A write-only file over one FTP data connection; `close()` waits for the server's 226."""

    def __init__(self, ftp: FTP, path: str, offset: int = 0) -> None:
        self._ftp = ftp
        ftp.voidcmd("TYPE I")  # binary: ASCII mode would rewrite line endings
        self._conn = ftp.transfercmd(f"STOR {path}", rest=offset or None)
        self.closed = False

    def write(self, data: bytes) -> int:
        try:
            self._conn.sendall(data)
        except OSError as exc:
            raise self._servers_reason(exc) from exc
        return len(data)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        try:
            if isinstance(self._conn, ssl.SSLSocket):
                self._conn.unwrap()  # a clean TLS close, so the server knows every byte arrived
            self._conn.close()
        except OSError as exc:
            raise self._servers_reason(exc) from exc
        self._ftp.voidresp()

    def _servers_reason(self, broken: OSError) -> Exception:
        """Why the data connection broke, in the server's words when it gave them.

        A server that cannot write (a full disk, a quota) drops the data connection and explains on
        the control connection (`426 No space left on device`, `552 …`); the reset seen on the data
        socket says nothing, so the reply is read and raised instead.
        """
        self.closed = True
        with contextlib.suppress(OSError):
            self._conn.close()
        try:
            self._ftp.voidresp()
        except (error_reply, error_temp, error_perm) as reply:
            return reply
        except (OSError, EOFError):
            return broken
        return broken

    def __enter__(self) -> StreamingUpload:
        return self

    def __exit__(self, exc_type: object, *_: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.closed = True
            self._conn.close()


class StreamingDownload:
    """A read-only sequential file over one FTP data connection (`RETR`), for whole-file reads."""

    def __init__(self, ftp: FTP, path: str) -> None:
        self._ftp = ftp
        ftp.voidcmd("TYPE I")
        self._conn = ftp.transfercmd(f"RETR {path}")
        self._file = self._conn.makefile("rb")
        self.closed = False

    def read(self, size: int = -1) -> bytes:
        return self._file.read(size)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        complete = not self._file.read(1)
        self._file.close()
        if isinstance(self._conn, ssl.SSLSocket) and complete:
            self._conn.unwrap()
        self._conn.close()
        try:
            self._ftp.voidresp()  # 226 when complete; 426 when we stopped early, which is expected
        except error_temp:
            if complete:
                raise

    def __enter__(self) -> StreamingDownload:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


class PdsFtpFileSystem(FTPFileSystem):  # type: ignore[misc]
    """fsspec's FTP filesystem with passive/active mode, explicit/implicit TLS and streamed uploads."""

    def __init__(
        self,
        host: str,
        *,
        passive: bool = True,
        tls: str = "none",
        context: ssl.SSLContext | None = None,
        **kwargs: Any,
    ) -> None:
        self.passive, self.tls_mode, self.context = passive, tls, context
        super().__init__(host, tls=False, **kwargs)

    def _connect(self) -> None:
        ftp: FTP
        if self.tls_mode == "implicit":
            ftp = ImplicitFTPTLS(context=self.context, timeout=self.timeout, encoding=self.encoding)
        elif self.tls_mode == "explicit":
            ftp = FTP_TLS(context=self.context, timeout=self.timeout, encoding=self.encoding)
        else:
            ftp = FTP(timeout=self.timeout, encoding=self.encoding)
        ftp.connect(self.host, self.port)
        if isinstance(ftp, FTP_TLS):
            user, password, account = self.cred
            ftp.login(user, password, account, secure=True)  # AUTH TLS first unless already implicit TLS
            ftp.prot_p()  # protect the data connections as well as the commands
        else:
            ftp.login(*self.cred)
        ftp.set_pasv(self.passive)
        self.ftp = ftp

    def __del__(self) -> None:
        if getattr(self, "ftp", None) is not None:  # absent when connecting failed
            super().__del__()

    def ls(self, path: str, detail: bool = True, **kwargs: Any) -> Any:
        entries = super().ls(path, detail=True, **kwargs)
        return entries if detail else [e["name"] for e in entries]  # full paths, as every fsspec backend

    def modified(self, path: str) -> datetime:
        """From the MLSD `modify` fact, which RFC 3659 defines in UTC."""
        stamp = str(self.info(path)["modify"])
        return datetime.strptime(stamp[:14], "%Y%m%d%H%M%S").replace(tzinfo=UTC)

    def _open(self, path: str, mode: str = "rb", **kwargs: Any) -> Any:
        if mode in {"wb", "ab"}:
            path = self._strip_protocol(path)
            offset = int(self.size(path)) if mode == "ab" and self.exists(path) else 0
            self.invalidate_cache(self._parent(path))
            return StreamingUpload(self.ftp, path, offset)
        return super()._open(path, mode, **kwargs)


class FtpHost(HostBlock):
    _block_type_name = "pds FTP Host"
    protocol: ClassVar[str] = "ftp"
    supports_rename: ClassVar[bool] = True
    supports_resume: ClassVar[bool] = True  # REST + STOR continues where the file ends

    def _tls(self) -> str:
        mode = str(self.options.get("tls", "none"))
        if mode not in TLS_MODES:
            raise ValueError(f"option tls must be one of {', '.join(TLS_MODES)}, not {mode!r}")
        return mode

    def open_raw_stream(self, fs: fsspec.AbstractFileSystem, path: str) -> IO[bytes]:
        stream: IO[bytes] = StreamingDownload(fs.ftp, fs._strip_protocol(path))  # type: ignore[assignment]
        return stream

    def check(self) -> None:
        super().check()
        try:
            self._tls()
        except ValueError as exc:
            raise InvalidInput(f"host {self.name}: {exc}") from None
        cafile = self.options.get("cafile")
        if cafile and not os.access(cafile, os.R_OK):
            raise InvalidInput(f"host {self.name}: cannot read cafile {cafile}")

    def _context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=self.options.get("cafile"))
        context.maximum_version = ssl.TLSVersion.TLSv1_2
        if not self.options.get("verify_tls", True):
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context

    def timeout(self) -> float:
        return float(self.options.get("timeout", 30))

    def filesystem(self) -> fsspec.AbstractFileSystem:
        tls = self._tls()
        host, _, port = self.address.partition(":")
        default_port = 990 if tls == "implicit" else 21
        return PdsFtpFileSystem(
            host or "127.0.0.1",
            port=int(port or self.options.get("port", default_port)),
            username=self.login or None,
            password=self.password.get_secret_value() or None,
            timeout=float(self.options.get("timeout", 30)),
            passive=bool(self.options.get("passive", True)),
            tls=tls,
            context=self._context() if tls != "none" else None,
            skip_instance_cache=True,
        )

    def classify(self, exc: BaseException) -> TransferError:
        message = str(exc)
        if isinstance(exc, error_perm) and message.startswith(_AUTH_CODES):
            return FailTransfer(f"host {self.name} refused the login: {message}")
        if isinstance(exc, error_perm) and message.startswith(_DENIED_CODES):
            return FailTransfer(f"host {self.name} refused the operation: {message}")
        if message.startswith(("452", "552")) or "no space left" in message.lower():
            # the site cannot take the file now; another host of the destination may
            return FailOverToNextHost(f"host {self.name} is out of space: {message}")
        if isinstance(exc, error_temp | error_reply):
            return RetryOnSameHost(f"host {self.name}: {message}")
        if isinstance(exc, ssl.SSLCertVerificationError):
            return FailTransfer(f"host {self.name} presented a certificate that does not verify: {message}")
        return super().classify(exc)
