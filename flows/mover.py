"""The mover: a long-lived flow run that claims ready transfers from the database and dispatches them.

On start it recovers what a crash left Transferring (→ Interrupted → Queued), and while it runs it
takes over the Transferring rows of any other mover that stopped beating. Then it polls the
database (cheap, and a pushed file starts moving within `mover_poll_seconds`), claims about a
second's worth of work at a time, and queues each claim for the first of its `dispatch` subflows that
waits for work, starting a new one in its own thread when every one is busy, up to `mover_parallel` at
once (see `flows.dispatch.ClaimQueue`).
A background thread records a heartbeat so other movers know it is alive.
A mover name is held by one process at a time: a second start under a live mover's name is refused
(see `catalog.mover_names`).
A continental mover (`--proxy-host NAME`) serves only the destinations of that proxy host: it copies
their files to the proxy host's store location ahead of schedule and sends them from there, while the
main movers leave those transfers alone for as long as it beats (see `catalog.continental`).
The run ends after `mover_max_runtime_seconds` (its supervisor or schedule starts the next one), so
no flow run grows without bound.

Run it with `python -m flows.mover` (what `pds up` does) or as the `mover` deployment in prefect.yaml.
"""

from __future__ import annotations

import argparse
import contextvars
import functools
import logging
import os
import socket
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import timedelta
from types import FrameType
from uuid import UUID

from prefect import flow, get_run_logger
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    FlowFilter,
    FlowFilterName,
    FlowRunFilter,
    FlowRunFilterState,
    FlowRunFilterStateType,
)
from prefect.client.schemas.objects import StateType
from prefect.context import SettingsContext, get_settings_context
from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY
from prefect.states import Crashed

from catalog.continental import proxy_host as check_proxy_host
from catalog.database import session_scope
from catalog.lifecycle import fail_idle_uploads
from catalog.mover_names import MoverNameTaken, keep_name, release_name, take_name, take_name_or_exit
from catalog.transfers import claim_ids, expire_due, recover, requeue_unsent
from flows.dispatch import ClaimQueue, DispatchSlot, current_slot, dispatch, started_signal
from flows.stopping import keep_stop_handler, stop_on_signals
from tasks import publishing
from tasks.continental import pre_replication_pass
from tasks.runtime import runtime

#: How often a continental mover looks for files to pre-replicate (seconds).
PRE_REPLICATION_EVERY = 1.0
#: About a second of work at loopback speeds; a larger file is claimed alone.
CLAIM_BYTES = 64 * 1024 * 1024
CLAIM_FILES = 500  # with 4 dispatches at once; fewer, larger dispatches cost Prefect less per file
#: How often the mover copies out outbox rows that no just-committed transaction published (seconds).
PUBLISH_EVERY = 2.0
#: How long the mover waits for a dispatch's flow run to be created before it goes on regardless.
SUBFLOW_START_SECONDS = 10.0


class _Publishing(threading.Thread):
    """Copies out the outbox rows nobody else will: those of movers that died, this mover's own from
    its previous run (at once, on start), and rows whose sink failed (see `tasks.publishing`)."""

    def __init__(self, name: str, every: float) -> None:
        super().__init__(name=f"publishing-{name}", daemon=True)
        self.mover, self.every, self.stopped = name, every, threading.Event()

    def run(self) -> None:
        rt = runtime()
        while True:
            try:
                publishing.drain(rt.engine, rt.settings, self.mover)
            except Exception as exc:  # noqa: BLE001 — the rows stay in the outbox; the next pass takes them
                logging.getLogger("pds.mover").warning("outbox drain of %s failed: %s", self.mover, exc)
            if self.stopped.wait(self.every):
                return


