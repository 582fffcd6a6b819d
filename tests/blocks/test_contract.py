"""The contract every host block keeps, checked against a real server for each protocol."""

from __future__ import annotations

import hashlib
import os
from datetime import UTC, datetime

import pytest

from blocks.registry import block_for
from catalog.errors import FailOverToNextHost, FailTransfer, RetryOnSameHost
from catalog.store import DataStore
from tasks.delivery import Delivery
from tasks.transfer import send_data_file, temporary_path


def delivery(store: DataStore, host, data: bytes, target: str, transfer_id: int = 1, size=None) -> Delivery:
    stored = store.put_stream([data])
    block = block_for(host)
    return Delivery(transfer_id, stored.key, size or stored.size, stored.md5, block, block.join(host.directory, target))


def remote_md5(fs, path) -> str:
    digest = hashlib.md5()
    with fs.open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def test_a_file_arrives_whole_under_its_final_name(host, store):
    data = os.urandom(5 * 1024 * 1024 + 3)
    d = delivery(store, host, data, "a/b/forecast.grib")
    fs = d.host.filesystem()
    sent = send_data_file(store, d, fs)
    assert sent.bytes == len(data)
    assert fs.size(d.remote_path) == len(data)
    assert remote_md5(fs, d.remote_path) == hashlib.md5(data).hexdigest()
    assert not fs.exists(temporary_path(d.remote_path, 1))
    assert sent.md5_verified == d.host.reports_md5


def test_a_second_delivery_replaces_the_file(host, store):
    first = delivery(store, host, b"old" * 1000, "same.bin")
    fs = first.host.filesystem()
    send_data_file(store, first, fs)
    second = delivery(store, host, b"new" * 10, "same.bin", transfer_id=2)
    send_data_file(store, second, fs)
    assert fs.cat_file(second.remote_path) == b"new" * 10


def test_a_failed_check_leaves_nothing_under_the_final_name(host, store):
    d = delivery(store, host, b"x" * 1000, "bad.bin", size=999)  # the site will not match the record
    fs = d.host.filesystem()
    with pytest.raises(RetryOnSameHost, match="size check failed"):
        send_data_file(store, d, fs)
    assert not fs.exists(d.remote_path)
    assert not fs.exists(temporary_path(d.remote_path, 1))


def test_declared_capabilities_hold(host, store):
    block = block_for(host)
    fs = block.filesystem()
    if block.supports_rename:
        d = delivery(store, host, b"r" * 100, "ren/one.bin")
        send_data_file(store, d, fs)
        fs.mv(d.remote_path, block.join(host.directory, "ren/two.bin"))
        assert fs.cat_file(block.join(host.directory, "ren/two.bin")) == b"r" * 100
        assert not fs.exists(d.remote_path)
    if block.reports_md5:
        d = delivery(store, host, b"m" * 100, "md5.bin")
        send_data_file(store, d, fs)
        assert block.remote_md5(fs, d.remote_path) == hashlib.md5(b"m" * 100).hexdigest()
    if block.supports_server_side_copy:
        d = delivery(store, host, b"c" * 100, "copy/src.bin")
        send_data_file(store, d, fs)
        fs.copy(d.remote_path, block.join(host.directory, "copy/dst.bin"))
        assert fs.cat_file(block.join(host.directory, "copy/dst.bin")) == b"c" * 100


def moved_to(host, port: int, **options):
    """`host` with its server at 127.0.0.1:`port` instead, and `options` added."""
    from urllib.parse import urlsplit, urlunsplit

    if "://" in host.address:
        parts = urlsplit(host.address)
        address = urlunsplit(parts._replace(netloc=f"127.0.0.1:{port}"))
    else:
        address = f"127.0.0.1:{port}"
    return host.model_copy(update={"address": address, "options": {**host.options, **options}})


def test_unreachable_hosts_fail_over(host, store):
    if host.protocol == "file":
        pytest.skip("a local directory is always reachable")
    from tests.servers._common import free_port

    d = delivery(store, moved_to(host, free_port(), retries=0), b"x", "x.bin")
    with pytest.raises(FailOverToNextHost):
        send_data_file(store, d)


def test_a_host_that_never_answers_times_out_and_is_retried(host, store, silent_server):
    """A server that accepts the connection and then says nothing (a hung daemon, a black-holing
    firewall) must not hold a mover: the attempt ends after `timeout` and is retried later."""
    if host.protocol == "file":
        pytest.skip("a local directory has no server")
    import time

    d = delivery(store, moved_to(host, silent_server, timeout=2, retries=0), b"x" * 1000, "hung.bin")
    started = time.monotonic()
    with pytest.raises(RetryOnSameHost):
        send_data_file(store, d)
    assert time.monotonic() - started < 20


