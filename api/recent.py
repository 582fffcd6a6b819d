"""Database answers the proxy keeps in memory for a few seconds, so its hot path never waits on the database.

A value is trusted for `seconds`. After that the next request still gets it at once while one refresh
runs in a worker thread (stale-while-revalidate), and a first read is shared by every request that
arrives while it runs (single flight). Without this, 32 clients finding a value expired at the same
moment each opened a database transaction, and on SQLite those queue behind one another.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Hashable
from typing import Any, Generic, TypeVar

import anyio.to_thread

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class Recent(Generic[K, V]):
    def __init__(self, seconds: float, limit: int = 10_000) -> None:
        self.seconds, self.limit = seconds, limit
        self._values: dict[K, tuple[float, V]] = {}
        self._loading: dict[K, asyncio.Future[V]] = {}
        self._generation = 0  # a read that began before a forget() is not kept

    async def get(self, key: K, load: Callable[[], V]) -> V:
        """The value of `key`; `load` (blocking, run in a thread) reads it when it is unknown or old.
        When a refresh fails the value is forgotten and the error goes to whoever waits for it."""
        hit = self._values.get(key)
        if hit is not None:
            if time.monotonic() - hit[0] >= self.seconds and key not in self._loading:
                self._start(key, load).add_done_callback(_ignore)  # the next request sees the outcome
            return hit[1]
        loading = self._loading.get(key) or self._start(key, load)
        return await asyncio.shield(loading)

    def forget(self, key: K | None = None) -> None:
        """Drop one value (or all): the next request reads the database again."""
        self._generation += 1
        if key is None:
            self._values.clear()
        else:
            self._values.pop(key, None)

    def _start(self, key: K, load: Callable[[], V]) -> asyncio.Future[V]:
        future = asyncio.ensure_future(self._load(key, load))
        self._loading[key] = future
        return future

    async def _load(self, key: K, load: Callable[[], V]) -> V:
        generation = self._generation
        try:
            value = await anyio.to_thread.run_sync(load)
        except BaseException:
            self._values.pop(key, None)
            raise
        finally:
            self._loading.pop(key, None)
        if generation != self._generation:
            return value
        if len(self._values) >= self.limit:
            self._values.clear()
        self._values[key] = (time.monotonic(), value)
        return value


def _ignore(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()
