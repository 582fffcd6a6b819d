"""`pds up`: the whole system on one machine, on its embedded default.

Starts a real Prefect server (SQLite under the data directory), the API, one mover, the proxy fetcher,
the retriever, the acquisition scheduler, the MQTT subscriptions and the portal's FTP and SFTP servers,
each as a child process with its log under `<data_dir>/logs/`. A long-lived flow that exits is started
again (it recovers its interrupted work on start). Ctrl-C or SIGTERM stops every child, the mover first so it can finish
its current dispatch, and waits for each.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import IO

import httpx

from catalog import sealing
from catalog.database import make_engine, migrate, session_scope
from catalog.settings import Settings
from catalog.users import ensure_user

STOP_GRACE_SECONDS = 15.0


@dataclass
class Child:
    name: str
    command: list[str]
    env: dict[str, str]
    log_path: Path
    restart: bool = False
    process: subprocess.Popen[bytes] | None = None
    log: IO[bytes] | None = None
    starts: int = 0
    last_start: float = field(default=0.0)

    def start(self) -> None:
        self.log = self.log_path.open("ab")
        self.process = subprocess.Popen(  # noqa: S603 — our own interpreter and modules
            self.command, env=self.env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True
        )
        self.starts += 1
        self.last_start = time.monotonic()
        pid_file = self.log_path.parent.parent / "run" / f"{self.name}.pid"
        pid_file.parent.mkdir(parents=True, exist_ok=True)
        pid_file.write_text(str(self.process.pid))

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(STOP_GRACE_SECONDS)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process:
            # Its own session: whatever it left behind (the API server's worker process) goes too.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.process.pid, signal.SIGKILL)
        if self.log:
            self.log.close()


def _wait_http(url: str, what: str, child: Child, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if child.process and child.process.poll() is not None:
            raise RuntimeError(f"{what} exited with code {child.process.returncode}; see {child.log_path}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"{what} did not answer at {url} within {timeout:.0f} s; see {child.log_path}")


def portal_children(settings: Settings, env: dict[str, str], logs: Path) -> list[Child]:
    """The Data Portal's FTP and SFTP servers (HTTPS and S3 are served by the API), unless port 0."""
    children = []
    for name, module, port in (
        ("portal-ftp", "api.portal_ftp", settings.portal_ftp_port),
        ("portal-sftp", "api.portal_sftp", settings.portal_sftp_port),
    ):
        if port:
            children.append(Child(name, [sys.executable, "-m", module], env, logs / f"{name}.log", restart=True))
    return children


def portal_addresses(settings: Settings) -> list[str]:
    api = settings.resolved_api_url()
    lines = [f"Portal     {api}/portal (HTTPS), {api}/s3 (S3)"]
    if settings.portal_ftp_port:
        tls = " (explicit FTPS)" if settings.portal_tls_certificate else ""
        lines.append(f"Portal     ftp://{settings.portal_host}:{settings.portal_ftp_port}{tls}")
    if settings.portal_sftp_port:
        lines.append(f"Portal     sftp://{settings.portal_host}:{settings.portal_sftp_port}")
    return lines


