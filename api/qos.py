"""QoS per user and group: requests, cache-miss requests, bytes and upstream bytes per period.

Counters are kept in fixed windows of each quota's period; the limits themselves are read from the
database and kept for a few seconds. The clock is injected so tests can move time.

Where the counters live depends on the database: on SQLite (the embedded default, one API process) in
that process's memory, one dict lookup per request; on PostgreSQL, where several API replicas serve
behind a load balancer, in the database (`catalog.shared_state.SharedCounters`, one UPSERT per quota
and request), so a quota holds however a user's requests are spread over the replicas.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from enum import StrEnum

from catalog.proxy import ProxyQuota
from catalog.shared_state import SharedCounters


class Usage(StrEnum):
    REQUESTS = "max_requests"
    MISS_REQUESTS = "max_miss_requests"
    BYTES = "max_bytes"
    UPSTREAM_BYTES = "max_upstream_bytes"


class QuotaExceeded(Exception):
    def __init__(self, subject: str, usage: Usage, retry_after: int) -> None:
        super().__init__(f"{subject} reached its {usage.value.removeprefix('max_')} limit; retry in {retry_after} s")
        self.subject, self.usage, self.retry_after = subject, usage, retry_after


class QosCounters:
    def __init__(self, clock: Callable[[], float] = time.time, shared: SharedCounters | None = None) -> None:
        self.clock = clock
        self.shared = shared
        self._used: dict[tuple[str, Usage, float], int] = {}

    def charge(self, quotas: list[ProxyQuota], usage: Usage, amount: int = 1) -> None:
        """Count `amount` against every quota, or raise QuotaExceeded (counting nothing) when one would
        go past its limit."""
        now = self.clock()
        if self.shared is not None:
            self._charge_shared(self.shared, quotas, usage, amount, now)
            return
        keys = []
        for quota in quotas:
            limit = getattr(quota, usage.value)
            window_end = (now // quota.period_seconds + 1) * quota.period_seconds
            key = (quota.subject, usage, window_end)
            if limit is not None and self._used.get(key, 0) + amount > limit:
                retry_after = math.ceil(window_end - now)
                raise QuotaExceeded(quota.subject, usage, max(1, retry_after))
            keys.append(key)
        for key in keys:
            self._used[key] = self._used.get(key, 0) + amount
        if len(self._used) > 100_000:
            self._forget_old(now)

    @staticmethod
    def _charge_shared(shared: SharedCounters, quotas: list[ProxyQuota], usage: Usage, amount: int, now: float) -> None:
        charges = []
        for quota in quotas:
            window_end = int((now // quota.period_seconds + 1) * quota.period_seconds)
            charges.append((quota.subject, usage.value, window_end, getattr(quota, usage.value)))
        refused = shared.add(charges, amount, now)
        if refused is not None:
            subject, _, window_end, _ = refused
            raise QuotaExceeded(subject, usage, max(1, math.ceil(window_end - now)))

    def _forget_old(self, now: float) -> None:
        self._used = {k: v for k, v in self._used.items() if k[2] > now}
