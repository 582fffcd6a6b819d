"""One dispatch: execute claimed transfers as task runs, visible in the Prefect UI.

A large file is one task run; small files to the same host go in one batch task over one connection,
so orchestration stays a small fraction of the work. A dispatch started by a mover holds a
`DispatchSlot` on the mover's `ClaimQueue`: it takes the mover's claims, one after another, until it
has been idle for a while. Creating a flow run costs the Prefect API from 0.1 s to 3 s on a busy
machine; paid once per slot instead of once per claim, a pushed file starts moving within the mover's
poll interval, and a claim goes to whichever dispatch is free first. Each claim's files are task runs
of their own, and each attempt names its task run.
"""

from __future__ import annotations

import contextvars
import threading
import time
from collections import defaultdict, deque
from typing import Any

from prefect import flow, get_run_logger
from prefect.context import FlowRunContext
from prefect.futures import PrefectFuture, wait
from prefect.runtime import flow_run
from prefect.task_runners import ThreadPoolTaskRunner
from prefect.utilities.annotations import quote

from blocks.base import HostBlock
from blocks.registry import block_for
from catalog import attempts, outbox
from catalog.database import session_scope
from catalog.dispatching import NotRetrievedYet, plans
from catalog.on_demand import await_retrieval
from catalog.transfers import record_failure, set_flow_run
from tasks import publishing
from tasks.continental import continental_store
from tasks.delivery import Delivery
from tasks.runtime import runtime
from tasks.transfer import send_batch, send_file

#: A file this large gets a task run of its own.
LARGE_FILE_BYTES = 32 * 1024 * 1024

#: How long a dispatch waits for its mover's next claim before its flow run ends (seconds).
SLOT_IDLE_SECONDS = 10.0
#: How long a dispatch goes on taking claims, so no flow run grows without bound in the UI (seconds).
SLOT_LIFETIME_SECONDS = 300.0


class ClaimQueue:
    """The claims a mover has made that no dispatch has taken yet. Any of its dispatches waiting for
    work takes the oldest, so a claim never waits for one dispatch's flow run to be created (0.1 s to
    several seconds on a busy machine, or a failure while the Prefect API is down) while another
    dispatch is free; a dispatch that could not start leaves its claim to the others."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._claims: deque[list[int]] = deque()
        self._waiting = 0  # dispatches blocked in `take`
        self._open = True

    def put(self, claim: list[int]) -> None:
        with self._changed:
            self._claims.append(claim)
            self._changed.notify()

    @property
    def pending(self) -> int:
        """Claims waiting for a dispatch."""
        return len(self._claims)

    @property
    def waiting(self) -> int:
        """Dispatches waiting for a claim."""
        return self._waiting

    def take(self, slot: DispatchSlot, timeout: float) -> list[int] | None:
        """The oldest claim, waiting up to `timeout` seconds for one; None when none came or the queue
        closed. The claim is recorded as the slot's before the lock is released, so the mover knows
        whose it is even if the dispatch dies at once."""
        with self._changed:
            if self._open and not self._claims:
                self._waiting += 1
                try:
                    self._changed.wait_for(lambda: bool(self._claims) or not self._open, timeout=timeout)
                finally:
                    self._waiting -= 1
            slot.taken = self._claims.popleft() if self._open and self._claims else None
            return slot.taken

    def close(self) -> list[list[int]]:
        """The mover stops: waiting dispatches end at once, busy ones after their claim. The claims
        no dispatch took, for the mover to give back."""
        with self._changed:
            self._open = False
            left, self._claims = list(self._claims), deque()
            self._changed.notify_all()
            return left


class DispatchSlot:
    """One dispatch's place at its mover's `ClaimQueue`: the dispatch takes claims one after another
    and ends once none came for `idle` seconds, after `lifetime` seconds, or when the queue closes.
    `taken` is the claim it is sending (None once it asked for the next): what the mover gives back
    if the dispatch ends without sending it."""

    def __init__(
        self, queue: ClaimQueue, idle: float = SLOT_IDLE_SECONDS, lifetime: float = SLOT_LIFETIME_SECONDS
    ) -> None:
        self.queue, self._idle, self._ends_at = queue, idle, time.monotonic() + lifetime
        self.taken: list[int] | None = None

    def next_claim(self) -> list[int] | None:
        """The dispatch's next claim, or None when the slot ends."""
        if time.monotonic() >= self._ends_at:
            self.taken = None
            return None
        return self.queue.take(self, self._idle)


#: Set by a dispatch as soon as its flow run exists, for the mover that waits for it (`flows.mover`).
started_signal: contextvars.ContextVar[threading.Event | None] = contextvars.ContextVar(
    "dispatch_started", default=None
)
#: The slot through which a mover's dispatch takes its claims; None: the claim it was given only.
current_slot: contextvars.ContextVar[DispatchSlot | None] = contextvars.ContextVar("dispatch_slot", default=None)