class _Heartbeat(threading.Thread):
    """Records every `every` seconds that this process still holds its mover name; sets `lost` if another
    process has taken it (see `catalog.mover_names`), and the mover then claims nothing more."""

    def __init__(self, name: str, every: float) -> None:
        super().__init__(name=f"heartbeat-{name}", daemon=True)
        self.mover, self.every = name, every
        self.stopped, self.lost = threading.Event(), threading.Event()

    def run(self) -> None:
        rt = runtime()
        while not self.stopped.wait(self.every):
            try:
                with session_scope(rt.engine) as session:
                    kept = keep_name(session, self.mover, machine=socket.gethostname(), pid=os.getpid())
            except Exception as exc:  # noqa: BLE001 — a missed beat is retried; the mover goes on
                logging.getLogger("pds.mover").warning("heartbeat of %s failed: %s", self.mover, exc)
                continue
            if not kept:
                logging.getLogger("pds.mover").error(
                    "another process has taken the mover name %s: this one claims nothing more", self.mover
                )
                self.lost.set()
                return


_stop = threading.Event()


def request_stop(signum: int = 0, frame: FrameType | None = None) -> None:
    """Finish the dispatches in progress, claim nothing more, end the run (SIGTERM, Ctrl-C)."""
    _stop.set()


@flow(name="mover", flow_run_name="mover {name}", log_prints=True)
def mover(
    name: str = "", max_runtime_seconds: float = 0, stop_when_idle: bool = False, proxy_host: str = ""
) -> dict[str, int]:
    """Claim and dispatch transfers until `max_runtime_seconds` pass (or, for tests, the queue is empty);
    with `proxy_host`, as that proxy host's continental mover."""
    keep_stop_handler()  # SIGTERM stops it like Ctrl-C when started from its command
    rt = runtime()
    settings, logger = rt.settings, get_run_logger()
    name = name or settings.mover_name
    proxy = proxy_host or settings.mover_proxy_host or None
    max_runtime = max_runtime_seconds or settings.mover_max_runtime_seconds
    with session_scope(rt.engine) as session:
        if proxy:
            check_proxy_host(session, proxy)  # a typo ends the run at once, with the reason
    stale_after = timedelta(seconds=settings.mover_stale_seconds)
    upload_idle = timedelta(seconds=settings.upload_idle_seconds)
    machine, pid = socket.gethostname(), os.getpid()
    with session_scope(rt.engine) as session:
        take_name(session, name, machine=machine, pid=pid, stale_after=stale_after, proxy_host=proxy)
    dead_runs: set[str] = set()
    with session_scope(rt.engine) as session:
        recovered = recover(session, name, stale_after=stale_after, flow_runs=dead_runs)
    # What its previous run left in the outbox, and the ERR lines of the attempts recovered just now.
    publishing.drain(rt.engine, rt.settings, name)
    if recovered:
        logger.warning("recovered %d interrupted transfer(s): %s", len(recovered), recovered)
    dead_runs |= waiting_dispatch_runs(name)  # no transfer names a dispatch that waited for work
    if dead_runs:
        end_dead_runs(dead_runs, name)
    beat = _Heartbeat(name, settings.mover_heartbeat_seconds)
    beat.start()
    publisher = _Publishing(name, PUBLISH_EVERY)
    publisher.start()
    counts = {"dispatches": 0, "transfers": 0, "recovered": len(recovered)}
    started = last_takeover = time.monotonic()
    last_copy = started - PRE_REPLICATION_EVERY  # the first pass at once
    copying: Future[object] | None = None
    workers = settings.mover_parallel + (1 if proxy else 0)  # pre-replication takes no dispatch's place
    # The heartbeat goes on until the pool has waited for the dispatches in flight: a mover that stopped
    # beating while it finished sending would have its transfers taken over and sent twice.
    try:
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="dispatch") as pool:
            dispatches = _Dispatches(pool, name, settings.mover_parallel)
            logger.info(
                "mover %s claims transfers: %d dispatch(es) at most, a claim every %.2f s while idle",
                name,
                settings.mover_parallel,
                settings.mover_poll_seconds,
            )
            try:
                while not _stop.is_set() and not beat.lost.is_set() and time.monotonic() - started < max_runtime:
                    claimed: list[int] = []
                    copy_due = time.monotonic() - last_copy > PRE_REPLICATION_EVERY
                    if proxy and copy_due and (copying is None or copying.done()):
                        last_copy = time.monotonic()
                        copying = pool.submit(contextvars.copy_context().run, pre_replication_pass, proxy, name)
                    if time.monotonic() - last_takeover > stale_after.total_seconds() / 2:
                        last_takeover = time.monotonic()
                        counts["recovered"] += _take_over_silent_movers(name, stale_after, upload_idle)
                    # A claim whose dispatch could not start (the Prefect API refused it) waits for another.
                    counts["dispatches"] += dispatches.start_if_needed()
                    # Idle is judged before the claim: a dispatch that requeued a transfer (a failed
                    # attempt to retry) and then waited for work is seen idle only after the requeue,
                    # so the claim below finds that transfer instead of the mover ending without it.
                    idle = stop_when_idle and dispatches.idle() and (copying is None or copying.done())
                    if dispatches.can_take():
                        with session_scope(rt.engine) as session:
                            expire_due(session, by=name)
                            claimed = claim_ids(  # ids only: the dispatch loads what it needs
                                session,
                                name,
                                CLAIM_FILES,
                                max_bytes=CLAIM_BYTES,
                                proxy_host=proxy,
                                stale_after=stale_after,
                            )
                    if claimed:
                        counts["dispatches"] += dispatches.hand_over(claimed)
                        counts["transfers"] += len(claimed)
                        continue
                    if idle:
                        break
                    time.sleep(settings.mover_poll_seconds)
            finally:
                dispatches.close()
        dispatches.settle()  # the pool waited for every dispatch
    finally:
        beat.stopped.set()
        publisher.stopped.set()
    publisher.join(30)  # rows it could not copy out stay in the outbox for the next run or another mover
    if beat.lost.is_set():
        raise MoverNameTaken(f"mover {name}: another process took this name while it ran")
    with session_scope(rt.engine) as session:
        release_name(session, name, machine=machine, pid=pid)
    logger.info("mover %s ends: %s", name, counts)
    return counts


