"""Session-wide real servers and per-test databases.

Servers start once per session (as processes; no Docker) and fail the run if they cannot start: a
missing server in CI is a failure, never a skip.
"""

from __future__ import annotations

import os

# gcsfs picks its filesystem class when first imported; without this every call waits out a 60 s timeout.
os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")

import signal
import threading
import uuid
import warnings
from pathlib import Path

import pytest

from catalog.database import make_engine, migrate
from catalog.settings import Settings
from catalog.store import DataStore

SHARED_SCOPES = frozenset({"package", "module", "class"})


def _sigint_passed_on() -> str:
    """What a command this process starts inherits of SIGINT: ignored or blocked, it could not be
    interrupted (a handler is not inherited)."""
    if threading.current_thread() is not threading.main_thread():
        return "unknown"
    ignored = signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    blocked = signal.SIGINT in signal.pthread_sigmask(signal.SIG_BLOCK, set())
    return "ignored" if ignored else "blocked" if blocked else "delivered"


@pytest.fixture(autouse=True)
def _sigint_left_as_found(request: pytest.FixtureRequest):
    """Names, in the warnings summary, a test that leaves this process ignoring or blocking SIGINT:
    every command a later test starts would inherit it."""
    before = _sigint_passed_on()
    yield
    after = _sigint_passed_on()
    if after != before and after in ("ignored", "blocked"):
        warnings.warn(f"{request.node.nodeid} left SIGINT {after} in the test process", stacklevel=1)


@pytest.hookimpl(wrapper=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]):
    """Under pytest-xdist (`--dist loadgroup`, as infra/test.sh runs it), tests are spread one by one over
    the workers and each worker starts the session's servers for itself. Tests marked
    `xdist_group(name)` run on one worker, one after another, in collection order. A module whose tests
    share a fixture wider than a test (a module-scoped broker, a `pds up` stack) is such a group by
    itself: split, it would start that fixture once per worker. It needs no mark of its own."""
    for item in items:
        if isinstance(item, pytest.Function) and not any(item.iter_markers("xdist_group")) and shares_fixtures(item):
            item.add_marker(pytest.mark.xdist_group(item.nodeid.split("::", 1)[0]))
    result = yield
    if getattr(config.option, "loadgroup", False):
        for item in items:
            name_groups(item)
    return result


def name_groups(item: pytest.Item) -> None:
    """Append `@group` to a grouped test's node id, which is how the xdist controller sees groups.

    pytest-xdist 3.8 does this itself by setting `item._nodeid`, which pytest 9.2 no longer reads (node
    ids became structured), so the groups would silently be ignored; this sets it the new way when needed.
    """
    marks = item.iter_markers("xdist_group")
    groups = sorted({str(m.args[0] if m.args else m.kwargs.get("name", "default")) for m in marks})
    if not groups or item.nodeid.rfind("@") > item.nodeid.rfind("]"):
        return
    grouped = f"{item.nodeid}@{'_'.join(groups)}"
    node_id = getattr(item, "_id", None)
    if node_id is not None and hasattr(node_id, "parse"):
        item._id = type(node_id).parse(grouped)
    else:
        item._nodeid = grouped
    if item.nodeid != grouped:
        raise pytest.UsageError(f"cannot put {item.nodeid} in its xdist group (pytest changed how node ids work)")


def shares_fixtures(item: pytest.Function) -> bool:
    """Whether `item` uses a package-, module- or class-scoped fixture, or its module defines one (which
    its tests may request by name at run time, beyond what their signatures show)."""
    for fixturedefs in item._fixtureinfo.name2fixturedefs.values():
        if any(d.scope in SHARED_SCOPES for d in fixturedefs):
            return True
    for value in vars(item.module).values():
        marker = getattr(value, "_fixture_function_marker", None)
        if marker is not None and marker.scope in SHARED_SCOPES:
            return True
    return False


