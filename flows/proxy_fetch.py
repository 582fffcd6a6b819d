"""The proxy fetcher: a long-lived flow run that claims the proxy's fetch requests and fills the cache.

The API records a fetch request in the database (one per asset, however many clients ask) and never
fetches itself, so a client that drops its connection cancels nothing. This flow polls for requests
every `proxy_fetcher_poll_seconds` (a cheap query; an uncached asset starts moving within a fraction of
a second), runs each fetch as a `proxy-fetch` task run, retried by `proxy_fetch_retries`, up to
`proxy_fetcher_parallel` at once, and applies the datasets' cache retention every
`proxy_retention_seconds`. On start it re-queues what an earlier run under the same name left running.

Run it with `python -m flows.proxy_fetch` (what `pds up` does) or as the `proxy-fetcher` deployment.
"""

from __future__ import annotations

import argparse
import contextvars
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from types import FrameType

import sqlalchemy as sa
from prefect import flow, get_run_logger

from catalog.database import read_scope, session_scope
from catalog.models import utcnow
from catalog.proxy import FetchJob, apply_retention, claim_fetches, fetches_queued, recover_fetches
from flows.stopping import keep_stop_handler, stop_on_signals
from tasks.proxy_fetch import fetch_asset, give_up
from tasks.runtime import runtime

_stop = threading.Event()


def request_stop(signum: int = 0, frame: FrameType | None = None) -> None:
    """Finish the fetches in progress, claim nothing more, end the run."""
    _stop.set()


def _fetch(job: FetchJob, retries: int, delay: float) -> None:
    state = fetch_asset.with_options(retries=retries, retry_delay_seconds=delay)(job, return_state=True)
    if not state.is_completed():
        give_up(job, str(state.message or "upstream fetch failed"))


@flow(name="proxy-fetcher", flow_run_name="proxy fetcher {name}", log_prints=True)
def proxy_fetcher(name: str = "", max_runtime_seconds: float = 0, stop_when_idle: bool = False) -> dict[str, int]:
    """Claim and run fetch requests until `max_runtime_seconds` pass (or, for tests, none is left)."""
    keep_stop_handler()  # SIGTERM stops it like Ctrl-C when started from its command
    rt = runtime()
    settings, logger = rt.settings, get_run_logger()
    name = name or settings.proxy_fetcher_name
    max_runtime = max_runtime_seconds or 3600.0
    with session_scope(rt.engine) as session:
        recovered = recover_fetches(session, name)
    if recovered:
        logger.warning("re-queued %d fetch(es) an earlier run left unfinished", recovered)
    counts = {"fetches": 0, "recovered": recovered, "evicted": 0}
    started = last_retention = time.monotonic()
    in_flight: set[Future[None]] = set()
    cache_dir = settings.resolved_proxy_cache_dir()
    with ThreadPoolExecutor(settings.proxy_fetcher_parallel, thread_name_prefix="proxy-fetch") as pool:
        while not _stop.is_set() and time.monotonic() - started < max_runtime:
            in_flight = {f for f in in_flight if not f.done()}
            free = settings.proxy_fetcher_parallel - len(in_flight)
            jobs: list[FetchJob] = []
            if free > 0 and _fetches_queued(rt.engine):
                with session_scope(rt.engine) as session:
                    jobs = claim_fetches(session, name, free, now=utcnow())
            for job in jobs:
                # A copied context makes each fetch a task run of this flow run in the Prefect UI.
                context = contextvars.copy_context()
                retries, delay = settings.proxy_fetch_retries, settings.proxy_fetch_retry_seconds
                in_flight.add(pool.submit(context.run, _fetch, job, retries, delay))
                counts["fetches"] += 1
            if time.monotonic() - last_retention > settings.proxy_retention_seconds:
                with session_scope(rt.engine) as session:
                    evicted = apply_retention(session, cache_dir, now=utcnow())
                counts["evicted"] += len(evicted)
                if evicted:
                    logger.info("retention evicted %s", evicted)
                last_retention = time.monotonic()
            if jobs:
                continue
            if stop_when_idle and not in_flight:
                break
            time.sleep(settings.proxy_fetcher_poll_seconds)
    logger.info("proxy fetcher %s ends: %s", name, counts)
    return counts


def _fetches_queued(engine: sa.Engine) -> bool:
    # A read first: polled 20 times a second, a claim would take SQLite's write lock at each poll.
    with read_scope(engine) as session:
        return fetches_queued(session)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m flows.proxy_fetch", description=__doc__.splitlines()[0])
    parser.add_argument("--name", default="", help="fetcher name (default PDS_PROXY_FETCHER_NAME)")
    parser.add_argument("--max-runtime", type=float, default=0, help="seconds before the run ends")
    parser.add_argument("--stop-when-idle", action="store_true", help="end when no fetch is requested")
    args = parser.parse_args(argv)
    stop_on_signals(request_stop)
    name = args.name or runtime().settings.proxy_fetcher_name
    proxy_fetcher(name=name, max_runtime_seconds=args.max_runtime, stop_when_idle=args.stop_when_idle)


if __name__ == "__main__":
    main()
