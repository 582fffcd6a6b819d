"""One fixture per transfer module, each against a real server: the contract suite runs on all."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

from catalog.models import Host
from tests.conftest import running


def sshd_directory(sshd) -> Path:
    """A fresh directory on the test's OpenSSH server (not made yet)."""
    return sshd.data_dir / uuid.uuid4().hex


def sftp_host(sshd, directory: Path, **fields: Any) -> Host:
    """A host on the test's OpenSSH server, logged in by key with its host key checked."""
    return Host(
        **{"name": "sftp", "protocol": "sftp"}
        | fields
        | {
            "address": f"{sshd.host}:{sshd.port}",
            "login": sshd.username,
            "directory": str(directory),
            "options": {"key_filename": str(sshd.client_key_path), "known_hosts": str(sshd.known_hosts_path)},
        }
    )


@pytest.fixture(scope="session")
def silent_server():
    """The port of a server that accepts connections and never reads or answers."""
    import socket
    import threading

    listener = socket.create_server(("127.0.0.1", 0), backlog=64)
    accepted: list[socket.socket] = []  # kept open: a closed socket would answer with a reset

    def accept_forever() -> None:
        while True:
            try:
                accepted.append(listener.accept()[0])
            except OSError:
                return

    threading.Thread(target=accept_forever, daemon=True).start()
    yield listener.getsockname()[1]
    listener.close()
    for connection in accepted:
        connection.close()


@pytest.fixture(scope="module")
def seaweed(tmp_path_factory):
    """SeaweedFS refusing requests not signed with its one key pair (moto accepts any signature)."""
    from tests.servers.seaweedfs import SeaweedS3Server

    yield from running(SeaweedS3Server(tmp_path_factory.mktemp("seaweed"), check_signatures=True))


FTP_VARIANTS = {
    "ftp": ("plain", True),
    "ftp-active": ("plain", False),
    "ftps-explicit": ("explicit", True),
    "ftps-implicit": ("implicit", True),
    "ftps-implicit-active": ("implicit", False),
}


@pytest.fixture(
    params=[
        "file",
        "sftp",
        "sftp-passphrase",
        "sftp-password",
        "s3",
        "azure",
        "azure-sas",
        "gcs",
        "http",
        "http-plain",
        "https",
        *FTP_VARIANTS,
    ]
)
def host(request, tmp_path) -> Host:
    kind = request.param
    if kind in ("http", "http-plain", "https"):
        server = request.getfixturevalue("nginx_tls" if kind == "https" else "nginx")
        options = {"verify_tls": str(server.cert_path)} if kind == "https" else {"webdav": kind == "http"}
        return Host(
            name=kind,
            protocol="https" if kind == "https" else "http",
            address=server.base_url,
            login=server.username,
            password=server.password,
            directory=f"/{uuid.uuid4().hex}",
            options=options,
        )
    if kind in ("azure", "azure-sas"):
        azurite = request.getfixturevalue("azurite")
        container = f"c-{uuid.uuid4().hex[:12]}"
        azurite.create_container(container)
        credentials = (
            {"options": {"secret_sas_token": azurite.sas_token(container)}}
            if kind == "azure-sas"
            else {"password": azurite.account_key}
        )
        return Host(
            name=kind,
            protocol="azure",
            address=azurite.blob_endpoint,
            login=azurite.account_name,
            directory=container,
            **credentials,
        )
    if kind == "gcs":
        gcs = request.getfixturevalue("gcs_server")
        bucket = f"b-{uuid.uuid4().hex[:12]}"
        gcs.create_bucket(bucket)
        return Host(
            name="gcs",
            protocol="gcs",
            address=gcs.endpoint_url,
            directory=bucket,
            options={"project": gcs.project, "token": "anon"},
        )
    if kind in FTP_VARIANTS:
        mode, passive = FTP_VARIANTS[kind]
        ftp = request.getfixturevalue("ftp_servers")(mode)
        options = {"passive": passive, "tls": {"plain": "none"}.get(mode, mode)}
        if ftp.mode != "plain":
            options["cafile"] = str(ftp.cert_path)
        return Host(
            name="ftp",
            protocol="ftp",
            address=f"{ftp.host}:{ftp.port}",
            login=ftp.username,
            password=ftp.password,
            directory=f"/{uuid.uuid4().hex}",
            options=options,
        )
    if kind == "file":
        return Host(name="local", protocol="file", address=str(tmp_path / "remote"))
    if kind == "sftp-password":
        server = request.getfixturevalue("sftp_password_server")
        return Host(
            name="sftp-password",
            protocol="sftp",
            address=f"{server.host}:{server.port}",
            login=server.username,
            password=server.password,
            directory=f"/{uuid.uuid4().hex}",
            options={"known_hosts": str(server.known_hosts_path)},
        )
    if kind == "sftp-passphrase":
        sshd = request.getfixturevalue("sshd")
        return Host(
            name="sftp-passphrase",
            protocol="sftp",
            address=f"{sshd.host}:{sshd.port}",
            login=sshd.username,
            directory=str(sshd.data_dir / uuid.uuid4().hex),
            options={
                "key_filename": str(sshd.passphrase_key_path),
                "secret_passphrase": sshd.passphrase,
                "known_hosts": str(sshd.known_hosts_path),
            },
        )
    if kind == "sftp":
        return sftp_host(request.getfixturevalue("sshd"), sshd_directory(request.getfixturevalue("sshd")))
    s3 = request.getfixturevalue("s3_server")
    bucket = f"b-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(bucket)
    return Host(
        name="s3",
        protocol="s3",
        address=s3.endpoint_url,
        login=s3.access_key,
        password=s3.secret_key,
        directory=bucket,
        options={"region": s3.region},
    )
