"""One dispatch: execute a batch of claimed transfers as task runs, visible in the Prefect UI.

A large file is one task run; small files to the same host go in one batch task over one connection,
so orchestration stays a small fraction of the work.
"""

from __future__ import annotations

import contextvars
import threading
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
from catalog import outbox
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

#: Set by a dispatch as soon as its flow run exists, for the mover that waits for it (`flows.mover`).
started_signal: contextvars.ContextVar[threading.Event | None] = contextvars.ContextVar(
    "dispatch_started", default=None
)


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
    return f"dispatch {parameters.get('mover')}: {len(ids)} transfer(s) [{shown}]"


@flow(
    name="dispatch",
    flow_run_name=_run_name,
    task_runner=ThreadPoolTaskRunner(max_workers=4),  # type: ignore[arg-type]
)
def dispatch(transfer_ids: list[int], mover: str) -> dict[str, int]:
    """Send the claimed transfers and record every outcome; the run fails if any transfer failed."""
    if (started := started_signal.get()) is not None:
        started.set()
    logger = get_run_logger()
    deliveries = _deliveries(transfer_ids, mover)
    small: dict[str, list[Delivery]] = defaultdict(list)
    futures: list[PrefectFuture[Any]] = []
    for delivery in deliveries:
        if delivery.size >= LARGE_FILE_BYTES:
            futures.append(send_file.submit(delivery, mover))
        else:
            small[delivery.host.name].append(delivery)
    for batch in small.values():
        # quote(): Prefect would otherwise walk every Delivery (and its host block) of the batch
        # looking for futures to wait on (0.1–0.2 ms of CPU per file).
        futures.append(send_batch.submit(quote(batch), mover, len(batch)))  # type: ignore[call-overload]  # quote is unwrapped
    wait(futures)
    failed_tasks = [f for f in futures if not f.state.is_completed()]
    summary = {"claimed": len(transfer_ids), "planned": len(deliveries), "failed_tasks": len(failed_tasks)}
    logger.info("dispatch finished: %s", summary)
    if failed_tasks or len(deliveries) < len(transfer_ids):
        raise RuntimeError(f"some transfers failed (their status and reason are in pds): {summary}")
    return summary
