"""Acquisition sources on real servers, and a pds runtime (database, store, event log) per test."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from catalog.acquisition import ListingRuleCreate, add_rule
from catalog.config import attach_host, create_destination, create_host
from catalog.database import migrate, session_scope
from catalog.models import DestinationCreate, Host, HostCreate, HostKind
from tasks import runtime as runtime_module
from tests.conftest import database_url

PROTOCOLS = frozenset({"file", "sftp", "ftp", "s3", "http", "https"})


@dataclass
class Source:
    """A provider's server: the acquisition host that reaches it and a way to put files there."""

    host: HostCreate
    put_file: Any  # (relative path, bytes, mtime or None) -> None
    local_root: Path | None = None
    rule: dict[str, Any] = field(default_factory=dict)
    """Rule fields this source needs (an HTTP source's listing format)."""

    def put(self, relative: str, data: bytes, mtime: float | None = None) -> None:
        self.put_file(relative, data, mtime)

    def fill(self, directory: str, count: int, size: int = 10) -> None:
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda i: self.put(f"{directory}/f{i:06d}.dat", b"x" * size), range(count)))


def _local_source(host: HostCreate, root: Path) -> Source:
    def put(relative: str, data: bytes, mtime: float | None) -> None:
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        if mtime is not None:
            os.utime(path, (mtime, mtime))

    return Source(host, put, root)


@pytest.fixture(params=["sftp", "ftp", "s3", "http"])
def source(request, tmp_path) -> Source:
    kind = request.param
    name = f"provider-{kind}"
    if kind == "http":  # nginx's HTML index pages (autoindex: exact sizes, modification times)
        nginx = request.getfixturevalue("nginx")
        host, root = nginx_provider(nginx, name, {})
        made = _local_source(host, root)
        made.rule = {"listing_format": "html"}
        return made
    if kind == "sftp":
        sshd = request.getfixturevalue("sshd")
        root = sshd.data_dir / uuid.uuid4().hex
        host = HostCreate(
            name=name,
            kind=HostKind.ACQUISITION,
            protocol="sftp",
            address=f"{sshd.host}:{sshd.port}",
            login=sshd.username,
            directory=str(root),
            options={"key_filename": str(sshd.client_key_path), "known_hosts": str(sshd.known_hosts_path)},
        )
        return _local_source(host, root)
    if kind in ("ftp", "ftps"):  # ftps (explicit TLS, its self-signed certificate trusted) when asked for
        ftp = request.getfixturevalue("ftp_servers")("plain" if kind == "ftp" else "explicit")
        directory = uuid.uuid4().hex
        options: dict[str, Any] = {"passive": True, "tls": "none"}
        if kind == "ftps":
            options = {"passive": True, "tls": "explicit", "cafile": str(ftp.cert_path)}
        host = HostCreate(
            name=name,
            kind=HostKind.ACQUISITION,
            protocol="ftp",
            address=f"{ftp.host}:{ftp.port}",
            login=ftp.username,
            password=ftp.password,
            directory=f"/{directory}",
            options=options,
        )
        return _local_source(host, ftp.data_dir / directory)
    s3 = request.getfixturevalue("s3_server")
    bucket = f"b-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(bucket)
    client = s3.client()

    def put(relative: str, data: bytes, mtime: float | None) -> None:
        client.put_object(Bucket=bucket, Key=relative, Body=data)

    host = HostCreate(
        name=name,
        kind=HostKind.ACQUISITION,
        protocol="s3",
        address=s3.endpoint_url,
        login=s3.access_key,
        password=s3.secret_key,
        directory=bucket,
        options={"region": s3.region},
    )
    return Source(host, put)


@pytest.fixture
def local_source(tmp_path) -> Source:
    root = tmp_path / "provider"
    host = HostCreate(name="provider-file", kind=HostKind.ACQUISITION, protocol="file", address=str(root))
    return _local_source(host, root)


@contextmanager
def runtime_on(request: pytest.FixtureRequest, directory: Path, kind: str) -> Iterator[runtime_module.Runtime]:
    """The process-wide runtime the tasks use, on a fresh database (`kind`) and store under `directory`;
    the environment is restored and the runtime forgotten on exit."""
    from tasks.reporting import event_log

    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.setenv("PDS_DATA_DIR", str(directory / "data"))
        monkeypatch.setenv("PDS_EVENT_LOG", str(directory / "events.log"))
        monkeypatch.setenv("PDS_ACQUISITION_POLL_SECONDS", "0.05")
        monkeypatch.setenv("PDS_MOVER_POLL_SECONDS", "0.05")
        if kind == "postgres":
            monkeypatch.setenv("PDS_DATABASE_URL", database_url(request, directory, "postgres"))
        runtime_module.runtime.cache_clear()
        event_log.cache_clear()
        try:
            made = runtime_module.runtime()
            migrate(made.engine)
            yield made
        finally:
            runtime_module.runtime.cache_clear()
            event_log.cache_clear()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def rt(request, tmp_path):
    """The process-wide runtime the tasks use, on a fresh database and store."""
    with runtime_on(request, tmp_path, request.param) as made:
        yield made


def nginx_provider(nginx, name: str, payloads: dict[str, bytes], **options: Any) -> tuple[HostCreate, Path]:
    """Files written under a fresh directory that nginx serves, and an HTTP acquisition host over it."""
    directory = uuid.uuid4().hex
    root = nginx.www_dir / directory
    for relative, payload in payloads.items():
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_bytes(payload)
    host = HostCreate(
        name=name,
        kind=HostKind.ACQUISITION,
        protocol="http",
        address=nginx.base_url,
        login=nginx.username,
        password=nginx.password,
        directory=f"/{directory}",
        options={"webdav": False, **options},
    )
    return host, root


def acquisition_setup(engine, source: Source, destination: str = "acq", **rule: Any) -> tuple[Host, Any]:
    """A destination, the source's acquisition host and one listing rule; returns (host, rule)."""
    with session_scope(engine) as session:
        create_destination(session, DestinationCreate(name=destination))
        create_host(session, source.host, known_protocols=PROTOCOLS)
        created = add_rule(session, source.host.name, ListingRuleCreate(destination=destination, **source.rule | rule))
        host = session.get(Host, source.host.name)
        assert host is not None
    return host, created


def attach_local_site(engine, directory: Path, destination: str = "acq", name: str = "site-host") -> None:
    """Give the destination a dissemination host: a local directory standing for a remote site."""
    with session_scope(engine) as session:
        create_host(
            session,
            HostCreate(name=name, protocol="file", address=str(directory)),
            known_protocols=frozenset({"file"}),
        )
        attach_host(session, destination, name, HostKind.DISSEMINATION)
