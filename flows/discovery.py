"""Discovery: one pass over an acquisition host's listing rules (a `discover` task run per rule), and
the acquisition scheduler that starts a pass for each host when its schedule (or "run now") is due.

Start a pass from a notebook with
`prefect.deployments.run_deployment("discovery/discovery", parameters={"host": "provider-a"})`,
from `pds acquisition run HOST`, or the API's `POST /acquisition/{host}/run` (both mark the host
due; the scheduler starts the pass within `acquisition_poll_seconds`).
"""

from __future__ import annotations

import argparse
import signal
import threading
import time
from types import FrameType

from prefect import flow, get_run_logger

from catalog.acquisition import acquisition_host, due_hosts, list_rules, pass_finished, pass_started
from catalog.database import session_scope
from tasks.discovery import discover_rule_task
from tasks.runtime import runtime

_stop = threading.Event()


def request_stop(signum: int = 0, frame: FrameType | None = None) -> None:
    _stop.set()


@flow(name="discovery", flow_run_name="discovery {host}")
def discovery(host: str) -> dict[str, int]:
    """List every active rule of `host` and register what is new; the run fails if a rule failed."""
    rt, logger = runtime(), get_run_logger()
    with session_scope(rt.engine) as session:
        source = acquisition_host(session, host)
        rules = list_rules(session, host, active_only=True)
        pass_started(session, host)
    registered = listed = 0
    errors = []
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
    if errors:
        raise RuntimeError(f"discovery of {host} failed for {len(errors)} rule(s): {'; '.join(errors)}")
    return {"rules": len(rules), "listed": listed, "registered": registered}


@flow(name="acquisition-scheduler", log_prints=True)
def acquisition_scheduler(max_runtime_seconds: float = 0, stop_when_idle: bool = False) -> dict[str, int]:
    """Run a discovery pass (as a subflow) for each acquisition host whose time has come."""
    rt, logger = runtime(), get_run_logger()
    max_runtime = max_runtime_seconds or rt.settings.mover_max_runtime_seconds
    started = time.monotonic()
    passes = failed = 0
    while not _stop.is_set() and time.monotonic() - started < max_runtime:
        with session_scope(rt.engine) as session:
            hosts = due_hosts(session)
        for host in hosts:
            state = discovery(host, return_state=True)
            passes += 1
            if not state.is_completed():
                failed += 1
                logger.warning("discovery of %s failed: %s", host, state.message)
        if not hosts and stop_when_idle:
            break
        time.sleep(rt.settings.acquisition_poll_seconds)
    return {"passes": passes, "failed": failed}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m flows.discovery", description=__doc__.splitlines()[0])
    parser.add_argument("--host", help="run one discovery pass of this host and end")
    parser.add_argument("--max-runtime", type=float, default=0, help="seconds before the scheduler ends")
    args = parser.parse_args(argv)
    if args.host:
        discovery(args.host)
        return
    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    acquisition_scheduler(max_runtime_seconds=args.max_runtime)


if __name__ == "__main__":
    main()
