"""One fixture per transfer module, each against a real server: the contract suite runs on all."""

from __future__ import annotations

import uuid

import pytest

from catalog.models import Host

FTP_VARIANTS = {
    "ftp": ("plain", True),
    "ftp-active": ("plain", False),
    "ftps-explicit": ("explicit", True),
    "ftps-implicit": ("implicit", True),
    "ftps-implicit-active": ("implicit", False),
}


@pytest.fixture(params=["file", "sftp", "s3", *FTP_VARIANTS])
def host(request, tmp_path) -> Host:
    kind = request.param
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
    if kind == "sftp":
        sshd = request.getfixturevalue("sshd")
        return Host(
            name="sftp",
            protocol="sftp",
            address=f"{sshd.host}:{sshd.port}",
            login=sshd.username,
            directory=str(sshd.data_dir / uuid.uuid4().hex),
            options={"key_filename": str(sshd.client_key_path), "known_hosts": str(sshd.known_hosts_path)},
        )
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