@pytest.fixture(scope="session")
def postgres(tmp_path_factory):
    from tests.servers.postgres import PostgresServer

    yield from running(PostgresServer(tmp_path_factory.mktemp("postgres")))


@pytest.fixture(scope="session")
def sshd(tmp_path_factory):
    from tests.servers.sshd import SshServer

    yield from running(SshServer(tmp_path_factory.mktemp("sshd")))


@pytest.fixture(scope="session")
def sftp_password_server(tmp_path_factory):
    from tests.servers.sftp_password import PasswordSftpServer

    yield from running(PasswordSftpServer(tmp_path_factory.mktemp("sftp-password")))


@pytest.fixture(scope="session")
def mosquitto(tmp_path_factory):
    from tests.servers.mosquitto import MosquittoServer

    yield from running(MosquittoServer(tmp_path_factory.mktemp("mosquitto")))


@pytest.fixture(scope="session")
def upload_server(tmp_path_factory):
    from tests.servers.upload_server import UploadServer

    yield from running(UploadServer(tmp_path_factory.mktemp("upload")))


@pytest.fixture(scope="session")
def ftp_servers(tmp_path_factory):
    """pyftpdlib by mode (plain FTP, explicit FTPS, implicit FTPS), each started on first use."""
    from tests.servers.ftp import FtpServer

    servers: dict[str, FtpServer] = {}

    def get(mode: str) -> FtpServer:
        if mode not in servers:
            servers[mode] = FtpServer(tmp_path_factory.mktemp(f"ftp-{mode}"), mode).start()
        return servers[mode]

    yield get
    for server in servers.values():
        server.stop()


@pytest.fixture(scope="session")
def azurite(tmp_path_factory):
    from tests.servers.azurite import AzuriteServer

    yield from running(AzuriteServer(tmp_path_factory.mktemp("azurite")))


@pytest.fixture(scope="session")
def gcs_server(tmp_path_factory):
    from tests.servers.gcs import GcsServer

    yield from running(GcsServer(tmp_path_factory.mktemp("gcs")))


@pytest.fixture(scope="session")
def nginx(tmp_path_factory):
    from tests.servers.nginx import NginxServer

    yield from running(NginxServer(tmp_path_factory.mktemp("nginx")))


@pytest.fixture(scope="session")
def nginx_tls(tmp_path_factory):
    from tests.servers.nginx import NginxServer

    yield from running(NginxServer(tmp_path_factory.mktemp("nginx-tls"), tls=True))


@pytest.fixture(scope="session")
def s3_server():
    from tests.servers.s3 import S3Server

    yield from running(S3Server())


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory):
    """One Prefect server for every flow-level test; flows in the test process report to it."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from tests.servers.prefect import PrefectServer

    server = PrefectServer(tmp_path_factory.mktemp("prefect"))
    server.start()
    # Prefect reads its settings once, when first imported (earlier tests import it through the host
    # blocks), so a changed environment alone would leave flows on a temporary ephemeral server.
    with temporary_settings(updates={PREFECT_API_URL: server.api_url}):
        yield server
    server.stop()


def running(server):
    """Start a test server for a fixture and stop it afterwards, even when the session fails."""
    server.start()
    try:
        yield server
    finally:
        server.stop()


def database_url(request: pytest.FixtureRequest, tmp_path: Path, kind: str) -> str:
    if kind == "sqlite":
        return f"sqlite:///{tmp_path / 'pds.db'}"
    server = request.getfixturevalue("postgres")
    return server.create_database(f"t_{uuid.uuid4().hex[:12]}")


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def engine(request, tmp_path):
    """A migrated pds database, on SQLite and on PostgreSQL."""
    engine = make_engine(database_url(request, tmp_path, request.param))
    migrate(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def sqlite_engine(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'pds.db'}")
    migrate(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def store(tmp_path):
    return DataStore.from_url(str(tmp_path / "store"), chunk_size=256 * 1024)


@pytest.fixture
def settings(tmp_path):
    return Settings(data_dir=tmp_path / "data")
