"""Discovery: one pass over an acquisition host's listing rules (a `discover` task run per rule), and
the acquisition scheduler that starts a pass for each host when its schedule (or "run now") is due.

Start a pass from a notebook with
`prefect.deployments.run_deployment("discovery/discovery", parameters={"host": "provider-a"})`,
from `pds acquisition run HOST`, or the API's `POST /acquisition/{host}/run` (both mark the host
due; the scheduler starts the pass within `acquisition_poll_seconds`).

The scheduler discovers up to `discovery_parallel` hosts at once, each pass a subflow in a thread of
its own, so a slow provider delays only its own pass. A pass holds its host in the database while it
runs (`catalog.acquisition.take_pass`): a second pass of the host meanwhile, from this process or
another, is skipped with a log line instead of listing the host again beside the first.
"""

from __future__ import annotations

import argparse
import contextvars
import os
import socket
import threading
import time
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from types import FrameType
from typing import Any

import sqlalchemy as sa
from prefect import flow, get_run_logger

from catalog.acquisition import (
    acquisition_host,
    due_hosts,
    keep_pass,
    list_rules,
    pass_finished,
    pass_started,
    release_pass,
    take_pass,
)
from catalog.database import session_scope
from flows.stopping import keep_stop_handler, stop_on_signals
from tasks.discovery import discover_rule_task
from tasks.runtime import runtime

_stop = threading.Event()


def request_stop(signum: int = 0, frame: FrameType | None = None) -> None:
    _stop.set()


#: Set by a pass as soon as its flow run exists, for the scheduler that waits for it before it starts
#: the next: Prefect numbers a parent run's subflow runs with a counter that is not safe across threads.
_started_signal: contextvars.ContextVar[threading.Event | None] = contextvars.ContextVar(
    "discovery_started", default=None
)

#: How long the scheduler waits for a pass's flow run to exist before it starts the next one anyway.
SUBFLOW_START_SECONDS = 10.0


class _Lease(threading.Thread):
    """Renews a pass's hold on its host every third of the lease until the pass ends."""

    def __init__(self, engine: sa.Engine, host: str, holder: str, seconds: float, logger: Any) -> None:
        super().__init__(name=f"discovery-lease-{host}", daemon=True)
        self.engine, self.host, self.holder, self.seconds, self.logger = engine, host, holder, seconds, logger
        self.stopped = threading.Event()
        self.lost = False

    def run(self) -> None:
        while not self.stopped.wait(self.seconds / 3):
            try:
                with session_scope(self.engine) as session:
                    kept = keep_pass(session, self.host, self.holder, self.seconds)
            except Exception as exc:  # noqa: BLE001 — the database is away for a moment: try at the next beat
                self.logger.warning("discovery of %s: the lease on the host was not renewed: %s", self.host, exc)
                continue
            if not kept and not self.lost:
                self.lost = True
                self.logger.warning(
                    "discovery of %s: the lease on the host ran out and another pass took it", self.host
                )


def pass_holder() -> str:
    """Who a pass is, as its host's lease records it."""
    return f"{socket.gethostname()} pid {os.getpid()} pass {uuid.uuid4().hex[:8]}"


