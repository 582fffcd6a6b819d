"""Every byte has a deadline: an attempt's calls to its host run on a thread of their own, and the
attempt gives up on a call that makes no progress within the host's `timeout`.

A host's own timeouts do not cover everything: sshfs's covers connecting only, a server that accepts
the connection and never answers holds a login for minutes, and a stalled write blocks in the kernel
for as long as TCP keeps the connection. Rather than trust each backend, every blocking call of an
attempt (connect, open, each write, close, stat, rename) goes through `Deadlines.call`, which waits
for it at most `timeout` seconds — a write is cut into pieces of `PROGRESS_BYTES`, so "no progress" means fewer than
that many bytes moved in `timeout` seconds. When a call overruns, the attempt raises `Stalled` (a
`TimeoutError`, so the host's classification applies: a retry on the same host, then a failover as
the host's retry options say), the host's `abort` hook closes the connection under the
abandoned call, and the call's thread is left to end on its own: the attempt's slot is free at once.
"""

from __future__ import annotations

import concurrent.futures
import logging
import threading
from collections.abc import Callable
from typing import Any, TypeVar

log = logging.getLogger("pds.deadline")

T = TypeVar("T")

#: A write is cut into pieces of at most this many bytes, each given the host's whole `timeout`.
PROGRESS_BYTES = 1024 * 1024


class Stalled(TimeoutError):
    """A call to the host made no progress within the host's timeout."""


class Deadlines:
    """The blocking calls of one attempt (or one batch over one connection), each bounded."""

    def __init__(self, host: str, timeout: float, *, abort: Callable[[], None] | None = None) -> None:
        self.host, self.timeout, self.abort = host, timeout, abort
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"io-{host}")
        self.stalled: Stalled | None = None

    def call(self, what: str, fn: Callable[..., T], *args: Any, seconds: float | None = None, **kwargs: Any) -> T:
        """`fn(*args, **kwargs)` on the attempt's I/O thread, waited for at most `seconds` (default: the
        host's timeout). After a stall every later call fails at once: the connection is gone."""
        if self.stalled is not None:
            raise Stalled(str(self.stalled))
        limit = self.timeout if seconds is None else seconds
        future = self._pool.submit(fn, *args, **kwargs)
        try:
            return future.result(timeout=limit)
        except concurrent.futures.TimeoutError:
            self.stalled = Stalled(f"no progress for {limit:g} s from host {self.host} while {what}")
            self._give_up()
            raise self.stalled from None

    def connect(self, fn: Callable[[], T]) -> T:
        """Connect within the timeout: a server that accepts the connection and then says nothing is
        given up like any stalled call (retried on the same host, as the host's retry options say)."""
        return self.call("connecting", fn)

    def write(self, target: Any, data: bytes | memoryview) -> None:
        """Write `data` in pieces, each with its deadline."""
        view = memoryview(data)
        for start in range(0, len(view), PROGRESS_BYTES):
            self.call("writing", target.write, view[start : start + PROGRESS_BYTES])

    def _give_up(self) -> None:
        # Closing a stalled connection can itself block: do it on a thread nobody waits for.
        if self.abort is not None:
            threading.Thread(target=self._abort_quietly, name=f"abort-{self.host}", daemon=True).start()
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _abort_quietly(self) -> None:
        assert self.abort is not None
        try:
            self.abort()
        except Exception:  # noqa: BLE001 — the attempt already failed; this only frees a thread sooner
            log.debug("closing the stalled connection to %s failed", self.host, exc_info=True)

    def close(self) -> None:
        self._pool.shutdown(wait=False)

    def __enter__(self) -> Deadlines:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()
