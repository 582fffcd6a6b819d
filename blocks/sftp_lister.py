"""SFTP listings in a process of their own, so that a large listing uses a second core.

Discovery of a directory of 100,000 files spends as much CPU reading the listing (the SSH
transport, the SFTP packets, the rule's filters and targets) as registering what it finds in the
database. In one process both share one interpreter lock; here the walk runs in a child process
(`python -m blocks.sftp_lister`) on a connection of its own — listing, filtering and naming the
files as `tasks.discovery` does in process (`blocks.entries.walk_tree`, `catalog.selection`) — and
streams the kept files back through a pipe while the parent registers them.

The child imports asyncssh, the standard library and those two light modules only (Prefect takes
seconds to import): it is ready about half a second after it starts, so discovery uses it for rules
not known to list small directories (`tasks.discovery.listing_process`).

Frames, both ways, are a 4-byte big-endian length and a `marshal`led value (plain values only;
both ends are this module). On the child's stdin: one frame with the connection (address,
`asyncssh.connect` arguments, timeout), then one per walk, `(root, depth, prefix, selection,
page size)`; an empty frame ends the child. On its stdout: `("ready",)` once connected (or
`("error", class, message)`), then for each walk pages `("page", listed so far, [(path, target,
size, mtime), ...])` of the files the rule keeps, and `("end",)`, or `("error", class, message)`.
Credentials go through the pipe, never the command line or the environment.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import marshal
import os
import stat
import struct
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from blocks.entries import Entry, child_path, walk_tree
from catalog.errors import InvalidInput
from catalog.selection import Listed, Selection

log = logging.getLogger("pds.listing")

_LENGTH = struct.Struct(">I")
#: The pipe holds this much, so the child lists a few pages ahead of the parent (Linux only).
_PIPE_BYTES = 1024 * 1024
_F_SETPIPE_SZ = 1031
#: Names read from the server per turn of the child's event loop.
_NAMES_PER_RUN = 500


def write_frame(stream: IO[bytes], value: Any) -> None:
    data = marshal.dumps(value)
    stream.write(_LENGTH.pack(len(data)) + data)


def read_frame(stream: IO[bytes]) -> Any:
    """The next frame's value; None when the stream ended (at a frame's boundary or inside one)."""
    head = stream.read(_LENGTH.size)
    if len(head) < _LENGTH.size:
        return None
    (length,) = _LENGTH.unpack(head)
    data = stream.read(length)
    if len(data) < length:
        return None
    return marshal.loads(data)  # noqa: S302 — written by this module's own child process


# --- The child ---------------------------------------------------------------------------------


def main() -> None:
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    config = read_frame(stdin)
    if not config:
        return
    import asyncssh

    gc.freeze()  # what the imports made lives as long as the child: full collections skip it
    host, options, timeout = config
    loop = asyncio.new_event_loop()
    try:
        connection = loop.run_until_complete(asyncio.wait_for(asyncssh.connect(host, **options), timeout))
        sftp = loop.run_until_complete(connection.start_sftp_client())
    except Exception as exc:  # noqa: BLE001 — told to the parent, which lists in process instead
        _send(stdout, ("error", type(exc).__name__, str(exc)))
        return
    _send(stdout, ("ready",))
    try:
        while request := read_frame(stdin):
            _walk(loop, sftp, request, stdout)
    finally:
        connection.close()
        loop.run_until_complete(connection.wait_closed())


def _walk(loop: asyncio.AbstractEventLoop, sftp: Any, request: tuple[Any, ...], stdout: IO[bytes]) -> None:
    """One walk: list, select and name the files, and send them a page at a time."""
    import asyncssh

    root, max_depth, prefix, selection_values, page_size = request
    selection = Selection.from_values(selection_values)
    keeps = selection.filter()
    listed, page = 0, []
    try:
        for entry, relative in walk_tree(lambda d: _entries(loop, sftp, d), root, max_depth, prefix):
            listed += 1
            if not keeps(entry.name, entry.size, entry.modified):
                continue
            try:
                target = selection.target(relative)
            except InvalidInput:
                continue  # a name that cannot be a target (control characters): never registered
            mtime = None if entry.modified is None else entry.modified.timestamp()
            page.append((entry.path, target, entry.size, mtime))
            if len(page) >= page_size:
                _send(stdout, ("page", listed, page))  # blocks while the pipe is full: the parent sets the pace
                page = []
        _send(stdout, ("page", listed, page))
        _send(stdout, ("end",))
    except asyncssh.SFTPNoSuchFile as exc:
        _send(stdout, ("error", "FileNotFoundError", f"{exc.reason}"))
    except asyncssh.SFTPPermissionDenied as exc:
        _send(stdout, ("error", "PermissionError", f"{exc.reason}"))
    except Exception as exc:  # noqa: BLE001 — any other failure ends this walk with its reason
        _send(stdout, ("error", type(exc).__name__, str(exc)))


def _entries(loop: asyncio.AbstractEventLoop, sftp: Any, directory: str) -> Iterator[Entry]:
    """The entries of one directory, read off the wire as they come (see `blocks.sftp_names`)."""
    import asyncssh

    from blocks.sftp_names import lean_readdir_works, sftp_scandir, sftp_v3_names

    names = sftp_v3_names(sftp, directory) if lean_readdir_works(sftp) else sftp_scandir(sftp, directory)
    try:
        # The loop runs for a batch of names at a time (running it costs more than decoding a name).
        while batch := loop.run_until_complete(_next_names(names, _NAMES_PER_RUN)):
            for name, size, permissions, mtime in batch:
                if name in ("", ".", ".."):
                    continue
                is_directory = permissions is not None and stat.S_ISDIR(permissions)
                modified = None if mtime is None else datetime.fromtimestamp(mtime, UTC)
                yield Entry(child_path(directory, name), name, None if is_directory else size, modified, is_directory)
    except asyncssh.SFTPNoSuchFile as exc:
        exc.reason = f"{directory}: {exc.reason}"
        raise
    except asyncssh.SFTPPermissionDenied as exc:
        exc.reason = f"{directory}: {exc.reason}"
        raise
    finally:
        loop.run_until_complete(names.aclose())  # type: ignore[attr-defined]  # an async generator


async def _next_names(names: Any, count: int) -> list[tuple[str, int | None, int | None, int | None]]:
    batch = []
    async for name in names:
        batch.append(name)
        if len(batch) >= count:
            break
    return batch


def _send(stdout: IO[bytes], value: Any) -> None:
    write_frame(stdout, value)
    stdout.flush()


# --- The parent --------------------------------------------------------------------------------

_ERRORS: dict[str, type[OSError]] = {
    "FileNotFoundError": FileNotFoundError,
    "PermissionError": PermissionError,
}


class ListingProcess:
    """One child process listing directories of one SFTP host, for one walk; close it after.

    `connect` is `(address, asyncssh.connect arguments)` as `SftpHost.connect_options` gives them.
    The child is started at once and connects while the caller does other work; `available()` waits
    for it. If it cannot start or connect, `available()` says False (and logs why), and the caller
    lists in its own process, where the same problem is reported as it always was.
    """

    def __init__(self, connect: tuple[str, dict[str, Any]], timeout: float) -> None:
        self._ready: bool | None = None
        self._process: subprocess.Popen[bytes] | None = None
        root = str(Path(__file__).resolve().parents[1])
        env = dict(os.environ) | {"PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
        try:
            self._process = subprocess.Popen(  # noqa: S603 — this interpreter and this module, no input in it
                [sys.executable, "-m", "blocks.sftp_lister"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                env=env,
            )
            assert self._process.stdin is not None and self._process.stdout is not None
            with contextlib.suppress(OSError):  # a bigger pipe lets the child run further ahead
                import fcntl

                fcntl.fcntl(self._process.stdout.fileno(), _F_SETPIPE_SZ, _PIPE_BYTES)
            write_frame(self._process.stdin, (connect[0], connect[1], timeout))
            self._process.stdin.flush()
        except OSError as exc:
            log.warning("SFTP listing process not started (listing in process instead): %s", exc)
            self.close()
            self._ready = False

    def available(self) -> bool:
        if self._ready is None:
            assert self._process is not None and self._process.stdout is not None
            frame = read_frame(self._process.stdout)
            self._ready = frame == ("ready",)
            if not self._ready:
                reason = f"{frame[1]}: {frame[2]}" if frame and frame[0] == "error" else "it ended at start"
                log.warning("SFTP listing process unavailable (listing in process instead): %s", reason)
                self.close(at_once=True)
        return self._ready

    def walk(
        self, root: str, max_depth: int, prefix: str, selection: Selection, page_size: int
    ) -> Iterator[tuple[int, list[Listed]]]:
        """(entries listed so far, a page of the files `selection` keeps, named) for every file under
        `root` down to `max_depth` levels of sub-directories, as `tasks.discovery` selects them in
        process: paths relative to `prefix` give the targets."""
        process = self._process
        if process is None or not self.available():
            raise RuntimeError("the SFTP listing process is not running")
        assert process.stdin is not None and process.stdout is not None
        write_frame(process.stdin, (root, max_depth, prefix, selection.as_values(), page_size))
        process.stdin.flush()
        finished = False
        try:
            while True:
                frame = read_frame(process.stdout)
                if frame is None:
                    code = process.poll()
                    raise OSError(f"the SFTP listing process ended while listing {root} (exit status {code})")
                if frame[0] == "end":
                    finished = True
                    return
                if frame[0] == "error":
                    finished = True  # the child is ready for the next walk
                    kind, message = frame[1], frame[2]
                    raise _ERRORS[kind](message) if kind in _ERRORS else OSError(f"{kind}: {message}")
                listed, page = frame[1], frame[2]
                yield (
                    listed,
                    [
                        Listed(path, target, size, None if mtime is None else datetime.fromtimestamp(mtime, UTC))
                        for path, target, size, mtime in page
                    ],
                )
        finally:
            if not finished:  # stopped mid-walk: the rest is still coming, so the child cannot be reused
                self.close(at_once=True)

    def close(self, *, at_once: bool = False) -> None:
        """End the child: asked to (it finishes nothing more), or `at_once` (killed)."""
        process, self._process, self._ready = self._process, None, False
        if process is None:
            return
        if at_once:
            process.kill()
        with contextlib.suppress(OSError, ValueError):
            assert process.stdin is not None
            write_frame(process.stdin, b"")  # an empty request: end
            process.stdin.close()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()


if __name__ == "__main__":
    main()