@flow(name="discovery", flow_run_name="discovery {host}")
def discovery(host: str) -> dict[str, int]:
    """List every active rule of `host` and register what is new; the run fails if a rule failed.

    Skipped (with a log line, `skipped` 1 in the result) when a pass of `host` is already under way."""
    if (started := _started_signal.get()) is not None:
        started.set()
    rt, logger = runtime(), get_run_logger()
    holder, lease_seconds = pass_holder(), rt.settings.discovery_lease_seconds
    with session_scope(rt.engine) as session:
        source = acquisition_host(session, host)
        rules = list_rules(session, host, active_only=True)
        busy = take_pass(session, host, holder, lease_seconds)
        if busy is None:
            pass_started(session, host)
    if busy is not None:
        logger.warning("discovery of %s skipped: a pass of it is already under way (%s)", host, busy)
        return {"rules": len(rules), "listed": 0, "registered": 0, "skipped": 1}
    lease = _Lease(rt.engine, host, holder, lease_seconds, logger)
    lease.start()
    registered = listed = 0
    errors = []
    try:
        for rule in rules:
            state = discover_rule_task(source, rule, f"discovery {host}", return_state=True)
            if state.is_completed():
                outcome = state.result()
                listed += outcome.listed
                registered += outcome.registered
                logger.info(
                    "rule %s listed %d entries in %s, registered %d",
                    rule.id,
                    outcome.listed,
                    outcome.directory,
                    outcome.registered,
                )
            else:
                errors.append(f"rule {rule.id}: {state.message}")
        with session_scope(rt.engine) as session:
            pass_finished(session, host, registered, "; ".join(errors) or None)
    finally:
        lease.stopped.set()
        lease.join()
        with session_scope(rt.engine) as session:
            release_pass(session, host, holder)
    if errors:
        raise RuntimeError(f"discovery of {host} failed for {len(errors)} rule(s): {'; '.join(errors)}")
    return {"rules": len(rules), "listed": listed, "registered": registered, "skipped": 0}


@flow(name="acquisition-scheduler", log_prints=True)
def acquisition_scheduler(max_runtime_seconds: float = 0, stop_when_idle: bool = False) -> dict[str, int]:
    """Run a discovery pass (as a subflow) for each acquisition host whose time has come, up to
    `discovery_parallel` hosts at once."""
    keep_stop_handler()  # SIGTERM stops it like Ctrl-C when started from its command
    rt, logger = runtime(), get_run_logger()
    max_runtime = max_runtime_seconds or rt.settings.mover_max_runtime_seconds
    started = time.monotonic()
    counts = {"passes": 0, "failed": 0, "skipped": 0}
    running: dict[str, Future[Any]] = {}

    def ended(host: str, future: Future[Any]) -> None:
        counts["passes"] += 1
        try:
            state = future.result()
            outcome = state.result(raise_on_failure=False) if state.is_completed() else None
        except Exception as exc:  # noqa: BLE001 — one pass's trouble must not stop the others
            counts["failed"] += 1
            logger.warning("discovery of %s failed: %s", host, exc)
            return
        if not state.is_completed():
            counts["failed"] += 1
            logger.warning("discovery of %s failed: %s", host, state.message)
        elif isinstance(outcome, dict) and outcome.get("skipped"):
            counts["skipped"] += 1

    with ThreadPoolExecutor(rt.settings.discovery_parallel, thread_name_prefix="discovery") as pool:
        while True:
            for host in [h for h, f in running.items() if f.done()]:
                ended(host, running.pop(host))
            if _stop.is_set() or time.monotonic() - started >= max_runtime:
                break
            with session_scope(rt.engine) as session:
                hosts = [h for h in due_hosts(session) if h not in running]
            for host in hosts[: rt.settings.discovery_parallel - len(running)]:
                context = contextvars.copy_context()  # each pass a subflow of this run
                created = threading.Event()
                context.run(_started_signal.set, created)
                running[host] = pool.submit(context.run, _discovery_state, host)
                deadline = time.monotonic() + SUBFLOW_START_SECONDS
                while not created.wait(0.02) and not running[host].done() and time.monotonic() < deadline:
                    pass
            if not hosts and not running and stop_when_idle:
                break
            time.sleep(rt.settings.acquisition_poll_seconds)
        for host, future in running.items():  # a stop waits for the passes under way
            ended(host, future)
    return counts


def _discovery_state(host: str) -> Any:
    return discovery(host, return_state=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m flows.discovery", description=__doc__.splitlines()[0])
    parser.add_argument("--host", help="run one discovery pass of this host and end")
    parser.add_argument("--max-runtime", type=float, default=0, help="seconds before the scheduler ends")
    args = parser.parse_args(argv)
    if args.host:
        discovery(args.host)
        return
    stop_on_signals(request_stop)
    acquisition_scheduler(max_runtime_seconds=args.max_runtime)


if __name__ == "__main__":
    main()