def _take_over_silent_movers(name: str, stale_after: timedelta, upload_idle: timedelta) -> int:
    """Take over the Transferring rows of movers that stopped beating, and fail uploads that went
    silent; the number of transfers taken over."""
    rt, logger = runtime(), get_run_logger()
    dead_runs: set[str] = set()
    with session_scope(rt.engine) as session:
        taken = recover(session, name, stale_after=stale_after, only_stale=True, flow_runs=dead_runs)
    if taken:
        logger.warning("took over %d transfer(s) of a silent mover: %s", len(taken), taken)
        end_dead_runs(dead_runs, name)
    with session_scope(rt.engine) as session:
        idle = fail_idle_uploads(session, upload_idle, by=name)
    if idle:
        logger.warning("failed the uploads of data file(s) %s: nothing arrived for a while", idle)
    return len(taken)


class _Dispatches:
    """The mover's dispatches in flight, and the queue of claims they take from.

    A claim goes on the queue; the first dispatch waiting for work takes it. A new dispatch is started
    while claims outnumber the dispatches waiting for them and fewer than `parallel` run. Prefect
    numbers a parent run's subflow runs with a counter that is not safe across threads: two dispatches
    created at once could get the same number, and then the second joins the first one's flow run and
    waits on it (seconds of stall, and one run shown for two dispatches). So one is created at a time;
    meanwhile the dispatches already running go on taking claims, including the one the new dispatch
    was started for.
    """

    def __init__(self, pool: ThreadPoolExecutor, mover: str, parallel: int) -> None:
        self.pool, self.mover, self.parallel = pool, mover, parallel
        self.queue = ClaimQueue()
        self.in_flight: dict[Future[object], DispatchSlot] = {}
        self.creating: tuple[threading.Event, Future[object], float] | None = None
        self.left: list[int] = []  # claims no dispatch took before the mover stopped
        # Made once per mover run: building Prefect's settings costs about 0.1 s of CPU.
        self.without_heartbeats = _settings_without_heartbeats()

    def _prune(self) -> None:
        for ended in [f for f in self.in_flight if f.done()]:
            slot = self.in_flight.pop(ended)
            if slot.taken:
                self._give_back(slot.taken, _ended_reason(ended))

    def _give_back(self, transfer_ids: list[int], reason: str) -> None:
        """Queue again claimed transfers no dispatch sent: a dispatch that died before sending its
        claim, or claims still queued when the mover stopped. They would otherwise stay Transferring
        under this mover, which still beats, and hold their destinations' places until it restarts."""
        try:
            with session_scope(runtime().engine) as session:
                again = requeue_unsent(session, self.mover, transfer_ids, reason)
        except Exception as exc:  # noqa: BLE001 — the next start of this mover recovers them anyway
            logging.getLogger("pds.mover").warning("could not queue again claimed transfers: %s", exc)
            return
        if again:
            logging.getLogger("pds.mover").warning("queued again %d transfer(s) %s: %s", len(again), again, reason)

    def _created(self) -> bool:
        if self.creating is None:
            return True
        created, dispatching, deadline = self.creating
        return created.is_set() or dispatching.done() or time.monotonic() > deadline

    def _may_start(self) -> bool:
        return len(self.in_flight) < self.parallel and self._created()

    def can_take(self) -> bool:
        """Whether a claim made now would start moving at once: a dispatch waits for it, or one may be
        started for it. Not while a queued claim still waits for a dispatch to be started (one is
        being created, or could not be)."""
        self._prune()
        unserved = self.queue.pending - self.queue.waiting  # 0 also when a woken dispatch has not taken its claim yet
        return unserved < 0 or (unserved == 0 and self._may_start())

    def hand_over(self, claimed: list[int]) -> int:
        """Queue the claim for the first free dispatch; the number of dispatches started."""
        self.queue.put(claimed)
        return self.start_if_needed()

    def start_if_needed(self) -> int:
        """Start a dispatch if claims outnumber the dispatches waiting for them (one at a time: see above)."""
        self._prune()
        if self.queue.pending <= self.queue.waiting or not self._may_start():
            return 0
        # A copied context makes each dispatch a child run of this mover in the Prefect UI, and carries
        # the settings without flow-run heartbeats into it.
        with self.without_heartbeats:
            context = contextvars.copy_context()
        created, slot = threading.Event(), DispatchSlot(self.queue)
        context.run(started_signal.set, created)
        context.run(current_slot.set, slot)
        dispatching = self.pool.submit(context.run, functools.partial(_dispatch_without_heartbeats, self.mover))
        self.in_flight[dispatching] = slot
        self.creating = (created, dispatching, time.monotonic() + SUBFLOW_START_SECONDS)
        return 1

    def idle(self) -> bool:
        """Whether no claim waits and every dispatch waits for work (none is sending)."""
        self._prune()
        return self.queue.pending == 0 and self.queue.waiting >= len(self.in_flight)

    def close(self) -> None:
        """The mover stops: dispatches waiting for work end now, busy ones after their claim."""
        self.left = [transfer_id for claim in self.queue.close() for transfer_id in claim]

    def settle(self) -> None:
        """Once every dispatch ended: give back what none of them sent."""
        self._prune()
        if self.left:
            self._give_back(self.left, "its mover stopped before sending it")
            self.left = []