def run_embedded(data_dir: str | None = None, prefect_api_url: str | None = None) -> int:
    if data_dir:
        os.environ["PDS_DATA_DIR"] = str(Path(data_dir).resolve())
    settings = Settings()
    root = settings.data_dir.resolve()
    os.environ["PDS_DATA_DIR"] = str(root)
    logs = root / "logs"
    logs.mkdir(parents=True, exist_ok=True)

    # Host credentials are sealed at rest under a key every child inherits (made on first start
    # unless one is given).
    if not os.environ.get(sealing.KEY_VARIABLE):
        os.environ[sealing.KEY_VARIABLE] = sealing.ensure_key_file(root / "host-secret.key")

    # Migrate before any child starts, so the API and the mover never race to create tables.
    engine = make_engine(settings.resolved_database_url())
    migrate(engine)
    with session_scope(engine) as session:
        ensure_user(session, settings.admin_user, settings.admin_password.get_secret_value(), is_admin=True)
        unreadable = sealing.seal_stored_hosts(session).unreadable
    if unreadable:
        print(
            f"pds: warning: credentials of host(s) {', '.join(unreadable)} were sealed by another key:"
            f" give it in {sealing.PREVIOUS_KEYS_VARIABLE}",
            file=sys.stderr,
            flush=True,
        )
    engine.dispose()

    env = dict(os.environ) | {"PYTHONUNBUFFERED": "1"}
    children: list[Child] = []
    if not prefect_api_url:
        prefect_home = root / "prefect"
        prefect_home.mkdir(exist_ok=True)
        prefect_api_url = f"http://127.0.0.1:{settings.prefect_port}/api"
        prefect_env = env | {
            "PREFECT_HOME": str(prefect_home),
            "PREFECT_API_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{prefect_home / 'prefect.db'}",
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        }
        prefect_env.pop("PREFECT_API_URL", None)
        children.append(
            Child(
                "prefect",
                [
                    sys.executable,
                    "-m",
                    "prefect",
                    "server",
                    "start",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(settings.prefect_port),
                ],
                prefect_env,
                logs / "prefect.log",
            )
        )
    env["PREFECT_API_URL"] = prefect_api_url
    env.setdefault("PREFECT_HOME", str(root / "prefect"))
    api = Child("api", [sys.executable, "-m", "api"], env, logs / "api.log")
    mover = Child("mover", [sys.executable, "-m", "flows.mover"], env, logs / "mover.log", restart=True)
    # The long-lived flows besides the mover, each supervised and restarted if it dies.
    long_lived = [
        Child(name, [sys.executable, "-m", module], env, logs / f"{name}.log", restart=True)
        for name, module in (
            ("proxy-fetcher", "flows.proxy_fetch"),
            ("retriever", "flows.retrieval"),
            ("acquisition-scheduler", "flows.discovery"),
            ("subscriptions", "flows.subscription"),
        )
    ]

    stopping = False
    registration: Child | None = None

    def on_signal(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        if children:
            children[0].start()
            _wait_http(f"{prefect_api_url}/health", "the Prefect server", children[0], 180)
        api.start()
        children.append(api)
        _wait_http(f"{settings.resolved_api_url()}/health", "the API", api, 60)
        mover.start()
        children.append(mover)
        # prefect.yaml's deployments, registered in the background (schedules paused: this stack
        # supervises its own mover); a worker for the on-demand ones starts once they are there.
        registration = Child(
            "deployments",
            [sys.executable, "-m", "api.deployments", "--pause-schedules"],
            env,
            logs / "deployments.log",
        )
        registration.start()
        worker = Child(
            "worker",
            [str(Path(sys.executable).with_name("prefect")), "worker", "start", "--pool", "pds-movers"],
            env | {"PREFECT_WORKER_QUERY_SECONDS": "2"},
            logs / "worker.log",
            restart=True,
        )
        for portal_server in portal_children(settings, env, logs):
            portal_server.start()
            children.append(portal_server)
        for child in long_lived:
            child.start()
            children.append(child)
        print(
            f"pds is up (data in {root})\n"
            f"  API        {settings.resolved_api_url()}  (docs: /schema; user {settings.admin_user})\n"
            f"  monitor    {settings.resolved_api_url()}/monitor\n"
            f"  metrics    {settings.resolved_api_url()}/metrics\n"
            f"  STAC API   {settings.resolved_api_url()}/stac/\n"
            f"  Prefect UI {prefect_api_url.removesuffix('/api')}  (deployments: see below)\n"
            + "".join(f"  {line}\n" for line in portal_addresses(settings))
            + f"  logs       {logs}\n"
            "Press Ctrl-C to stop.",
            flush=True,
        )
        while not stopping:
            if registration.process and worker.process is None and registration.process.poll() is not None:
                if registration.process.returncode == 0:
                    worker.start()
                    children.append(worker)
                    print("pds: deployments registered (prefect.yaml); a worker serves pds-movers", flush=True)
                else:
                    print(f"pds: warning: deployments not registered; see {registration.log_path}", file=sys.stderr)
                registration.process = None
            for child in children:
                if child.process and child.process.poll() is not None and not stopping:
                    if not child.restart:
                        print(
                            f"pds: {child.name} exited ({child.process.returncode}); see {child.log_path}",
                            file=sys.stderr,
                        )
                        stopping = True
                        break
                    # Back off a little so a mover that fails at start does not spin.
                    if time.monotonic() - child.last_start > 2:
                        print(f"pds: restarting {child.name}", file=sys.stderr, flush=True)
                        child.start()
            time.sleep(0.2)
    except RuntimeError as exc:
        print(f"pds: error: {exc}", file=sys.stderr)
        return 1
    finally:
        if registration is not None and registration.process and registration.process.poll() is None:
            os.killpg(registration.process.pid, signal.SIGTERM)  # and the `prefect` command it runs
        if registration is not None:
            registration.stop()
        for child in reversed(children):
            child.stop()
        print("pds: stopped", file=sys.stderr)
    return 0
