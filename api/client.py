"""The Python client of the pds API, for the `pds` command and for notebooks.

    from api.client import PdsClient
    pds = PdsClient.from_env()               # PDS_API_URL, PDS_USER/PDS_PASSWORD or PDS_TOKEN
    result = pds.push("forecast.grib", destination="site1", target="2026/forecast.grib")
    pds.wait_for_data_file(result["data_file_id"])
    run = pds.run_deployment("drain/drain")   # start a flow by deployment name and wait for it

It speaks HTTP with the standard library (a `pds` command starts in a fraction of the time httpx
needs to import), or through an `httpx.Client` handed in, so tests can hand in Litestar's TestClient.
"""

from __future__ import annotations

import base64
import json
import os
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode, urlsplit

if TYPE_CHECKING:
    import http.client

    import httpx

DEFAULT_URL = "http://127.0.0.1:8440"
#: A connection idle for longer is not reused for a streamed body (servers close idle connections after
#: a few seconds; uvicorn after 5).
STREAM_REUSE_SECONDS = 2.0
UPLOAD_CHUNK = 1024 * 1024


class ApiError(Exception):
    """The API refused a request (status and reason from its JSON error) or could not be reached."""

    def __init__(self, reason: str, status: int | None = None) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class _Answer:
    """Status, reason and body of an answer, from either transport (a plain class: `dataclasses`
    imports `inspect` and `ast`, a tenth of a short command's time)."""

    def __init__(self, status: int, reason: str, body: bytes) -> None:
        self.status, self.reason, self.body = status, reason, body

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def text(self) -> str:
        return self.body.decode(errors="replace")


def _json_bytes(value: Any) -> bytes:
    return json.dumps(value).encode()


