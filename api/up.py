"""`pds up`: the whole system on one machine, on its embedded default.

Starts a real Prefect server (SQLite under the data directory), the API, one mover, the proxy fetcher,
the retriever, the acquisition scheduler, the MQTT subscriptions and the portal's FTP and SFTP servers,
each as a child process with its log under `<data_dir>/logs/`.

- One instance per data directory: an exclusive lock on `<data_dir>/run/pds-up.lock`, and every port
  checked free, before anything starts. A second mover under the same name would take the first one's
  transfers in flight for interrupted ones and send them again while the first is still writing.
- It says what is ready as it becomes ready. The Prefect server starts first, then the API and the
  mover, then the rest (see `_next_parts` for why); nothing waits for the deployments to be registered.
- Whatever kills it, its children die too (their own process groups, `PR_SET_PDEATHSIG`); any child
  that dies while it runs is started again, with a growing pause if it keeps dying at once.
- Ctrl-C or SIGTERM stops it cleanly: the long-lived flows end their runs (Completed in Prefect), a
  mover with transfers in flight is waited for up to `stop_grace_seconds` while it says which and how
  far; a second Ctrl-C interrupts them at once (their runs end Cancelled; the transfers are sent again
  at the next start).
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import sys
import time
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from api import flow_runs
from api.supervision import AlreadyRunning, Child, InstanceLock, ports_in_use

if TYPE_CHECKING:
    import sqlalchemy as sa

    from catalog.settings import Settings

#: How long servers (API, portals, Prefect) get to stop before they are killed.
SERVER_STOP_SECONDS = 10.0
#: How long the whole start may take before `pds up` gives up (a loaded machine, a first migration).
START_TIMEOUT_SECONDS = 300.0
#: How often, while stopping, `pds up` says which transfers it still waits for.
PROGRESS_EVERY_SECONDS = 5.0
POLL_SECONDS = 0.25

#: The long-lived flows: (child name, module, Prefect flow name).
FLOWS = (
    ("mover", "flows.mover", "mover"),
    ("proxy-fetcher", "flows.proxy_fetch", "proxy-fetcher"),
    ("retriever", "flows.retrieval", "retrieval"),
    ("acquisition-scheduler", "flows.discovery", "acquisition-scheduler"),
    ("subscriptions", "flows.subscription", "subscriptions"),
)


class StartFailed(Exception):
    """A part could not start; the message says which and where its log is."""


def portal_addresses(settings: Settings) -> list[str]:
    api = settings.resolved_api_url()
    scheme = "HTTPS" if api.startswith("https:") else "HTTP"
    lines = [f"Portal     {api}/portal ({scheme}), {api}/s3 (S3)"]
    if settings.portal_ftp_port:
        tls = " (explicit FTPS)" if settings.portal_tls_certificate else ""
        lines.append(f"Portal     ftp://{settings.portal_host}:{settings.portal_ftp_port}{tls}")
    if settings.portal_sftp_port:
        lines.append(f"Portal     sftp://{settings.portal_host}:{settings.portal_sftp_port}")
    return lines


def _tcp_answers(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


class EmbeddedStack:
    def __init__(self, settings: Settings, root: Path, prefect_api_url: str | None) -> None:
        self.settings, self.root = settings, root
        self.logs, self.run_dir = root / "logs", root / "run"
        self.own_prefect = not prefect_api_url
        self.prefect_home = root / "prefect"
        self.prefect_api = prefect_api_url or f"http://127.0.0.1:{settings.prefect_port}/api"
        self.api_url = settings.resolved_api_url()
        # /health answers with it, so a check answered by another program (or another stack) never
        # counts as this API being ready.
        self.instance = secrets.token_hex(8)
        self.began = time.monotonic()
        self.began_wall = time.time()
        self.signals = 0
        self.children: dict[str, Child] = {}
        self.flow_names: dict[str, str] = {}
        self.engine: sa.Engine | None = None
        self._running_flows: set[str] = set()
        self._flows_checked = 0.0

    # --- children ---------------------------------------------------------------------------------

    def _env(self) -> dict[str, str]:
        env = dict(os.environ) | {"PYTHONUNBUFFERED": "1", "PDS_INSTANCE_ID": self.instance}
        env["PREFECT_API_URL"] = self.prefect_api
        env.setdefault("PREFECT_HOME", str(self.prefect_home))
        return env

    def _child(
        self,
        name: str,
        command: list[str],
        *,
        env: dict[str, str] | None = None,
        stop_signal: int = signal.SIGTERM,
        death_signal: int = signal.SIGTERM,
    ) -> Child:
        log = self.logs / f"{name}.log"
        child = Child(name, command, env or self._env(), log, self.run_dir, stop_signal, death_signal)
        self.children[name] = child
        return child

    def _prefect_child(self) -> Child:
        self.prefect_home.mkdir(exist_ok=True)
        env = self._env() | {
            "PREFECT_HOME": str(self.prefect_home),
            "PREFECT_API_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{self.prefect_home / 'prefect.db'}",
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        }
        env.pop("PREFECT_API_URL", None)
        port = str(self.settings.prefect_port)
        command = [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", port]
        return self._child("prefect", command, env=env)

    def _start_flows(self, names: list[str]) -> None:
        for name, module, flow_name in FLOWS:
            if name not in names:
                continue
            # SIGINT (Ctrl-C; their commands treat SIGTERM the same, see `flows.stopping`) lets the run
            # finish its work and end Completed. If `pds up` dies, SIGKILL:
            # the lock is free at that moment and a new mover must never overlap one still writing.
            child = self._child(
                name, [sys.executable, "-m", module], stop_signal=signal.SIGINT, death_signal=signal.SIGKILL
            )
            self.flow_names[name] = flow_name
            child.start()

    def _next_parts(self, ready: Child) -> None:
        """What may start now that `ready` is: the API and the mover once the Prefect server answers, the
        portal servers once the API does, the other flows once the mover runs, the deployments once
        every flow runs. On two cores each of these processes spends seconds of CPU starting (importing
        Prefect): started together with the Prefect server, the API and the mover were measured to be
        ready later, not sooner (tests/benchmarks/startup.py); registering the deployments (`prefect
        deploy`) costs the most, and nothing needs it to run."""
        if ready.name == "prefect":
            self.sweep_dead_runs()
            self._child("api", [sys.executable, "-m", "api"]).start()
            self._start_flows(["mover"])
        elif ready.name == "api":
            for name, module, port in (
                ("portal-ftp", "api.portal_ftp", self.settings.portal_ftp_port),
                ("portal-sftp", "api.portal_sftp", self.settings.portal_sftp_port),
            ):
                if port:
                    self._child(name, [sys.executable, "-m", module]).start()
        elif ready.name == "mover" and len(self.flow_names) == 1:
            self._start_flows([name for name, _, _ in FLOWS if name != "mover"])
        flows = [self.children[name] for name in self.flow_names]
        if len(flows) == len(FLOWS) and all(c.ready for c in flows) and "deployments" not in self.children:
            self._child("deployments", [sys.executable, "-m", "api.deployments", "--pause-schedules"]).start()

    def _start_worker(self) -> None:
        prefect = str(Path(sys.executable).with_name("prefect"))
        env = self._env() | {"PREFECT_WORKER_QUERY_SECONDS": "2"}
        self._child("worker", [prefect, "worker", "start", "--pool", "pds-movers"], env=env).start()

    # --- talking ----------------------------------------------------------------------------------

    def say(self, text: str) -> None:
        print(f"pds: {text}", flush=True)

    def ready(self, what: str, detail: str = "") -> None:
        print(f"  {what:<24}ready after {time.monotonic() - self.began:5.1f} s{detail}", flush=True)

    # --- starting ---------------------------------------------------------------------------------

    def check_ports(self) -> None:
        s = self.settings
        wanted = {"the API": (s.api_host, s.api_port)}
        if self.own_prefect:
            wanted["the Prefect server"] = ("127.0.0.1", s.prefect_port)
        if s.portal_ftp_port:
            wanted["the FTP portal"] = (s.portal_host, s.portal_ftp_port)
        if s.portal_sftp_port:
            wanted["the SFTP portal"] = (s.portal_host, s.portal_sftp_port)
        taken = ports_in_use(wanted)
        if taken:
            raise StartFailed(
                f"port(s) already in use, nothing started: {', '.join(taken)}; stop what holds them or set "
                "PDS_API_PORT, PDS_PREFECT_PORT, PDS_PORTAL_FTP_PORT, PDS_PORTAL_SFTP_PORT"
            )

    def prepare_database(self) -> None:
        """Migrate before any child starts (the API and the mover would race to create tables), and
        end the uploads an API process that died left Arriving: no upload can be under way now."""
        from catalog import sealing
        from catalog.database import make_engine, migrate, session_scope
        from catalog.lifecycle import abort_broken_uploads
        from catalog.users import ensure_user

        settings = self.settings
        engine = make_engine(settings.resolved_database_url())
        migrate(engine)
        with session_scope(engine) as session:
            ensure_user(session, settings.admin_user, settings.admin_password.get_secret_value(), is_admin=True)
            unreadable = sealing.seal_stored_hosts(session).unreadable
            broken = abort_broken_uploads(session, "upload broke off: pds stopped before it was whole", by="pds up")
        if not settings.store_url:  # partial objects of those uploads, in the default local store
            shutil.rmtree(self.root / "store" / "tmp", ignore_errors=True)
        self.engine = engine
        if unreadable:
            print(
                f"pds: warning: credentials of host(s) {', '.join(unreadable)} were sealed by another key:"
                f" give it in {sealing.PREVIOUS_KEYS_VARIABLE}",
                file=sys.stderr,
                flush=True,
            )
        detail = f"; {len(broken)} upload(s) left unfinished marked Failed" if broken else ""
        self.ready("database", detail)

    def _is_ready(self, child: Child) -> bool:
        s = self.settings
        if child.name == "prefect":
            if flow_runs.call(f"{self.prefect_api}/health") is None:
                return False
            home = (flow_runs.call(f"{self.prefect_api}/admin/settings") or {}).get("home")
            if home and Path(home).resolve() != self.prefect_home.resolve():
                raise StartFailed(f"another Prefect server (home {home}) answers at {self.prefect_api}")
            return True
        if child.name == "api":
            health = flow_runs.call(f"{self.api_url}/health")
            if isinstance(health, dict) and health.get("instance") not in (None, self.instance):
                raise StartFailed(f"another pds API answers at {self.api_url}")
            return isinstance(health, dict) and health.get("instance") == self.instance
        if child.name == "portal-ftp":
            return _tcp_answers(s.portal_host, s.portal_ftp_port)
        if child.name == "portal-sftp":
            return _tcp_answers(s.portal_host, s.portal_sftp_port)
        if child.name in self.flow_names:
            return self.flow_names[child.name] in self._running_flows
        return True

    def start(self) -> None:
        if self.own_prefect:
            self._prefect_child().start()
        self.prepare_database()
        if not self.own_prefect:  # a Prefect server that already runs: nothing to wait for
            self._child("api", [sys.executable, "-m", "api"]).start()
            self._start_flows(["mover"])
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while not self.signals:
            waiting = [c for c in self.children.values() if not c.ready and c.name not in ("deployments", "worker")]
            self._watch_registration()
            if not waiting:
                return
            if time.monotonic() > deadline:
                names = ", ".join(c.name for c in waiting)
                raise StartFailed(f"not ready after {START_TIMEOUT_SECONDS:.0f} s: {names}; see {self.logs}")
            self._check_flows(waiting)
            for child in waiting:
                if not child.running():
                    raise StartFailed(f"{child.name} exited ({child.exit_code()}) while starting; see {child.log_path}")
                if self._is_ready(child):
                    child.ready = True
                    label = {"prefect": "Prefect server", "api": "API"}.get(child.name, child.name)
                    self.ready(label, self._detail(child))
                    self._next_parts(child)
            time.sleep(POLL_SECONDS)

    def _check_flows(self, waiting: list[Child]) -> None:
        """Ask Prefect, at most once a second, which waiting flows have their run Running."""
        flows = {self.flow_names[c.name]: c.started_at - 1 for c in waiting if c.name in self.flow_names}
        if flows and time.monotonic() - self._flows_checked >= 1.0:
            self._flows_checked = time.monotonic()
            self._running_flows = flow_runs.running_since(self.prefect_api, flows)

    def _detail(self, child: Child) -> str:
        if child.name == "prefect":
            return f"  {self.prefect_api.removesuffix('/api')}"
        if child.name == "api":
            return f"  {self.api_url}"
        return ""

    def _watch_registration(self) -> None:
        registration = self.children.get("deployments")
        if registration is None or registration.ready or registration.running():
            return
        registration.ready = True
        if registration.exit_code() == 0:
            self.ready("deployments", "  (prefect.yaml; a worker serves pds-movers)")
            self._start_worker()
        else:
            print(f"pds: warning: deployments not registered; see {registration.log_path}", file=sys.stderr)

    def sweep_dead_runs(self) -> None:
        """Runs of the long-lived flows still Running in our own Prefect server belong to an instance that
        was killed (the lock says none is running): they crashed, and say so instead of running for ever."""
        if not self.own_prefect:
            return  # a shared server's runs may belong to other stacks
        names = [*flow_runs.LONG_LIVED, "dispatch"]
        runs = flow_runs.flow_runs(self.prefect_api, names, flow_runs.UNFINISHED, timeout=flow_runs.PATIENT)
        ended = flow_runs.end_runs(
            self.prefect_api, runs, "CRASHED", "its pds up was killed; found unfinished when pds up started again"
        )
        if ended:
            self.say(f"flow runs left running by a pds up that was killed, marked Crashed: {', '.join(ended)}")

    def banner(self) -> None:
        s, api = self.settings, self.api_url
        print(
            f"pds is up after {time.monotonic() - self.began:.1f} s (data in {self.root})\n"
            f"  home       {api}/\n"
            f"  API        {api}  (docs: {api}/schema; user {s.admin_user})\n"
            f"  monitor    {api}/monitor\n"
            f"  metrics    {api}/metrics\n"
            f"  STAC API   {api}/stac/\n"
            f"  Prefect UI {self.prefect_api.removesuffix('/api')}\n"
            + "".join(f"  {line}\n" for line in portal_addresses(s))
            + f"  logs       {self.logs}\n"
            "Press Ctrl-C to stop.",
            flush=True,
        )

    # --- running ----------------------------------------------------------------------------------

    def supervise(self) -> None:
        """Start again every child that dies, pausing longer each time one dies soon after its start."""
        while not self.signals:
            self._watch_registration()
            for child in list(self.children.values()):
                if child.name == "deployments" or child.running() or child.process is None:
                    continue
                now = time.monotonic()
                if child.next_start == 0.0:
                    code = child.exit_code()
                    quick = time.time() - child.started_at < 30
                    pause = min(60.0, 2.0 ** min(child.restarts, 6)) if quick else 1.0
                    child.next_start = now + pause
                    print(
                        f"pds: {child.name} exited ({code}); starting it again in {pause:.0f} s (see {child.log_path})",
                        file=sys.stderr,
                        flush=True,
                    )
                elif now >= child.next_start:
                    child.restarts += 1
                    child.next_start = 0.0
                    child.start()
            time.sleep(POLL_SECONDS)

    # --- stopping ---------------------------------------------------------------------------------

    def on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.signals += 1

    def stop(self) -> None:
        began = time.monotonic()
        flows = [c for name, c in self.children.items() if name in self.flow_names and c.running()]
        servers = [c for name, c in self.children.items() if name != "prefect" and c not in flows]
        self.say("stopping" + (" (Ctrl-C again to interrupt transfers at once)" if flows else ""))
        for child in [*flows, *servers]:
            child.ask_to_stop()
        interrupted = self._wait_for_flows(flows)
        for child in servers:
            if not child.wait(max(0.0, SERVER_STOP_SECONDS - (time.monotonic() - began))):
                child.kill_group()
        if interrupted:
            self._cancel_interrupted_runs(interrupted)
        prefect = self.children.get("prefect")
        if prefect is not None:
            prefect.ask_to_stop()
            if not prefect.wait(SERVER_STOP_SECONDS):
                prefect.kill_group()
        for child in self.children.values():
            child.kill_group()  # what they left behind: the API's worker, a worker's flow runs
            child.forget()
        if self.engine is not None:
            self.engine.dispose()
        print(f"pds: stopped after {time.monotonic() - began:.1f} s", file=sys.stderr, flush=True)

    def _wait_for_flows(self, flows: list[Child]) -> list[Child]:
        """Wait until the flows end, saying which transfers are still in flight; past the grace period or
        at a second Ctrl-C, kill them. Returns the ones killed."""
        signals_at_stop = self.signals
        deadline = time.monotonic() + self.settings.stop_grace_seconds
        next_report = time.monotonic() + 1.0
        while any(c.running() for c in flows):
            now = time.monotonic()
            if self.signals > signals_at_stop or now > deadline:
                why = "interrupted" if self.signals > signals_at_stop else "grace period over"
                killed = [c for c in flows if c.running()]
                for child in killed:
                    child.kill_group()
                names = ", ".join(c.name for c in killed)
                self.say(f"{why}: stopped {names}; unfinished transfers resume at the next start")
                return killed
            if now >= next_report:
                next_report = now + PROGRESS_EVERY_SECONDS
                left = max(0.0, deadline - now)
                lines = self.transfers_in_flight()
                if lines:
                    self.say(f"waiting up to {left:.0f} s for {len(lines)} transfer(s) in flight:")
                    for line in lines:
                        print(f"  {line}", flush=True)
                else:
                    waiting = ", ".join(c.name for c in flows if c.running())
                    self.say(f"waiting up to {left:.0f} s for {waiting} to end")
            time.sleep(POLL_SECONDS)
        return []

    def transfers_in_flight(self) -> list[str]:
        if self.engine is None:
            return []
        from catalog.database import session_scope
        from catalog.lifecycle import in_flight

        try:
            with session_scope(self.engine) as session:
                rows = in_flight(session, self.settings.mover_name)
        except Exception:  # noqa: BLE001 — a busy database must not stop the stop
            return []
        return [
            f"transfer {t.id} to {t.destination}:{t.target}: {_amount(t.bytes_sent)}"
            + (f" of {_amount(t.size)} ({100 * t.bytes_sent // t.size} %)" if t.size else "")
            for t in rows
        ]

    def _cancel_interrupted_runs(self, killed: list[Child]) -> None:
        """The runs of flows killed at the operator's request end Cancelled (not Running for ever), with
        their dispatch runs; their transfers are queued again when the mover starts next."""
        names = [self.flow_names[c.name] for c in killed]
        if "mover" in names:
            names.append("dispatch")
        runs = flow_runs.flow_runs(
            self.prefect_api, names, flow_runs.UNFINISHED, started_after=self.began_wall - 1, timeout=flow_runs.PATIENT
        )
        flow_runs.end_runs(
            self.prefect_api, runs, "CANCELLED", "stopped by pds up before it finished; resumes at the next start"
        )


def _amount(size: int | None) -> str:
    value = float(size or 0)
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "bytes" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"


def run_embedded(data_dir: str | None = None, prefect_api_url: str | None = None) -> int:
    # The lock comes first, before the imports of the database layer (seconds on a busy machine): a
    # second start on the same data directory is refused at once. The directory is found as Settings
    # finds it (--data-dir, else PDS_DATA_DIR, else ./pds-data).
    root = Path(data_dir or os.environ.get("PDS_DATA_DIR") or Path.cwd() / "pds-data").resolve()
    os.environ["PDS_DATA_DIR"] = str(root)
    lock = InstanceLock(root / "run" / "pds-up.lock")
    try:
        lock.acquire(root)
    except AlreadyRunning as exc:
        print(f"pds: error: {exc}", file=sys.stderr)
        return 1
    from catalog.settings import Settings

    settings = Settings()
    stack = EmbeddedStack(settings, root, prefect_api_url)
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, stack.on_signal)
    code = 0
    try:
        stack.check_ports()
        print(f"pds: starting in {root}", flush=True)
        from catalog import sealing

        (root / "logs").mkdir(parents=True, exist_ok=True)
        # Host credentials are sealed at rest under a key every child inherits (made on first start
        # unless one is given).
        if not os.environ.get(sealing.KEY_VARIABLE):
            os.environ[sealing.KEY_VARIABLE] = sealing.ensure_key_file(root / "host-secret.key")
        stack.start()
        if not stack.signals:
            stack.banner()
            stack.supervise()
    except StartFailed as exc:
        print(f"pds: error: {exc}", file=sys.stderr, flush=True)
        code = 1
    finally:
        if stack.children:  # also when something unforeseen failed: no child may outlive pds up
            stack.stop()
        lock.release()
    return code
