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

import signal
from collections.abc import Mapping
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
            "no",
            "--dir",
            "{state}/redis",
        ),  # fmt: skip
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
        ready="http:/",
        directories=("sites/www",),
    ),
)

#: The order `up` starts processes in: each group once the previous one serves.
START_ORDER: tuple[tuple[str, ...], ...] = (
    ("postgres", "redis", "mosquitto", "site-sftp", "site-ftp", "site-http"),
    ("prefect-api-1", "prefect-api-2", "prefect-services", "pds-api-1", "pds-api-2"),
    ("nginx", "portal-ftp", "portal-sftp"),
    ("worker-movers", "worker-continental"),
)

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
