"""`drain`: a mover run that ends when nothing is ready — "run now" from a notebook or the monitor.

It runs under a name of its own (`drain-<run id>`), so it never takes the transfers of a long-lived
mover for its own when it starts, and it shares the queue with the other movers (claims are safe
between any number of them).
"""

from __future__ import annotations

from prefect import flow
from prefect.runtime import flow_run

from flows.mover import mover


@flow(name="drain", log_prints=True)
def drain(max_runtime_seconds: float = 3600) -> dict[str, int]:
    """Deliver every transfer ready now (and any that become ready meanwhile), then end."""
    name = f"drain-{str(flow_run.get_id() or 'local')[:8]}"
    return mover(name=name, max_runtime_seconds=max_runtime_seconds, stop_when_idle=True)
