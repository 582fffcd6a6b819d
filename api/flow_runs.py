"""The few Prefect REST calls `pds up` makes about its long-lived flow runs, over the standard library.

`pds up` must talk while Prefect's client (≈1–2 s to import) would still be loading, so it speaks the
REST API directly: is a flow's run running yet, and which runs did an earlier, killed instance or a
forced stop leave behind (they would show Running in the Prefect UI for ever).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from datetime import UTC, datetime
from typing import Any

#: The flows `pds up` runs as long-lived processes (flow names, as in the Prefect UI).
LONG_LIVED = ("mover", "proxy-fetcher", "retrieval", "acquisition-scheduler", "subscriptions")
#: Not final: what a run left behind by a dead process is stuck in.
UNFINISHED = ["RUNNING", "PENDING", "CANCELLING", "PAUSED"]

# No proxy from the environment: these are calls to servers on this machine.
_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def call(url: str, body: Any = None, *, timeout: float = 2.0) -> Any:
    """GET (or POST `body` as JSON) and return the decoded answer; None when it fails in any way."""
    data = None if body is None else json.dumps(body).encode()
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"not an HTTP URL: {url}")
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})  # noqa: S310
    try:
        with _opener.open(request, timeout=timeout) as response:  # noqa: S310 — http(s) only, checked above
            payload = response.read()
    except (OSError, urllib.error.URLError, ValueError):
        return None
    try:
        return json.loads(payload) if payload else True
    except ValueError:
        return None


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat()


#: For the calls whose answer matters once (sweeping, ending runs): a Prefect server that has just
#: started on a busy machine may take seconds to answer its first queries.
PATIENT = 20.0


def flow_runs(
    api: str,
    flows: list[str] | tuple[str, ...],
    states: list[str],
    *,
    started_after: float | None = None,
    timeout: float = 2.0,
) -> list[dict[str, Any]]:
    """Runs of the named flows in one of `states` (state types such as RUNNING)."""
    runs_filter: dict[str, Any] = {"state": {"type": {"any_": states}}}
    if started_after is not None:
        runs_filter["start_time"] = {"after_": _iso(started_after)}
    body = {"flows": {"name": {"any_": list(flows)}}, "flow_runs": runs_filter, "limit": 200}
    answer = call(f"{api}/flow_runs/filter", body, timeout=timeout)
    return answer if isinstance(answer, list) else []


def running_since(api: str, started_after: dict[str, float]) -> set[str]:
    """Which of the flows (name → epoch seconds) have a run Running that started after their time.

    One query for all of them, as `pds up` asks every second while it starts: each query costs the
    Prefect server CPU that, on two cores, the processes starting around it are short of.
    """
    if not started_after:
        return set()
    runs = flow_runs(api, list(started_after), ["RUNNING"], started_after=min(started_after.values()))
    if not runs:
        return set()
    flows = call(f"{api}/flows/filter", {"flows": {"name": {"any_": list(started_after)}}})
    names = {f["id"]: f["name"] for f in flows} if isinstance(flows, list) else {}
    running = set()
    for run in runs:
        name = names.get(run.get("flow_id"))
        started = run.get("start_time")
        if name in started_after and started and datetime.fromisoformat(started).timestamp() >= started_after[name]:
            running.add(name)
    return running


def end_runs(api: str, runs: list[dict[str, Any]], state_type: str, message: str) -> list[str]:
    """Force each run into a final state (CANCELLED or CRASHED) with `message`; the names it ended."""
    name = {"CANCELLED": "Cancelled", "CRASHED": "Crashed"}[state_type]
    ended = []
    for run in runs:
        body = {"state": {"type": state_type, "name": name, "message": message}, "force": True}
        if call(f"{api}/flow_runs/{run['id']}/set_state", body, timeout=PATIENT) is not None:
            ended.append(str(run.get("name", run["id"])))
    return ended
