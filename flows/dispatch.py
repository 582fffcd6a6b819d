"""One dispatch: execute claimed transfers as task runs, visible in the Prefect UI.

A large file is one task run; small files to the same host go in one batch task over one connection,
so orchestration stays a small fraction of the work. A dispatch started by a mover holds a
`DispatchSlot`: after its first claim it takes the mover's next claims, one after another, until it has
been idle for a while. Creating a flow run costs the Prefect API from 0.1 s to 3 s on a busy machine;
paid once per slot instead of once per claim, a pushed file starts moving within the mover's poll
interval. Each claim's files are task runs of their own, and each attempt names its task run.
"""

from __future__ import annotations

import contextvars
import threading
import time
from collections import defaultdict
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


class DispatchSlot:
    """The hand-off between a mover and one running dispatch: the mover offers a claim to a dispatch
    that waits for work; the dispatch ends once nothing was offered for `idle` seconds, after
    `lifetime` seconds, or when the mover closes the slot."""

    def __init__(self, idle: float = SLOT_IDLE_SECONDS, lifetime: float = SLOT_LIFETIME_SECONDS) -> None:
        self._changed = threading.Condition()
        self._claim: list[int] | None = None
        self._open = True
        self._waiting = False
        self._idle, self._ends_at = idle, time.monotonic() + lifetime

    @property
    def waiting(self) -> bool:
        """Whether the dispatch waits for work (a hint: `offer` is the checked hand-off)."""
        return self._waiting

    def offer(self, transfer_ids: list[int]) -> bool:
        """Give a claim to the waiting dispatch; False when it is not waiting (busy or ending)."""
        with self._changed:
            if not (self._open and self._waiting):
                return False
            self._claim, self._waiting = transfer_ids, False
            self._changed.notify()
            return True

    def next_claim(self) -> list[int] | None:
        """The dispatch's next claim, or None when the slot ends (no claim may be offered after)."""
        with self._changed:
            if self._open and time.monotonic() < self._ends_at:
                self._waiting = True
                self._changed.wait_for(lambda: self._claim is not None or not self._open, timeout=self._idle)
            claim, self._claim = self._claim, None
            self._waiting = False
            if claim is None:
                self._open = False
            return claim

    def close(self) -> None:
        """The mover stops: a waiting dispatch ends at once."""
        with self._changed:
            self._open = False
            self._changed.notify()


#: Set by a dispatch as soon as its flow run exists, for the mover that waits for it (`flows.mover`).
started_signal: contextvars.ContextVar[threading.Event | None] = contextvars.ContextVar(
    "dispatch_started", default=None
)
#: The slot through which a mover's dispatch takes further claims; None: the first claim only.
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
    shown = ", ".join(map(str, ids[:5])) + (", …" if len(ids) > 5 else "")
    return f"dispatch {parameters.get('mover')}: {len(ids)} transfer(s) [{shown}] and what follows"


@flow(
    name="dispatch",
    flow_run_name=_run_name,
    task_runner=ThreadPoolTaskRunner(max_workers=4),  # type: ignore[arg-type]
)
def dispatch(transfer_ids: list[int], mover: str) -> dict[str, int]:
    """Send the claimed transfers, and the further claims its slot hands over, and record every
    outcome; the run fails if any transfer failed."""
    if (started := started_signal.get()) is not None:
        started.set()
    slot = current_slot.get()
    summary = {"claims": 0, "claimed": 0, "planned": 0, "failed_tasks": 0}
    claim: list[int] | None = transfer_ids
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
    sent_by: dict[int, list[int]] = {}  # task run index -> its transfers
    for delivery in deliveries:
        if delivery.size >= LARGE_FILE_BYTES:
            sent_by[len(futures)] = [delivery.transfer_id]
            futures.append(send_file.submit(delivery, mover))
        else:
            small[delivery.host.name].append(delivery)
    for batch in small.values():
        sent_by[len(futures)] = [d.transfer_id for d in batch]
        # quote(): Prefect would otherwise walk every Delivery (and its host block) of the batch
        # looking for futures to wait on (0.1–0.2 ms of CPU per file).
        futures.append(send_batch.submit(quote(batch), mover, len(batch)))  # type: ignore[call-overload]  # quote is unwrapped
    if futures:
        with session_scope(runtime().engine) as session:
            attempts.link_task_runs(session, {str(futures[i].task_run_id): ids for i, ids in sent_by.items()})
    wait(futures)
    return len(deliveries), sum(1 for f in futures if not f.state.is_completed())
