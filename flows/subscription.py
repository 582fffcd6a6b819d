"""Subscriptions: a long-lived flow run holding one MQTT subscription per `mqtt` listing rule; each
message registers the file it names (Preset), which the retriever then fetches. Subscriptions are
durable (`tasks.subscription`): what is published while this run restarts is delivered to the next.

Rules added or removed while it runs are picked up within `RELOAD_SECONDS`. Run it with
`python -m flows.subscription` or as the `subscriptions` deployment in prefect.yaml.
"""

from __future__ import annotations

import argparse
import threading
import time
from types import FrameType

from prefect import flow, get_run_logger

from flows.stopping import keep_stop_handler, stop_on_signals
from tasks.runtime import runtime
from tasks.subscription import Subscription, subscription_rules

RELOAD_SECONDS = 10.0

_stop = threading.Event()


def request_stop(signum: int = 0, frame: FrameType | None = None) -> None:
    _stop.set()


@flow(name="subscriptions", log_prints=True)
def subscriptions(max_runtime_seconds: float = 0) -> dict[str, int]:
    """Subscribe for every active `mqtt` rule until `max_runtime_seconds` pass or a stop is asked."""
    keep_stop_handler()  # SIGTERM stops it like Ctrl-C when started from its command
    rt, logger = runtime(), get_run_logger()
    max_runtime = max_runtime_seconds or rt.settings.mover_max_runtime_seconds
    running: dict[int, Subscription] = {}
    started = time.monotonic()
    try:
        while not _stop.is_set() and time.monotonic() - started < max_runtime:
            wanted = {rule.id: (host, rule) for host, rule in subscription_rules(rt.engine) if rule.id is not None}
            for rule_id in set(running) - set(wanted):
                running.pop(rule_id).stop()
            for rule_id, (host, rule) in wanted.items():
                if rule_id in running:
                    continue
                try:
                    subscription = Subscription(
                        rt.engine,
                        host,
                        rule,
                        installation=rt.settings.resolved_installation_name(),
                        session_expiry=rt.settings.subscription_session_expiry_seconds,
                    )
                    subscription.start()
                except Exception as exc:  # noqa: BLE001 — one unreachable broker must not stop the others
                    logger.warning("rule %s on host %s cannot subscribe: %s", rule_id, host.name, exc)
                    continue
                running[rule_id] = subscription
                logger.info(
                    "rule %s subscribed to %s on %s as %s",
                    rule_id,
                    rule.directory,
                    subscription.broker.safe_url,
                    subscription.client_id,
                )
            _stop.wait(min(RELOAD_SECONDS, max(0.0, max_runtime - (time.monotonic() - started))))
    finally:
        for subscription in running.values():
            subscription.stop()
    registered = sum(s.registered for s in running.values())
    return {"subscriptions": len(running), "registered": registered}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m flows.subscription", description=__doc__.splitlines()[0])
    parser.add_argument("--max-runtime", type=float, default=0, help="seconds before the run ends")
    args = parser.parse_args(argv)
    stop_on_signals(request_stop)
    subscriptions(max_runtime_seconds=args.max_runtime)


if __name__ == "__main__":
    main()