def test_refused_access_stops_the_transfer(host, store, tmp_path):
    if host.protocol == "file":
        readonly = tmp_path / "readonly"
        readonly.mkdir()
        readonly.chmod(0o500)
        if os.access(readonly, os.W_OK):
            pytest.skip("running as root: directory permissions do not apply")
        bad = host.model_copy(update={"address": str(readonly)})
    elif host.protocol == "sftp" and host.password:
        bad = host.model_copy(update={"password": "wrong-secret"})
    elif host.protocol == "sftp":
        other_key = tmp_path / "other_key"
        os.system(f"ssh-keygen -q -t ed25519 -N '' -f {other_key}")
        bad = host.model_copy(update={"options": {**host.options, "key_filename": str(other_key)}})
    elif host.protocol in ("ftp", "http", "https", "webdav"):
        bad = host.model_copy(update={"password": "wrong-secret"})
    else:
        # moto accepts any secret, so S3 is refused here by a bucket that does not exist.
        bad = host.model_copy(update={"directory": "no-such-bucket-anywhere"})
    d = delivery(store, bad, b"x", "x.bin")
    with pytest.raises(FailTransfer):
        send_data_file(store, d)


def test_list_size_mtime_and_delete(host, store):
    block = block_for(host)
    fs = block.filesystem()
    for name in ("one.bin", "two.bin", "three.bin"):
        send_data_file(store, delivery(store, host, name.encode() * 10, f"listing/{name}"))
    directory = block.join(host.directory, "listing")
    listed = fs.ls(directory, detail=False)
    assert sorted(p.rsplit("/", 1)[-1] for p in listed) == ["one.bin", "three.bin", "two.bin"]
    assert all(p.strip("/").startswith(directory.strip("/")) for p in listed)  # full paths, not bare names
    assert fs.size(f"{directory}/three.bin") == 90
    modified = fs.modified(f"{directory}/one.bin")
    assert modified.tzinfo is not None
    assert abs((modified - datetime.now(UTC)).total_seconds()) < 300
    fs.rm(f"{directory}/two.bin")
    assert not fs.exists(f"{directory}/two.bin")
    assert sorted(p.rsplit("/", 1)[-1] for p in fs.ls(directory, detail=False)) == ["one.bin", "three.bin"]


def test_resume_continues_an_interrupted_upload(host, store):
    block = block_for(host)
    if not block.supports_resume:
        pytest.skip(f"{host.protocol} does not declare resume")
    fs = block.filesystem()
    path = block.join(host.directory, "resume/part.bin")
    fs.makedirs(block.join(host.directory, "resume"), exist_ok=True)
    first, rest = os.urandom(300_000), os.urandom(200_000)
    with fs.open(path, "wb") as f:
        f.write(first)  # the connection "breaks" here
    with fs.open(path, "ab") as f:
        f.write(rest)
    assert fs.size(path) == 500_000
    assert remote_md5(fs, path) == hashlib.md5(first + rest).hexdigest()


def test_a_whole_file_streams_back(host, store):
    data = os.urandom(3 * 1024 * 1024 + 5)
    d = delivery(store, host, data, "back/whole.bin")
    send_data_file(store, d)
    fs = d.host.filesystem()
    with d.host.open_stream(fs, d.remote_path) as f:
        assert store.put_stream(iter(lambda: f.read(1 << 20), b"")).md5 == hashlib.md5(data).hexdigest()
    with d.host.open_stream(fs, d.remote_path) as f:
        assert f.read(10) == data[:10]  # stopping early leaves the connection usable
    assert fs.size(d.remote_path) == len(data)


class BreaksAfter:
    """A store read that fails part-way, like a disk error or the guard stopping a slow transfer."""

    def __init__(self, inner, limit: int) -> None:
        self.inner, self.limit, self.read_so_far = inner, limit, 0

    def read(self, size=-1):
        if self.read_so_far >= self.limit:
            raise OSError("disk read failed")
        chunk = self.inner.read(size)
        self.read_so_far += len(chunk)
        return chunk

    def close(self):
        self.inner.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def test_a_failure_mid_stream_never_leaves_a_partial_file_under_the_final_name(host, store, monkeypatch):
    data = os.urandom(40 * 1024 * 1024)  # past one S3 part (16 MiB), so a multipart upload is under way
    d = delivery(store, host, data, "broken/big.bin")
    opener = store.open
    monkeypatch.setattr(store, "open", lambda key: BreaksAfter(opener(key), 36 * 1024 * 1024))
    with pytest.raises(RetryOnSameHost, match="disk read failed"):
        send_data_file(store, d)
    fs = d.host.filesystem()
    assert not fs.exists(d.remote_path)
    assert not fs.exists(temporary_path(d.remote_path, 1))