def _ended_reason(ended: Future[object]) -> str:
    if ended.cancelled() or ended.exception() is None:
        return "its dispatch ended before sending it"
    return f"its dispatch failed: {type(ended.exception()).__name__}: {ended.exception()} before sending it"


def waiting_dispatch_runs(mover_name: str) -> set[str]:
    """The dispatch runs of an earlier run of this mover still unfinished in Prefect. Called as the
    mover starts, before it dispatches anything: it holds the name, so no other process runs them.
    A dispatch that waited for work when its mover died has no Transferring transfer to name it."""
    try:
        with get_client(sync_client=True) as client:
            runs = client.read_flow_runs(
                flow_filter=FlowFilter(name=FlowFilterName(any_=["dispatch"])),
                flow_run_filter=FlowRunFilter(
                    state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.RUNNING, StateType.PENDING]))
                ),
                limit=200,
            )
    except Exception as exc:  # noqa: BLE001 — the Prefect API may be down; the transfers are safe anyway
        logging.getLogger("pds.mover").warning("could not list the dispatch runs of %s: %s", mover_name, exc)
        return set()
    return {str(run.id) for run in runs if run.parameters.get("mover") == mover_name}


def end_dead_runs(flow_run_ids: set[str], mover_name: str) -> None:
    """Mark Crashed the dispatch runs of a mover that died, still Running in Prefect: they run without
    heartbeats (see `_settings_without_heartbeats`), so nothing else would end them, and the Prefect UI
    would show them running for ever. Best effort: pds's own record of the transfers is already right."""
    logger = logging.getLogger("pds.mover")
    try:
        with get_client(sync_client=True) as client:
            for run_id in sorted(flow_run_ids):
                run = client.read_flow_run(UUID(run_id))
                if run.state is not None and not run.state.is_final():
                    message = f"its mover stopped; {mover_name} took over what it was sending"
                    client.set_flow_run_state(run.id, Crashed(message=message), force=True)
                    logger.warning("marked flow run %s (%s) Crashed: %s", run.name, run_id, message)
    except Exception as exc:  # noqa: BLE001 — the Prefect API may be down; the transfers are safe anyway
        logger.warning("could not end the flow runs of a stopped mover %s: %s", sorted(flow_run_ids), exc)


