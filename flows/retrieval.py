"""The retriever: a long-lived flow run that fetches registered files (Preset) into the Data Store.

Like the mover, it claims work from the database: on start it puts back to Preset whatever a crash
left Fetching, then it claims files while it has free threads, never more files in retrieval from
one source host (by all retrievers together) than the host's bound, and fetches each claimed file at
once as a `retrieve` task run in its own thread: a file in retrieval is a connection to its host.
A finished fetch wakes the loop, so a freed slot is taken again at once.
Fetched files become Queued (or StandBy): the mover disseminates them to the destination's hosts,
or they wait in the portal bucket when the destination has none.

Run it with `python -m flows.retrieval` or as the `retrieval` deployment in prefect.yaml.
"""

from __future__ import annotations

import argparse
import contextvars
import functools
import os
import socket
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import timedelta
from types import FrameType

from prefect import flow, get_run_logger

from catalog.database import session_scope
from catalog.mover_names import keep_name, release_name, take_name, take_name_or_exit
from catalog.retrieval import Fetch, claim_fetches, recover_fetches
from flows.stopping import keep_stop_handler, stop_on_signals
from tasks import publishing
from tasks.retrieval import retrieve_batch
from tasks.runtime import runtime

_stop = threading.Event()


def request_stop(signum: int = 0, frame: FrameType | None = None) -> None:
    _stop.set()


@flow(name="retrieval", flow_run_name="retrieval {name}", log_prints=True)
def retrieval(name: str = "", max_runtime_seconds: float = 0, stop_when_idle: bool = False) -> dict[str, int]:
    """Fetch registered files until `max_runtime_seconds` pass (or, for tests, nothing is waiting)."""
    keep_stop_handler()  # SIGTERM stops it like Ctrl-C when started from its command
    rt = runtime()
    settings, logger = rt.settings, get_run_logger()
    name = name or settings.retriever_name
    max_runtime = max_runtime_seconds or settings.mover_max_runtime_seconds
    stale_after = timedelta(seconds=settings.mover_stale_seconds)
    machine, pid = socket.gethostname(), os.getpid()
    with session_scope(rt.engine) as session:
        take_name(session, name, machine=machine, pid=pid, stale_after=stale_after)  # one process per name
    with session_scope(rt.engine) as session:
        recovered = recover_fetches(session, name, stale_after=stale_after)
    if recovered:
        logger.warning("%d file(s) left Fetching by a stopped retriever are fetched again", recovered)
    publishing.drain(rt.engine, rt.settings, name)  # the RET lines its previous run committed, not written
    counts = {"batches": 0, "files": 0, "recovered": recovered}
    in_flight: set[Future[dict[str, int]]] = set()
    started = last_beat = time.monotonic()
    lost = False
    parallel = max(1, settings.retrieval_parallel)
    freed = threading.Event()  # set when a fetch ends: its slot (and its host's) can be claimed again
    with ThreadPoolExecutor(max_workers=parallel, thread_name_prefix="retrieve") as pool:
        while not _stop.is_set() and time.monotonic() - started < max_runtime:
            freed.clear()  # before counting: a fetch ending from now on cuts the wait below short
            in_flight = {f for f in in_flight if not f.done()}
            if time.monotonic() - last_beat > settings.mover_heartbeat_seconds:
                with session_scope(rt.engine) as session:
                    lost = not keep_name(session, name, machine=machine, pid=pid)
                if lost:
                    logger.error("another process has taken the retriever name %s: this one stops", name)
                    break
                last_beat = time.monotonic()
            claimed: list[Fetch] = []
            if len(in_flight) < parallel:
                with session_scope(rt.engine) as session:
                    claimed = claim_fetches(
                        session, name, parallel - len(in_flight), default_per_host=settings.retrieval_per_host
                    )
            for fetch in claimed:
                context = contextvars.copy_context()  # each fetch is a task run of this flow run
                call = functools.partial(retrieve_batch, [fetch], name, fetch.host, 1)
                future = pool.submit(context.run, call)
                future.add_done_callback(lambda _: freed.set())
                in_flight.add(future)
                counts["batches"] += 1
                counts["files"] += 1
            if claimed:
                continue
            if stop_when_idle and not in_flight:
                break
            freed.wait(settings.acquisition_poll_seconds)
    if not lost:
        with session_scope(rt.engine) as session:
            release_name(session, name, machine=machine, pid=pid)
    logger.info("retriever %s ends: %s", name, counts)
    return counts


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m flows.retrieval", description=__doc__.splitlines()[0])
    parser.add_argument("--name", default="", help="retriever name (default PDS_RETRIEVER_NAME)")
    parser.add_argument("--max-runtime", type=float, default=0, help="seconds before the run ends")
    parser.add_argument("--stop-when-idle", action="store_true", help="end when no file waits for retrieval")
    args = parser.parse_args(argv)
    stop_on_signals(request_stop)
    rt = runtime()
    name = args.name or rt.settings.retriever_name
    take_name_or_exit(rt.engine, name, timedelta(seconds=rt.settings.mover_stale_seconds))
    retrieval(name=name, max_runtime_seconds=args.max_runtime, stop_when_idle=args.stop_when_idle)


if __name__ == "__main__":
    main()
