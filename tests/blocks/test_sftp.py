"""SFTP specifics beyond the contract: host-key pinning."""

from __future__ import annotations

import subprocess

import pytest

from catalog.errors import FailTransfer
from catalog.models import Host
from tasks.transfer import send_data_file
from tests.blocks.test_contract import delivery


def test_a_host_key_that_does_not_match_the_pinned_one_stops_the_transfer(sshd, store, tmp_path):
    impostor = tmp_path / "impostor"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(impostor)], check=True)
    kind, key = (tmp_path / "impostor.pub").read_text().split()[:2]
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(f"[{sshd.host}]:{sshd.port} {kind} {key}\n")
    host = Host(
        name="pinned",
        protocol="sftp",
        address=f"{sshd.host}:{sshd.port}",
        login=sshd.username,
        directory=str(sshd.data_dir / "pinned"),
        options={"key_filename": str(sshd.client_key_path), "known_hosts": str(known_hosts)},
    )
    d = delivery(store, host, b"secret product", "x.bin")
    with pytest.raises(FailTransfer, match="does not match the pinned one"):
        send_data_file(store, d)
    assert not (sshd.data_dir / "pinned" / "x.bin").exists()