def _query_value(value: Any) -> str:
    """As httpx writes query values: booleans in lower case, None as empty."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


class _Connection:
    """One keep-alive HTTP/1.1 connection, from the standard library.

    The `pds` command makes a few requests to one server and ends: importing httpx (and, through it,
    its own command-line module with click and rich) and building its client took about 0.25 s of a
    command that otherwise needs a tenth of that. Notebooks and tests that want httpx hand in a client.
    """

    def __init__(self, base_url: str, timeout: float) -> None:
        url = urlsplit(base_url)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ApiError(f"the API URL must be http(s)://host[:port], not {base_url!r}")
        self.https, self.host, self.port = url.scheme == "https", url.hostname, url.port
        self.prefix, self.timeout = url.path.rstrip("/"), timeout
        self._connection: http.client.HTTPConnection | None = None
        self._idle_since = 0.0

    def _connect(self) -> http.client.HTTPConnection:
        import http.client

        if self.https:
            return http.client.HTTPSConnection(self.host, self.port, timeout=self.timeout)
        return http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)

    def request(self, method: str, path: str, headers: dict[str, str], body: bytes | Iterable[bytes] | None) -> _Answer:
        import http.client

        streamed = not (body is None or isinstance(body, bytes))
        if streamed and self._connection is not None and time.monotonic() - self._idle_since > STREAM_REUSE_SECONDS:
            # A body read from an iterator cannot be sent again: rather than find out halfway through
            # that the server closed the idle connection (uvicorn does after 5 s), start afresh.
            self._connection.close()
            self._connection = None
        reused = self._connection is not None
        connection = self._connection or self._connect()
        self._connection = None
        try:
            connection.request(method, self.prefix + path, body=body, headers=headers)
            response = connection.getresponse()
            answer = _Answer(response.status, response.reason, response.read())
        except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
            connection.close()
            # A kept-alive connection the server closed while idle fails like this at once: send again on
            # a fresh one, unless a body (an iterator, perhaps half read) went out.
            if reused and not streamed:
                return self.request(method, path, headers, body)
            raise
        except (OSError, http.client.HTTPException):
            connection.close()
            raise
        if response.will_close:
            connection.close()
        else:
            self._connection, self._idle_since = connection, time.monotonic()
        return answer


class PdsClient:
    def __init__(
        self,
        base_url: str = DEFAULT_URL,
        *,
        user: str | None = None,
        password: str | None = None,
        token: str | None = None,
        http: httpx.Client | None = None,
        timeout: float = 600.0,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.headers = {"User-Agent": "pds"}
        if token:
            self.headers["Authorization"] = f"Bearer {token}"
        elif user:
            pair = f"{user}:{password or ''}".encode()
            self.headers["Authorization"] = f"Basic {base64.b64encode(pair).decode()}"
        self.http = http
        self._connection = None if http is not None else _Connection(self.base_url, timeout)

    @classmethod
    def from_env(cls, **kwargs: Any) -> PdsClient:
        return cls(
            os.environ.get("PDS_API_URL", DEFAULT_URL),
            user=os.environ.get("PDS_USER"),
            password=os.environ.get("PDS_PASSWORD"),
            token=os.environ.get("PDS_TOKEN"),
            **kwargs,
        )

    # --- plumbing ---

    def _send(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        json: Any = None,
        content: Iterable[bytes] | None = None,
        headers: dict[str, str] | None = None,
    ) -> _Answer:
        headers = self.headers | (headers or {})
        if self.http is not None:
            import httpx

            try:
                response = self.http.request(method, path, params=params, json=json, content=content, headers=headers)
            except httpx.TransportError as exc:
                raise ApiError(f"cannot reach pds at {self.base_url}: {exc}") from exc
            return _Answer(response.status_code, response.reason_phrase, response.content)
        assert self._connection is not None
        query = {k: _query_value(v) for k, v in (params or {}).items() if v is not None}
        target = path + ("?" + urlencode(query) if query else "")
        body: bytes | Iterable[bytes] | None = content
        if json is not None:
            body = _json_bytes(json)
            headers["Content-Type"] = "application/json"
        elif body is None and method in ("POST", "PUT", "PATCH"):
            body = b""
        try:
            return self._connection.request(method, target, headers, body)
        except OSError as exc:
            raise ApiError(f"cannot reach pds at {self.base_url}: {exc.strerror or exc}") from exc
        except Exception as exc:  # http.client's protocol errors
            raise ApiError(f"cannot reach pds at {self.base_url}: {type(exc).__name__} {exc}") from exc

    def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self._send(method, path, **kwargs)
        if response.status >= 400:
            try:
                reason = response.json().get("reason") or response.text
            except (ValueError, AttributeError):
                reason = response.text or response.reason
            if response.status == 401 and "Authorization" not in self.headers:
                reason += " (set PDS_USER and PDS_PASSWORD, or PDS_TOKEN)"
            raise ApiError(f"{response.status} {reason}", response.status)
        return response.json() if response.body else None

    # --- pushing ---

    def push(
        self,
        file: str | Path,
        destination: str,
        target: str | None = None,
        *,
        priority: int | None = None,
        standby: bool = False,
        if_exists: str = "add",
        progress: Callable[[int, int], None] | None = None,
        **metadata: Any,
    ) -> dict[str, Any]:
        """Upload a local file; returns once it is stored (data file id, checksums, transfers).

        `if_exists` says what to do when the destination already has the target: `add` (queue the new
        file beside it), `refuse`, `requeue` (replace it; it must exist) or `force` (replace it if it does).
        """
        from catalog.paths import clean_target

        path = Path(file)
        if path.is_dir():
            raise ApiError(f"{path} is a directory: push its files one by one (e.g. with a shell loop)")
        if not path.is_file():
            raise ApiError(f"{path}: no such file")
        target = clean_target(target or path.name)  # a client would silently drop '..' otherwise
        size = path.stat().st_size
        params: dict[str, Any] = {k: v for k, v in metadata.items() if v is not None}
        if priority is not None:
            params["priority"] = priority
        if standby:
            params["standby"] = "true"
        if if_exists != "add":
            params["if_exists"] = if_exists

        def body() -> Iterator[bytes]:
            sent = 0
            with path.open("rb") as f:
                while chunk := f.read(UPLOAD_CHUNK):
                    sent += len(chunk)
                    if progress:
                        progress(sent, size)
                    yield chunk

        url = f"/portal/{quote(destination, safe='')}/{quote(target)}"
        result: dict[str, Any] = self._request(
            "PUT", url, params=params, content=body(), headers={"Content-Length": str(size)}
        )
        return result

    # --- reading ---

    def transfer(self, transfer_id: int) -> dict[str, Any]:
        result: dict[str, Any] = self._request("GET", f"/transfers/{transfer_id}")
        return result

    def transfers(self, **filters: Any) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._request("GET", "/transfers", params=filters)
        return result

    def data_file(self, data_file_id: int) -> dict[str, Any]:
        result: dict[str, Any] = self._request("GET", f"/datafiles/{data_file_id}")
        return result

    def wait_for_data_file(self, data_file_id: int, timeout: float = 600, poll: float = 0.5) -> list[dict[str, Any]]:
        """Wait until every transfer of the data file is Done, Failed or Stopped; return them."""
        from catalog.statuses import FINAL

        deadline = time.monotonic() + timeout
        while True:
            transfers = self.transfers(data_file_id=data_file_id)
            if transfers and all(t["status"] in FINAL for t in transfers):
                return transfers
            if time.monotonic() > deadline:
                raise ApiError(
                    f"data file {data_file_id} not finished after {timeout} s: "
                    + ", ".join(f"{t['id']} {t['status']}" for t in transfers)
                )
            time.sleep(poll)

    def product_status(self, status: str, stream: str, **fields: Any) -> str:
        """Record a product as expected, started or completed (a PRS line); fields: type, time_base,
        time_step, schedule_time. Returns the line."""
        body = {"status": status, "stream": stream, **{k: v for k, v in fields.items() if v is not None}}
        return str(self._request("POST", "/products/status", json=body)["line"])

    def products(self, *, stream: str | None = None, late: bool = False, limit: int = 200) -> list[dict[str, Any]]:
        """Products' latest statuses, the most recently updated first (`late`: due, not completed)."""
        params: dict[str, Any] = {"limit": limit}
        if stream:
            params["stream"] = stream
        if late:
            params["late"] = "true"
        result: list[dict[str, Any]] = self._request("GET", "/products", params=params)
        return result

    # --- flows ---

    def run_deployment(
        self, name: str, parameters: dict[str, Any] | None = None, *, wait: bool = True, timeout: float = 600
    ) -> dict[str, Any]:
        """Start a flow run of a Prefect deployment ("flow/deployment", e.g. "drain/drain") on the Prefect
        server of PREFECT_API_URL; with `wait`, return once it is final and raise if it did not complete."""
        import asyncio
        from concurrent.futures import ThreadPoolExecutor

        from prefect.deployments.flow_runs import arun_deployment

        # An event loop of its own, in a thread: a notebook's loop is already running.
        start = arun_deployment(name, parameters=parameters or {}, timeout=timeout if wait else 0)
        with ThreadPoolExecutor(1) as pool:
            run = pool.submit(asyncio.run, start).result()
        state = run.state
        summary = {
            "id": str(run.id),
            "name": run.name,
            "state": state.type.value if state else None,
            "state_name": state.name if state else None,
        }
        if wait and (state is None or not state.is_completed()):
            final = state is not None and state.is_final()
            raise ApiError(
                f"flow run {run.name} ({run.id}) "
                + (f"ended {state.name}: {state.message}" if final and state else f"not finished after {timeout} s")
            )
        return summary

    # --- operations ---

    def operate(self, transfer_id: int, operation: str, **body: Any) -> dict[str, Any]:
        """requeue, stop, hold, release, priority (priority=N), schedule-now or extend (seconds=N)."""
        result: dict[str, Any] = self._request("POST", f"/transfers/{transfer_id}/{operation}", json=body)
        return result

    def hold_destination(self, name: str) -> dict[str, Any]:
        result: dict[str, Any] = self._request("POST", f"/destinations/{quote(name, safe='')}/hold")
        return result

    def restart_destination(self, name: str) -> dict[str, Any]:
        result: dict[str, Any] = self._request("POST", f"/destinations/{quote(name, safe='')}/restart")
        return result

    def destination_history(self, name: str) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._request("GET", f"/destinations/{quote(name, safe='')}/history")
        return result

    def update_destination(self, name: str, **settings: Any) -> dict[str, Any]:
        result: dict[str, Any] = self._request("PATCH", f"/destinations/{quote(name, safe='')}", json=settings)
        return result

    # --- configuration ---

    def create_destination(self, name: str, **settings: Any) -> dict[str, Any]:
        result: dict[str, Any] = self._request("POST", "/destinations", json={"name": name, **settings})
        return result

    def destinations(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._request("GET", "/destinations")
        return result

    def destination(self, name: str) -> dict[str, Any]:
        result: dict[str, Any] = self._request("GET", f"/destinations/{quote(name, safe='')}")
        return result

    def create_host(self, name: str, protocol: str, **fields: Any) -> dict[str, Any]:
        result: dict[str, Any] = self._request("POST", "/hosts", json={"name": name, "protocol": protocol, **fields})
        return result

    def update_host(self, name: str, **changes: Any) -> dict[str, Any]:
        """Change a host's fields; `options` are merged (None removes one)."""
        result: dict[str, Any] = self._request("PATCH", f"/hosts/{quote(name, safe='')}", json=changes)
        return result

    def delete_host(self, name: str) -> None:
        self._request("DELETE", f"/hosts/{quote(name, safe='')}")

    def delete_destination(self, name: str, *, force: bool = False) -> dict[str, Any]:
        """Remove a destination with its transfers; `force` stops its waiting transfers first."""
        params = {"force": "true"} if force else None
        result: dict[str, Any] = self._request("DELETE", f"/destinations/{quote(name, safe='')}", params=params)
        return result

    def hosts(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._request("GET", "/hosts")
        return result

    def attach_host(
        self, destination: str, host: str, kind: str = "dissemination", rank: int | None = None
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"host": host, "kind": kind}
        if rank is not None:
            body["rank"] = rank
        result: dict[str, Any] = self._request("POST", f"/destinations/{quote(destination, safe='')}/hosts", json=body)
        return result

    def detach_host(self, destination: str, host: str, kind: str = "dissemination") -> dict[str, Any]:
        path = f"/destinations/{quote(destination, safe='')}/hosts/{quote(host, safe='')}"
        result: dict[str, Any] = self._request("DELETE", path, params={"kind": kind})
        return result

    def add_alias(self, destination: str, alias: str, **fields: Any) -> dict[str, Any]:
        """fields: pattern, replacement, priority, delay_seconds."""
        body = {"alias": alias, **{k: v for k, v in fields.items() if v is not None}}
        result: dict[str, Any] = self._request(
            "POST", f"/destinations/{quote(destination, safe='')}/aliases", json=body
        )
        return result

    def publish(self, destination: str, collection: str, **fields: Any) -> dict[str, Any]:
        """Publish a destination's data files as STAC Items of `collection` (item_id, extractor, enabled)."""
        body = {"collection": collection} | {k: v for k, v in fields.items() if v is not None}
        result: dict[str, Any] = self._request("PUT", f"/stac/publications/{destination}", json=body)
        return result

    def publication(self, destination: str) -> dict[str, Any]:
        result: dict[str, Any] = self._request("GET", f"/stac/publications/{destination}")
        return result

    def harvest(self, destination: str) -> dict[str, Any]:
        """Publish every data file already queued for a published destination."""
        result: dict[str, Any] = self._request("POST", f"/stac/publications/{destination}/harvest")
        return result

    # --- acquisition ---

    def acquisition(self, host: str) -> dict[str, Any]:
        """An acquisition host's listing rules, discovery schedule and last pass."""
        result: dict[str, Any] = self._request("GET", f"/acquisition/{quote(host, safe='')}")
        return result

    def add_listing_rule(self, host: str, destination: str, **rule: Any) -> dict[str, Any]:
        """rule: directory, pattern, wildcard, min_size, max_size, min_age_seconds, max_age_seconds,
        max_depth, target_prefix, dedupe_by_time, requeue_on_update, no_retrieval, requeue_on_failure,
        standby, priority, lifetime_seconds."""
        body = {"destination": destination, **{k: v for k, v in rule.items() if v is not None}}
        result: dict[str, Any] = self._request("POST", f"/acquisition/{quote(host, safe='')}/rules", json=body)
        return result

    def set_discovery_interval(self, host: str, seconds: int) -> dict[str, Any]:
        result: dict[str, Any] = self._request(
            "PATCH", f"/acquisition/{quote(host, safe='')}/schedule", json={"interval_seconds": seconds}
        )
        return result

    def discover_now(self, host: str) -> dict[str, Any]:
        """Ask for a discovery pass of `host` now (the acquisition scheduler starts it)."""
        result: dict[str, Any] = self._request("POST", f"/acquisition/{quote(host, safe='')}/run")
        return result

    def register(
        self, destination: str, host: str, group: str, files: list[dict[str, Any]], **options: Any
    ) -> dict[str, Any]:
        """Register files ({"path", "target", "size"}) for the movers to fetch from `host`; returns
        at once with their data file ids. options: priority, standby, requeue_on_failure."""
        body = {"destination": destination, "host": host, "group": group, "files": files, **options}
        result: dict[str, Any] = self._request("POST", "/register", json=body)
        return result

    def group(self, group: str) -> dict[str, Any]:
        result: dict[str, Any] = self._request("GET", f"/groups/{quote(group, safe='')}")
        return result

    def wait_for_group(
        self,
        group: str,
        timeout: float = 3600,
        poll: float = 0.5,
        progress: Callable[[dict[str, Any]], None] | None = None,
    ) -> dict[str, Any]:
        """Wait until no file of the group waits for retrieval; return the group's progress."""
        deadline = time.monotonic() + timeout
        while True:
            state = self.group(group)
            if progress:
                progress(state)
            if state["complete"]:
                return state
            if time.monotonic() > deadline:
                raise ApiError(f"group {group} not retrieved after {timeout} s: {state['waiting']} file(s) waiting")
            time.sleep(poll)

    def new_token(self) -> str:
        return str(self._request("POST", "/tokens")["token"])

    # --- data users of the portal (administrators) ---

    def create_data_user(self, login: str, password: str, **fields: Any) -> dict[str, Any]:
        result: dict[str, Any] = self._request(
            "POST", "/datausers", json={"login": login, "password": password, **fields}
        )
        return result

    def data_users(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._request("GET", "/datausers")
        return result

    def data_user(self, login: str) -> dict[str, Any]:
        result: dict[str, Any] = self._request("GET", f"/datausers/{quote(login, safe='')}")
        return result

    def update_data_user(self, login: str, **changes: Any) -> dict[str, Any]:
        result: dict[str, Any] = self._request("PATCH", f"/datausers/{quote(login, safe='')}", json=changes)
        return result

    def delete_data_user(self, login: str) -> None:
        self._request("DELETE", f"/datausers/{quote(login, safe='')}")

    def grant(self, login: str, operations: str, *, destination: str | None = None, policy: str | None = None) -> Any:
        kind, name = ("destinations", destination) if destination else ("policies", policy)
        return self._request(
            "PUT",
            f"/datausers/{quote(login, safe='')}/{kind}/{quote(name or '', safe='')}",
            json={"operations": operations},
        )

    def revoke(self, login: str, destination: str) -> None:
        self._request("DELETE", f"/datausers/{quote(login, safe='')}/destinations/{quote(destination, safe='')}")

    def add_ssh_key(self, login: str, public_key: str) -> dict[str, Any]:
        result: dict[str, Any] = self._request(
            "POST", f"/datausers/{quote(login, safe='')}/keys", json={"public_key": public_key}
        )
        return result

    def new_s3_secret(self, login: str) -> dict[str, str]:
        result: dict[str, str] = self._request("POST", f"/datausers/{quote(login, safe='')}/s3secret")
        return result

    def create_policy(self, name: str, destinations: list[str], comment: str = "") -> dict[str, Any]:
        body = {"name": name, "destinations": destinations, "comment": comment}
        result: dict[str, Any] = self._request("POST", "/policies", json=body)
        return result

    def policies(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._request("GET", "/policies")
        return result

    # --- the data proxy ----------------------------------------------------------------------

    def register_proxied_asset(
        self, collection: str, item: str, asset: str, upstream_href: str, **fields: Any
    ) -> dict[str, Any]:
        body = {"collection": collection, "item": item, "asset": asset, "upstream_href": upstream_href, **fields}
        result: dict[str, Any] = self._request("POST", "/proxied-assets", json=body)
        return result

    def proxied_assets(self, collection: str | None = None) -> list[dict[str, Any]]:
        params = {"collection": collection} if collection else None
        result: list[dict[str, Any]] = self._request("GET", "/proxied-assets", params=params)
        return result

    def cache_proxied_asset(self, collection: str, item: str, asset: str, path: str) -> dict[str, Any]:
        url = "/proxied-assets/" + "/".join(quote(part, safe="") for part in (collection, item, asset)) + "/cache"
        result: dict[str, Any] = self._request("POST", url, json={"path": path})
        return result

    def proxy_policy(self, collection: str) -> dict[str, Any]:
        result: dict[str, Any] = self._request("GET", f"/proxied-collections/{quote(collection, safe='')}")
        return result

    def set_proxy_policy(self, collection: str, **policy: Any) -> dict[str, Any]:
        result: dict[str, Any] = self._request("PUT", f"/proxied-collections/{quote(collection, safe='')}", json=policy)
        return result

    def set_qos_quota(self, subject: str, **limits: Any) -> dict[str, Any]:
        result: dict[str, Any] = self._request("PUT", f"/qos-quotas/{quote(subject, safe='')}", json=limits)
        return result

    def add_qos_member(self, group: str, login: str) -> dict[str, Any]:
        path = f"/qos-groups/{quote(group, safe='')}/members/{quote(login, safe='')}"
        result: dict[str, Any] = self._request("POST", path)
        return result
