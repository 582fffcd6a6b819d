"""One SFTP file read start to end through a pipeline of READ requests (`blocks.sftp_stream`),
against OpenSSH."""

from __future__ import annotations

import os

import pytest

from blocks.registry import block_for
from blocks.sftp_stream import SftpReadStream
from tests.blocks.conftest import sftp_host, sshd_directory


@pytest.fixture
def sftp(sshd):
    """(block, its filesystem, a fresh directory on the server)."""
    directory = sshd_directory(sshd)
    directory.mkdir(parents=True)
    block = block_for(sftp_host(sshd, directory))
    fs = block.filesystem()
    yield block, fs, directory
    block.close(fs)


@pytest.mark.parametrize("size", [0, 1, 261_120, 3 * 1024 * 1024 + 12_345])
def test_a_file_reads_whole_and_in_order(sftp, size):
    """Empty, tiny, exactly one READ, and many READs in flight (a small pipeline, so it refills)."""
    block, fs, directory = sftp
    data = os.urandom(size)
    (directory / "f.bin").write_bytes(data)
    with SftpReadStream(fs, str(directory / "f.bin"), in_flight=4 * 261_120) as stream:
        parts = []
        while chunk := stream.read(1_000_003):  # not a multiple of the READ size
            parts.append(chunk)
    assert b"".join(parts) == data
    with block.open_stream(fs, str(directory / "f.bin")) as stream:  # what retrievals read with
        assert stream.read() == data


def test_short_answers_are_completed_before_what_follows(sftp):
    """READs larger than OpenSSH answers (255 KiB): each answer is short, the rest is asked next."""
    _, fs, directory = sftp
    data = os.urandom(5 * 1024 * 1024 + 7)
    (directory / "f.bin").write_bytes(data)
    stream = SftpReadStream(fs, str(directory / "f.bin"))
    stream._block = 1024 * 1024  # beyond the server's limit
    with stream:
        assert stream.read() == data


def test_a_missing_file_is_file_not_found(sftp):
    block, fs, directory = sftp
    with pytest.raises(FileNotFoundError):
        block.open_raw_stream(fs, str(directory / "missing.bin"))


def test_stopping_early_leaves_the_connection_usable(sftp):
    _, fs, directory = sftp
    data = os.urandom(4 * 1024 * 1024)
    (directory / "f.bin").write_bytes(data)
    with SftpReadStream(fs, str(directory / "f.bin")) as stream:
        assert stream.read(10) == data[:10]
    assert fs.cat_file(str(directory / "f.bin")) == data
