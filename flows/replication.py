"""Replication: copy every stored data file to each replica store location (PDS_REPLICAS), verified
by MD5, a CPY line each; a batch of files is one task run. Scheduled by the `replication` deployment,
or run once with `python -m flows.replication`."""

from __future__ import annotations

from prefect import flow, get_run_logger

from catalog.database import session_scope
from catalog.replication import missing_replicas
from tasks.replication import replicate_batch
from tasks.runtime import runtime

BATCH = 100


@flow(name="replication", log_prints=True)
def replication() -> dict[str, int]:
    """One pass: every data file not yet held by a replica location is copied there."""
    rt, logger = runtime(), get_run_logger()
    totals = {"replicated": 0, "failed": 0}
    for index, replica in enumerate(rt.store.replicas):
        location, after = replica.location(), 0
        while True:
            with session_scope(rt.engine) as session:
                items = missing_replicas(session, location, limit=BATCH, after_id=after)
            if not items:
                break
            after = items[-1].data_file_id  # failed copies wait for the next pass, not this loop
            outcome = replicate_batch(items, index, location, len(items), "replication")
            for key in totals:
                totals[key] += outcome[key]
    logger.info("replication: %s", totals)
    if totals["failed"]:
        raise RuntimeError(f"{totals['failed']} copies failed (CPY lines give the reasons): {totals}")
    return totals


if __name__ == "__main__":
    print(replication())  # noqa: T201