def _dispatch_without_heartbeats(mover_name: str) -> object:
    """Run one dispatch subflow, which takes its claims through its slot; the mover calls it in a
    context that holds `_settings_without_heartbeats`, so Prefect starts no flow-run heartbeat thread."""
    return dispatch([], mover_name, return_state=True)


def _settings_without_heartbeats() -> SettingsContext:
    """Prefect settings for the dispatch subflows: those of this run without flow-run heartbeats.

    Joining the heartbeat thread costs up to a second at the end of every run — more than a batch of
    small files takes to send. The mover's own run keeps its heartbeats, and pds's database heartbeat
    is what recovers transfers after a crash. Made once per mover run and entered only to copy the
    context of each dispatch: building Prefect's settings costs about 0.1 s of CPU, which per
    dispatch would be a tenth of a batch of small files.
    """
    current = get_settings_context()
    settings = current.settings.copy_with_update(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None})
    return SettingsContext(profile=current.profile, settings=settings)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m flows.mover", description=__doc__.splitlines()[0])
    parser.add_argument("--name", default="", help="mover name (default PDS_MOVER_NAME)")
    parser.add_argument("--max-runtime", type=float, default=0, help="seconds before the run ends")
    parser.add_argument("--stop-when-idle", action="store_true", help="end when no transfer is ready")
    parser.add_argument(
        "--proxy-host", default="", help="run as the continental mover of this proxy host (PDS_MOVER_PROXY_HOST)"
    )
    args = parser.parse_args(argv)
    stop_on_signals(request_stop)
    rt = runtime()
    name = args.name or rt.settings.mover_name  # named runs in the Prefect UI: "mover mover-1"
    take_name_or_exit(rt.engine, name, timedelta(seconds=rt.settings.mover_stale_seconds))
    mover(
        name=name, max_runtime_seconds=args.max_runtime, stop_when_idle=args.stop_when_idle, proxy_host=args.proxy_host
    )


if __name__ == "__main__":
    main()
