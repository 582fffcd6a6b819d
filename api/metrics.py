"""Prometheus metrics at `GET /metrics` (text exposition format, no credentials, like `/health`).

From the database, read at each scrape (so every API replica reports the same values, and they
survive restarts):

- `pds_queue_depth{destination}`: transfers waiting in the queue (Queued + Requeued);
- `pds_transfers{destination,status}`: transfers by status;
- `pds_bytes_sent{destination}`: bytes delivered by the Done transfers the database holds.

Counted by this process (each API replica counts its own; sum them in Prometheus):

- `pds_proxy_cache_hits_total{dataset}` and `pds_proxy_cache_misses_total{dataset}`: the proxy calls
  `PROXY_CACHE_HITS.labels(dataset=name).inc()` when it answers from its cache and
  `PROXY_CACHE_MISSES.labels(dataset=name).inc()` when it must go upstream.
"""

from __future__ import annotations

from collections.abc import Iterator

import sqlalchemy as sa
from litestar import Response, get
from litestar.datastructures import State
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from catalog import monitoring
from catalog.access import Permission
from catalog.database import read_scope
from catalog.statuses import TransferStatus

#: Metrics counted in this process (not from the database).
PROCESS_REGISTRY = CollectorRegistry(auto_describe=True)
PROXY_CACHE_HITS = Counter(
    "pds_proxy_cache_hits",
    "Proxy requests answered from the cache.",
    ["dataset"],
    registry=PROCESS_REGISTRY,
)
PROXY_CACHE_MISSES = Counter(
    "pds_proxy_cache_misses",
    "Proxy requests that needed the upstream (fetch, redirect or pending).",
    ["dataset"],
    registry=PROCESS_REGISTRY,
)


class DatabaseCollector(Collector):
    """Queue depth, transfers by status and bytes sent, from one read of the database per scrape."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine

    def collect(self) -> Iterator[Metric]:
        with read_scope(self.engine) as session:
            counts = monitoring.counts_by_destination(session)
            sent = monitoring.bytes_sent_by_destination(session)
            destinations = monitoring.destination_names(session)
        depth = GaugeMetricFamily(
            "pds_queue_depth", "Transfers waiting in the queue (Queued, Requeued).", labels=["destination"]
        )
        by_status = GaugeMetricFamily("pds_transfers", "Transfers by status.", labels=["destination", "status"])
        bytes_sent = GaugeMetricFamily(
            "pds_bytes_sent", "Bytes delivered by the Done transfers still in the database.", labels=["destination"]
        )
        for name in destinations:
            mine = counts.get(name, {})
            depth.add_metric([name], sum(mine.get(s, 0) for s in monitoring.WAITING))
            for status in TransferStatus:
                by_status.add_metric([name, status.value], mine.get(status.value, 0))
            bytes_sent.add_metric([name], sent.get(name, 0))
        yield from (depth, by_status, bytes_sent)


@get("/metrics", sync_to_thread=True, include_in_schema=False, permission=Permission.PUBLIC)
def metrics(state: State) -> Response[bytes]:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(DatabaseCollector(state.engine))
    body = generate_latest(registry) + generate_latest(PROCESS_REGISTRY)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
