"""SFTP specifics beyond the contract: host-key pinning, and small files sent whole, several in flight
on one connection, with no per-file mkdir or stat."""

from __future__ import annotations

import os
import subprocess
import uuid
from collections import Counter

import asyncssh
import pytest

from blocks.registry import block_for
from catalog.errors import FailOverToNextHost, FailTransfer
from catalog.models import Host
from tasks.transfer import Delivered, ParallelPuts, send_data_file
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


def sftp_host(sshd, directory: str, **options) -> Host:
    return Host(
        name="small-files",
        protocol="sftp",
        address=f"{sshd.host}:{sshd.port}",
        login=sshd.username,
        directory=directory,
        options={"key_filename": str(sshd.client_key_path), **options},
    )


class Requests:
    """Counts the path requests the SFTP client makes that a small file must not need (mkdir, stat):
    asyncssh's own methods, wrapped, against the real OpenSSH server."""

    def __init__(self, monkeypatch) -> None:
        self.counts: Counter[str] = Counter()
        for name in ("mkdir", "stat", "makedirs", "exists", "isdir"):
            original = getattr(asyncssh.SFTPClient, name)

            async def counted(client, *args, _name=name, _original=original, **kwargs):
                self.counts[_name] += 1
                return await _original(client, *args, **kwargs)

            monkeypatch.setattr(asyncssh.SFTPClient, name, counted)


def send_in_flight(store, host: Host, files: dict[str, bytes], fs) -> list:
    """Files through `ParallelPuts` on one connection, as a batch sends them; their outcomes."""
    puts, outcomes = ParallelPuts(store, fs), []
    for i, (name, data) in enumerate(files.items()):
        puts.start(delivery(store, host, data, name, transfer_id=i + 1), None)
        while puts.full():
            outcomes.append(puts.finish_oldest()[1])
    while puts:
        outcomes.append(puts.finish_oldest()[1])
    return outcomes


def test_small_files_in_flight_arrive_whole_and_only_the_first_makes_the_directory(sshd, store, monkeypatch):
    site = sshd.data_dir / uuid.uuid4().hex / "a" / "b"
    host = sftp_host(sshd, str(site))
    files = {f"f{i:02}.bin": os.urandom(64 * 1024 + i) for i in range(24)}
    first = dict(list(files.items())[:1])
    block = block_for(host)
    fs = block.filesystem()
    try:
        assert block.parallel_puts() == 8
        (outcome,) = send_in_flight(store, host, first, fs)  # into a directory that does not exist yet
        assert isinstance(outcome, Delivered), outcome
        requests = Requests(monkeypatch)
        outcomes = send_in_flight(store, host, dict(list(files.items())[1:]), fs)
    finally:
        block.close(fs)
    assert all(isinstance(o, Delivered) and o.sent.bytes == o.delivery.size for o in outcomes), outcomes
    assert requests.counts == {}  # no mkdir, no stat by path: open, write, fstat, close, rename
    assert sorted(p.name for p in site.iterdir()) == sorted(files)  # no temporary file left
    for name, data in files.items():
        assert (site / name).read_bytes() == data


def test_a_small_file_that_cannot_be_written_leaves_nothing_at_the_site(sshd, store):
    root = sshd.data_dir / uuid.uuid4().hex
    root.mkdir()
    (root / "in").write_bytes(b"a file where the directory should be")
    host = sftp_host(sshd, str(root / "in" / "sub"))
    block = block_for(host)
    fs = block.filesystem()
    try:
        outcomes = send_in_flight(store, host, {"x.bin": b"x" * 1000, "y.bin": b"y" * 1000}, fs)
    finally:
        block.close(fs)
    for outcome in outcomes:
        assert isinstance(outcome, Exception)
        assert f"{root / 'in'} is not a directory" in str(block.classify(outcome))  # the server's words
        assert not isinstance(block.classify(outcome), FailOverToNextHost)  # the host is up: not its fault
    assert sorted(p.name for p in root.iterdir()) == ["in"]
    assert (root / "in").read_bytes() == b"a file where the directory should be"
