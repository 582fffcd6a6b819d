from __future__ import annotations

import threading

import pytest

from catalog.data_users import DataUserSpec, create_data_user, grant
from catalog.database import session_scope
from catalog.events import EventLog
from catalog.models import Destination, DestinationHost, Host
from catalog.portal import Portal

PASSWORD = "pw-alice-1"


@pytest.fixture
def event_log_path(tmp_path):
    return tmp_path / "events.log"


@pytest.fixture
def portal(sqlite_engine, store, event_log_path):
    events = EventLog.open(event_log_path)
    yield Portal(sqlite_engine, store, events, temporary_patterns=[".*", "*.tmp"], server_name="test-portal")
    events.close()


@pytest.fixture
def world(sqlite_engine, tmp_path):
    """Destinations `bucket` (no host: pulled), `site` (a file host), `other` (not alice's); users alice, bob."""
    with session_scope(sqlite_engine) as session:
        for name in ("bucket", "site", "other"):
            session.add(Destination(name=name))
        session.add(Host(name="h-site", protocol="file", address=str(tmp_path / "remote")))
        session.flush()
        session.add(DestinationHost(destination_name="site", host_name="h-site", kind="dissemination"))
        create_data_user(session, DataUserSpec("alice", PASSWORD, description="Alice's lab", country_code="uk"))
        create_data_user(session, DataUserSpec("bob", "pw-bob-1"))
        grant(session, "alice", "all", destination="bucket")
        grant(session, "alice", "get,put,dir,size,mtime,rename", destination="site")
        grant(session, "bob", "get,dir,size,mtime", destination="bucket")
        grant(session, "bob", "all", destination="other")
    return sqlite_engine


class ServedApi:
    """The Litestar app under uvicorn with TLS, in a thread of the test process (shares its database)."""

    def __init__(self, app, cert, key) -> None:
        import uvicorn

        from tests.servers._common import free_port

        self.port = free_port()
        self.url = f"https://127.0.0.1:{self.port}"
        self.cert = cert
        # A client that leaves a connection open (or a refused upload's body unread) would otherwise hold
        # the shutdown until stop() gives up after 10 s.
        config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=self.port,
            ssl_certfile=str(cert),
            ssl_keyfile=str(key),
            log_level="warning",
            timeout_graceful_shutdown=1,
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def start(self) -> ServedApi:
        from tests.servers._common import wait_until

        self.thread.start()
        wait_until(lambda: self.server.started, timeout=30, what="the portal API")
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture(scope="session")
def certificate(tmp_path_factory):
    from tests.servers._common import self_signed_certificate

    root = tmp_path_factory.mktemp("tls")
    cert, key = root / "cert.pem", root / "key.pem"
    self_signed_certificate(cert, key)
    return cert, key


@pytest.fixture
def served(settings, world, store, portal, certificate):
    from api.app import create_app

    app = create_app(settings, engine=world, store=store, portal=portal)
    api = ServedApi(app, *certificate).start()
    yield api
    api.stop()


class SftpPortal:
    """The portal's SFTP server on its own event loop in a thread of the test process."""

    def __init__(self, portal, key_path) -> None:
        import asyncio

        from tests.servers._common import free_port

        self.portal, self.key_path = portal, key_path
        self.port = free_port()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.acceptor = None

    def start(self) -> SftpPortal:
        import asyncio

        from api.portal_sftp import start_sftp_server

        self.thread.start()
        started = start_sftp_server(self.portal, "127.0.0.1", self.port, self.key_path)
        self.acceptor = asyncio.run_coroutine_threadsafe(started, self.loop).result(timeout=30)
        return self

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.acceptor.close)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)


@pytest.fixture
def sftp_portal(portal, world, tmp_path):
    server = SftpPortal(portal, tmp_path / "host_key").start()
    yield server
    server.stop()


@pytest.fixture
def alice_key(tmp_path, world):
    """An ed25519 key pair of alice's (the public half registered with the portal)."""
    import subprocess

    from catalog.data_users import add_key

    key = tmp_path / "alice_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    with session_scope(world) as session:
        add_key(session, "alice", key.with_suffix(".pub").read_text())
    return key


class FtpPortal:
    """The portal's FTP (or explicit FTPS) server in a thread of the test process."""

    def __init__(self, portal, certificate: str = "") -> None:
        from api.portal_ftp import make_server
        from tests.servers._common import free_port

        self.port = free_port()
        self.server = make_server(portal, "127.0.0.1", self.port, certificate=certificate)
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"handle_exit": False}, daemon=True)

    def start(self) -> FtpPortal:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.close_all()
        self.thread.join(timeout=10)


@pytest.fixture(params=["ftp", "ftps"])
def ftp_portal(request, portal, world, certificate):
    combined = None
    if request.param == "ftps":
        cert, key = certificate
        combined = cert.parent / "combined.pem"
        combined.write_text(key.read_text() + cert.read_text())
    server = FtpPortal(portal, str(combined or "")).start()
    server.mode, server.cert = request.param, certificate[0]
    yield server
    server.stop()
