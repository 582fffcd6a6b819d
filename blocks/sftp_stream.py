"""One SFTP file read from start to end with a steady pipeline of READ requests.

Through sshfs a sequential read of 8 MiB chunks asks asyncssh for 8 MiB at a time. OpenSSH answers
a READ with at most 255 KiB, and asyncssh then asks for the rest of the chunk one request after
the other, so a download is one request in flight at a time (the client sat idle for three
quarters of a 256 MiB download, profiled with py-spy), and asyncssh copies every chunk twice while
assembling it. Here READ requests of the server's largest size (its `limits@openssh.com`, else
asyncssh's safe 16 KiB) are kept in flight, `depth` of them, from the first read to the end, each
answer handed over as it came, in file order.

A short answer (the server sent less than asked, short of the end) is followed by a request for the
rest before anything after it is handed over; an empty one is the end of the file. Errors are
those of sshfs's own files (FileNotFoundError, PermissionError, asyncssh's SFTP errors).
"""

from __future__ import annotations

import asyncio
import collections
import io
from collections.abc import Awaitable, Callable
from typing import Any, ParamSpec, TypeVar

from fsspec.asyn import sync
from sshfs.utils import wrap_exceptions

P = ParamSpec("P")
T = TypeVar("T")


def _as_sshfs_errors(func: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
    """sshfs's own translation of asyncssh's errors (FileNotFoundError, PermissionError, …)."""
    wrapped: Callable[P, Awaitable[T]] = wrap_exceptions(func)
    return wrapped


#: Bytes of READ requests in flight at most: 32 of OpenSSH's 255 KiB READs, the size of one chunk a
#: retrieval reads at a time (`blocks.base.READ_BLOCK`).
IN_FLIGHT = 8 * 1024 * 1024

#: READ requests in flight at most, whatever their size (asyncssh's own limit for one file): a server
#: that reports no limits gets 16 KiB READs, 128 of them rather than 512.
MAX_REQUESTS = 128


class SftpReadStream(io.RawIOBase):
    """A sequential reader of `path` on the SSHFileSystem `fs` (not seekable)."""

    def __init__(self, fs: Any, path: str, in_flight: int = IN_FLIGHT) -> None:
        super().__init__()
        self._loop = fs.loop
        self._file, block = sync(self._loop, self._open, fs, path)
        self._block = block
        self._depth = max(1, min(MAX_REQUESTS, in_flight // block))
        self._offset = 0  # of the next request
        #: (offset, size, answer) of each READ in flight, in file order.
        self._requests: collections.deque[tuple[int, int, asyncio.Future[bytes]]] = collections.deque()
        self._ended = False  # the end of the file was seen: no more requests
        self._rest = b""  # the part of an answer that did not fit the last read

    @staticmethod
    @_as_sshfs_errors
    async def _open(fs: Any, path: str) -> tuple[Any, int]:
        async with fs._pool.get() as channel:
            # block_size 0: each `read(size, offset)` is one READ request, answered without copies.
            file = await channel.open(path, "rb", block_size=0)
            return file, max(1, channel.limits.max_read_len)

    def readable(self) -> bool:
        return True

    def _request(self, offset: int, size: int) -> tuple[int, int, asyncio.Future[bytes]]:
        return offset, size, asyncio.ensure_future(self._file.read(size, offset))

    def _fill(self) -> None:
        while not self._ended and len(self._requests) < self._depth:
            self._requests.append(self._request(self._offset, self._block))
            self._offset += self._block

    @_as_sshfs_errors
    async def _read(self, size: int) -> bytes:
        """Up to `size` bytes: the answers that came in order, whole, as long as they fit."""
        parts: list[bytes] = []
        got = 0
        self._fill()
        while got < size:
            if self._rest:
                data, self._rest = self._rest, b""
            elif self._requests:
                data = await self._next()
                if not data:
                    break
            else:
                break
            if got + len(data) > size:
                if parts:  # hand over what fits; this answer starts the next read
                    self._rest = data
                    break
                data, self._rest = data[:size], data[size:]
            parts.append(data)
            got += len(data)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    async def _next(self) -> bytes:
        """The answer to the oldest READ in flight (empty at the end of the file), the pipeline refilled."""
        offset, asked, request = self._requests[0]
        data = await request
        self._requests.popleft()
        if not data:  # the end of the file: what was asked after it is answered empty too
            self._ended = True
            await self._cancel()
            return data
        if len(data) < asked:  # the rest of this request's range comes next, before the others
            self._requests.appendleft(self._request(offset + len(data), asked - len(data)))
        self._fill()
        return data

    def read(self, size: int = -1) -> bytes:
        if self.closed:
            raise ValueError("read from a closed stream")
        if size is None or size < 0:
            size = 1 << 62
        if size == 0:
            return b""
        data: bytes = sync(self._loop, self._read, size)
        return data

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    async def _cancel(self) -> None:
        requests = [request for _, _, request in self._requests]
        self._requests.clear()
        for request in requests:
            request.cancel()
        await asyncio.gather(*requests, return_exceptions=True)

    async def _close(self) -> None:
        await self._cancel()
        await self._file.close()

    def close(self) -> None:
        if not self.closed:
            try:
                sync(self._loop, self._close)
            finally:
                super().close()
