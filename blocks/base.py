"""The one surface every transfer module offers: a filesystem, where files land, what it can do.

Callers branch on the declared capabilities, never on the concrete class (as rclone's backends
declare `Mover` or `Copier`). The contract suite in `tests/blocks` checks every declared flag.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import queue
import socket
import threading
from datetime import UTC, datetime
from typing import IO, Any, ClassVar

import fsspec
from prefect.blocks.core import Block
from pydantic import Field, SecretStr

from catalog.errors import FailOverToNextHost, FailTransfer, RetryOnSameHost, TransferError
from catalog.models import Host
from catalog.paths import TEMPLATE_TOKENS, render_directory
from catalog.sealing import unseal, unseal_options

READ_BLOCK = 8 * 1024 * 1024
_FAILOVER_ERRNOS = {errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH, errno.ENOSPC, errno.EDQUOT}
_FAIL_ERRNOS = {errno.EACCES, errno.EPERM, errno.EROFS}


class ReadAhead:
    """A sequential reader that fetches the next chunks in a thread while the current one is used.

    Without it a download alternates between waiting for the network and hashing/writing what came;
    with it both run at once. At most `depth` chunks wait, so memory stays about `depth` × `chunk`.
    Errors from the source are raised to the reader, where they are classified like any other.
    """

    def __init__(self, source: IO[bytes], chunk: int = READ_BLOCK, depth: int = 2) -> None:
        self._source, self._chunk = source, chunk
        self._queue: queue.Queue[bytes | BaseException] = queue.Queue(maxsize=depth)
        self._pending: collections.deque[bytes] = collections.deque()
        self._eof = False
        self._stop = threading.Event()
        self.closed = False
        self._thread = threading.Thread(target=self._fill, name="pds-read-ahead", daemon=True)
        self._thread.start()

    def _fill(self) -> None:
        try:
            while not self._stop.is_set():
                chunk = self._source.read(self._chunk)
                self._put(chunk)
                if not chunk:
                    return
        except BaseException as exc:  # noqa: BLE001 — handed to the reader, which raises it
            self._put(exc)

    def _put(self, item: bytes | BaseException) -> None:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def _next(self) -> bool:
        """Move one fetched chunk to `_pending`; False at the end of the file."""
        if self._eof:
            return False
        item = self._queue.get()
        if isinstance(item, BaseException):
            self._eof = True
            raise item
        if not item:
            self._eof = True
            return False
        self._pending.append(item)
        return True

    def read(self, size: int = -1) -> bytes:
        if self.closed:
            raise ValueError("read from a closed stream")
        if size < 0:
            while self._next():
                pass
            data = b"".join(self._pending)
            self._pending.clear()
            return data
        if not self._pending and not self._next():
            return b""
        first = self._pending[0]
        if len(first) <= size:  # the usual case: whole chunks handed over without a copy
            return self._pending.popleft()
        self._pending[0] = first[size:]
        return first[:size]

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._stop.set()
        with contextlib.suppress(queue.Empty):
            while True:
                self._queue.get_nowait()
        self._thread.join(60)
        self._source.close()

    def __enter__(self) -> ReadAhead:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


class HostBlock(Block):
    """A host: protocol, address, directory template, credentials and options.

    Subclasses set `protocol` and the capability flags and implement `filesystem()`.
    """

    _block_type_name = "pds Host"

    protocol: ClassVar[str] = ""
    supports_rename: ClassVar[bool] = False
    """Files can be written under a temporary name and renamed atomically when complete."""
    supports_resume: ClassVar[bool] = False
    """An interrupted upload can continue where it stopped."""
    supports_server_side_copy: ClassVar[bool] = False
    """The host copies objects itself, without the bytes passing through the mover."""
    has_directories: ClassVar[bool] = True
    """Parent directories must exist before a file is written (false for object stores)."""
    reads_back: ClassVar[bool] = True
    """A written file can be found again at its path, so its size is checked after upload."""
    reports_md5: ClassVar[bool] = False
    """The host can tell the MD5 of a written file, so it is verified after upload."""

    name: str = ""
    address: str = ""
    directory: str = ""
    login: str = ""
    password: SecretStr = Field(default=SecretStr(""))
    options: dict[str, Any] = Field(default_factory=dict)

    @classmethod
    def from_host(cls, host: Host) -> HostBlock:
        """The block of a stored host, its sealed credentials opened (see `catalog.sealing`)."""
        return cls(
            name=host.name,
            address=host.address,
            directory=host.directory,
            login=host.login,
            password=SecretStr(unseal(host.password, host=host.name)),
            options=unseal_options(dict(host.options or {}), host=host.name),
        )

    def filesystem(self) -> fsspec.AbstractFileSystem:
        """A new connection to the host (not shared with other transfers)."""
        raise NotImplementedError

    def timeout(self) -> float:
        """Seconds a call to the host may go without progress (option `timeout`): connecting, and each
        read or write, is abandoned after that long (`blocks.deadline`)."""
        return float(self.options.get("timeout", 60))

    def abort(self, fs: fsspec.AbstractFileSystem) -> None:
        """Close `fs`'s connection at once, from another thread, so that a call stalled on it returns.
        Best effort: the attempt has already given the call up."""

    def close(self, fs: fsspec.AbstractFileSystem) -> None:
        """Close `fs`'s connection now, at the end of an attempt or batch, rather than whenever it is
        garbage-collected: a host's `max_connections` counts the sessions its server sees."""

    def check(self) -> None:
        """Raise InvalidInput for a configuration that could never work, before it is saved.

        Subclasses add their own checks (credentials, key files, option values) and call this one.
        """
        sample = dict.fromkeys(TEMPLATE_TOKENS, "x")
        render_directory(self.directory, sample, datetime.now(UTC))

    def base_path(self) -> str:
        """The path on `filesystem()` that rendered directories are relative to."""
        return ""

    def join(self, *parts: str) -> str:
        """Join the base path and `parts`; the result is absolute when its first non-empty part is."""
        present = [p for p in (self.base_path(), *parts) if p and p.strip("/")]
        joined = "/".join(p.strip("/") for p in present)
        return "/" + joined if present and present[0].startswith("/") else joined

    def open_stream(self, fs: fsspec.AbstractFileSystem, path: str) -> IO[bytes]:
        """A file to read `path` from start to end (retrievals), reading ahead in a thread so the
        network and the caller's work (hashing, writing to the store) overlap."""
        stream: IO[bytes] = ReadAhead(self.open_raw_stream(fs, path))  # type: ignore[assignment]
        return stream

    def open_raw_stream(self, fs: fsspec.AbstractFileSystem, path: str) -> IO[bytes]:
        """`path` opened for one sequential read; backends with a faster sequential read than
        fsspec's random-access file override this."""
        stream: IO[bytes] = fs.open(path, "rb", block_size=READ_BLOCK)
        return stream

    def parallel_puts(self) -> int:
        """How many small files a batch may have in flight at once over one connection with
        `put_whole` (1: each is streamed in turn). Backends on an event loop (s3fs) override this."""
        return 1

    def whole_put_limit(self) -> int:
        """The largest file `put_whole` takes; it holds the file in memory."""
        return 0

    async def put_whole(
        self,
        fs: fsspec.AbstractFileSystem,
        path: str,
        data: bytes,
        *,
        temporary: str | None = None,
        replace_temporary: bool = False,
    ) -> tuple[int, str | None]:
        """Write `data` at `path` on `fs`'s event loop, visible there only once whole: in one request
        (object stores), or at `temporary` and then renamed (hosts that `supports_rename`, which are
        given one; with `replace_temporary` an earlier attempt's file of that name is unlinked
        first). Return the (size, MD5 or None) the host confirmed."""
        raise NotImplementedError

    def confirmed_write(self, file: Any) -> tuple[int, str | None] | None:
        """(size, MD5 or None) that the host confirmed when `file`, just closed, was committed; None
        when it must be asked afterwards (a stat, and `remote_md5`). Saves requests per small file."""
        return None

    def remote_md5(self, fs: fsspec.AbstractFileSystem, path: str) -> str | None:
        """The MD5 the host reports for `path`, or None when it cannot tell."""
        return None

    def diagnose(self, fs: fsspec.AbstractFileSystem, path: str, exc: BaseException, size: int) -> BaseException:
        """A clearer cause for `exc`, found by asking the host while the connection is still open.

        Some servers report a failed write only as a generic failure; a backend that can ask more
        (free space, quota) overrides this and returns an error that says what happened.
        """
        return exc

    def classify(self, exc: BaseException) -> TransferError:
        """Translate a protocol error into what the scheduler does next, keeping the server's words."""
        if isinstance(exc, TransferError):
            return exc
        message = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        if isinstance(exc, PermissionError):
            return FailTransfer(f"permission denied on host {self.name}: {message}")
        if isinstance(exc, FileNotFoundError):
            return FailTransfer(f"not found (host {self.name}): {message}")
        if isinstance(exc, ConnectionRefusedError | socket.gaierror):
            return FailOverToNextHost(f"cannot reach host {self.name}: {message}")
        if isinstance(exc, TimeoutError | ConnectionResetError | BrokenPipeError):
            return RetryOnSameHost(f"connection to host {self.name} broke: {message}")
        if isinstance(exc, OSError) and exc.errno in _FAILOVER_ERRNOS:
            return FailOverToNextHost(f"host {self.name}: {message}")
        if isinstance(exc, OSError) and exc.errno in _FAIL_ERRNOS:
            return FailTransfer(f"host {self.name}: {message}")
        return RetryOnSameHost(f"host {self.name}: {message}")