def _deliveries(transfer_ids: list[int], mover: str) -> list[Delivery]:
    """Plan the claimed transfers; one that cannot be planned fails on its own with the reason."""
    rt = runtime()
    context = FlowRunContext.get()
    with session_scope(rt.engine) as session:
        outbox.claim_on_add(session, mover)
        if context and context.flow_run:
            set_flow_run(session, transfer_ids, str(context.flow_run.id))
        planned, unplannable = plans(session, transfer_ids)
        for transfer_id, error in unplannable.items():
            if isinstance(error, NotRetrievedYet):  # fetched on first use: this is the first use
                await_retrieval(session, transfer_id, by=mover)
                continue
            record_failure(session, transfer_id, error, host=None, by=mover)  # with its ERR line
    publishing.publish_added(rt.engine, rt.settings, mover, outbox.added(session))
    blocks: dict[str, HostBlock] = {}  # one block per host, shared by its files
    deliveries = []
    for p in planned:
        block = blocks.get(p.host.name) or blocks.setdefault(p.host.name, block_for(p.host))
        source = None
        if p.proxy is not None:
            try:
                source = continental_store(p.proxy, fall_back=True)
            except Exception as exc:  # noqa: BLE001 — the Data Store still has the file
                get_run_logger().warning("proxy host %s: sending from the Data Store: %s", p.proxy.name, exc)
        deliveries.append(
            Delivery(
                p.transfer_id,
                p.store_key,
                p.size,
                p.md5,
                block,
                block.join(p.remote_path),
                p.compression,
                p.interrupted_attempt_at,
                source,
                p.attempt,
            )
        )
    return deliveries


def _run_name() -> str:
    parameters = flow_run.parameters
    ids = parameters.get("transfer_ids") or []
    if not ids:  # a mover's dispatch: it takes its mover's claims as they come
        return f"dispatch {parameters.get('mover')}"
    shown = ", ".join(map(str, ids[:5])) + (", …" if len(ids) > 5 else "")
    return f"dispatch {parameters.get('mover')}: {len(ids)} transfer(s) [{shown}]"


@flow(
    name="dispatch",
    flow_run_name=_run_name,
    task_runner=ThreadPoolTaskRunner(max_workers=4),  # type: ignore[arg-type]
)
def dispatch(transfer_ids: list[int], mover: str) -> dict[str, int]:
    """Send the claimed transfers (a mover's dispatch gets none: it takes its mover's claims through
    its slot), and record every outcome; the run fails if any transfer failed."""
    if (started := started_signal.get()) is not None:
        started.set()
    slot = current_slot.get()
    summary = {"claims": 0, "claimed": 0, "planned": 0, "failed_tasks": 0}
    claim: list[int] | None = transfer_ids or (slot.next_claim() if slot is not None else None)
    while claim:
        planned, failed_tasks = _send(claim, mover)
        summary["claims"] += 1
        summary["claimed"] += len(claim)
        summary["planned"] += planned
        summary["failed_tasks"] += failed_tasks
        claim = slot.next_claim() if slot is not None else None
    get_run_logger().info("dispatch finished: %s", summary)
    if summary["failed_tasks"] or summary["planned"] < summary["claimed"]:
        raise RuntimeError(f"some transfers failed (their status and reason are in pds): {summary}")
    return summary


def _send(transfer_ids: list[int], mover: str) -> tuple[int, int]:
    """One claim as task runs: (files planned, task runs that failed)."""
    deliveries = _deliveries(transfer_ids, mover)
    small: dict[str, list[Delivery]] = defaultdict(list)
    futures: list[PrefectFuture[Any]] = []
    sent_by: dict[int, list[tuple[int, int | None]]] = {}  # task run index -> its attempts
    for delivery in deliveries:
        if delivery.size >= LARGE_FILE_BYTES:
            sent_by[len(futures)] = [(delivery.transfer_id, delivery.attempt)]
            futures.append(send_file.submit(delivery, mover))
        else:
            small[delivery.host.name].append(delivery)
    for batch in small.values():
        sent_by[len(futures)] = [(d.transfer_id, d.attempt) for d in batch]
        # quote(): Prefect would otherwise walk every Delivery (and its host block) of the batch
        # looking for futures to wait on (0.1–0.2 ms of CPU per file).
        futures.append(send_batch.submit(quote(batch), mover, len(batch)))  # type: ignore[call-overload]  # quote is unwrapped
    if futures:
        with session_scope(runtime().engine) as session:
            attempts.link_task_runs(session, {str(futures[i].task_run_id): ids for i, ids in sent_by.items()})
    wait(futures)
    return len(deliveries), sum(1 for f in futures if not f.state.is_completed())