def test_a_rate_cap_slows_the_transfer_and_a_minimum_rate_interrupts_it(host, store):
    import time

    capped = host.model_copy(update={"options": {**host.options, "max_rate": 2_000_000}})
    d = delivery(store, capped, os.urandom(1_000_000), "paced/capped.bin")
    started = time.monotonic()
    send_data_file(store, d)
    assert time.monotonic() - started >= 0.45
    crawling = host.model_copy(
        update={"options": {**host.options, "max_rate": 1_000_000, "min_rate": 10_000_000, "min_rate_after": 0.2}}
    )
    d = delivery(store, crawling, os.urandom(2_000_000), "paced/slow.bin", transfer_id=2)
    with pytest.raises(RetryOnSameHost, match="too slow"):
        send_data_file(store, d)
    assert not d.host.filesystem().exists(d.remote_path)


def test_a_data_file_missing_from_the_store_fails_the_transfer(host, store):
    d = delivery(store, host, b"x" * 100, "missing.bin")
    store.delete(d.store_key)
    with pytest.raises(FailTransfer, match="not found"):
        send_data_file(store, d)
    assert not d.host.filesystem().exists(d.remote_path)


def served_directory(host, request):
    """Where the test server keeps `host.directory` on this machine, or None for in-memory emulators."""
    from pathlib import Path

    if host.protocol == "file":
        return Path(host.address)
    if host.name == "sftp-password":  # a chrooted server: its / is its data directory
        return request.getfixturevalue("sftp_password_server").data_dir / host.directory.lstrip("/")
    if host.protocol == "sftp":
        return Path(host.directory)
    if host.protocol == "ftp":
        mode = {"none": "plain"}.get(host.options["tls"], host.options["tls"])
        return request.getfixturevalue("ftp_servers")(mode).data_dir / host.directory.lstrip("/")
    if host.protocol in ("http", "https"):
        server = request.getfixturevalue("nginx_tls" if host.protocol == "https" else "nginx")
        return server.www_dir / host.directory.lstrip("/")
    return None


#: What each server says when its disk is full, and so what pds can make of it. OpenSSH's SFTP says
#: only "Failure", then statvfs shows the disk full; pyftpdlib loses the reason ("426 None; transfer
#: aborted.", or just a reset data connection); nginx answers 500 (and leaves its own temporary file).
#: Where the server's words cannot tell, the attempt is retried on the same host.
FULL_DISK = {
    "file": (FailOverToNextHost, "No space left"),
    "sftp": (FailOverToNextHost, "no space left"),
    "ftp": (RetryOnSameHost, "host ftp"),
    "http": (RetryOnSameHost, "500 Internal Server Error"),
    "https": (RetryOnSameHost, "500 Internal Server Error"),
}


def test_a_full_disk_is_classified_in_the_servers_words(host, store, request, tmp_path):
    """The site's disk fills up mid-file: the reason keeps what the server said, the attempt goes
    where that reason sends it, and no partial file is left behind."""
    import subprocess

    if host.protocol == "ftp":
        # A pyftpdlib server of its own: over TLS a full disk drops its session, and the shared
        # servers of the other tests have been seen to stop answering later in the same run.
        from tests.servers.ftp import FtpServer

        mode = {"none": "plain"}.get(host.options["tls"], host.options["tls"])
        own = FtpServer(tmp_path / "ftp-full", mode).start()
        request.addfinalizer(own.stop)
        host.address = f"{own.host}:{own.port}"
        if mode != "plain":
            host.options = {**host.options, "cafile": str(own.cert_path)}
        directory = own.data_dir / host.directory.lstrip("/")
    else:
        directory = served_directory(host, request)
    if directory is None:
        pytest.skip(f"the {host.protocol} emulator has no storage limit to reach")
    directory.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(directory)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here (needs root): {mounted.stderr.decode().strip()}")
    expected, words = FULL_DISK[host.protocol]
    try:
        d = delivery(store, host, os.urandom(3 * 1024 * 1024), "full.bin")
        with pytest.raises(expected, match=words):
            send_data_file(store, d)
        names = {p.name for p in directory.iterdir()}
        assert "full.bin" not in names, "a partial file was left under the final name"
        if host.protocol != "ftp":  # pyftpdlib over TLS can drop the session, so no delete is possible;
            # the next attempt of this transfer writes the same temporary name again
            assert temporary_path("full.bin", 1) not in names
    finally:
        subprocess.run(["umount", "-l", str(directory)], check=True)
