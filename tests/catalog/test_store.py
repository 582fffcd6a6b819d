"""The Data Store streams, checksums while streaming, and never shows a partial object."""

import hashlib
import os
import zlib

import fsspec
import pytest

from catalog.store import DataStore


@pytest.fixture(params=["memory", "local"])
def store(request, tmp_path):
    if request.param == "memory":
        fs = fsspec.filesystem("memory", skip_instance_cache=True)
        fs.store.clear()
        return DataStore(fs, f"/store-{os.getpid()}", chunk_size=1000)
    return DataStore.from_url(str(tmp_path / "store"), chunk_size=1000)


def test_put_stream_computes_md5_adler32_and_sha512_like_the_reference(store):
    data = os.urandom(10_500)
    stored = store.put_stream(data[i : i + 777] for i in range(0, len(data), 777))
    assert stored.size == len(data)
    assert stored.md5 == hashlib.md5(data).hexdigest()
    assert stored.sha512 == hashlib.sha512(data).hexdigest()  # in its own thread, chunks in order
    assert stored.adler32 == f"{zlib.adler32(data) & 0xFFFFFFFF:08x}"
    assert b"".join(store.iter_chunks(stored.key)) == data
    assert max(len(c) for c in store.iter_chunks(stored.key)) <= 1000


def test_ranges_are_served_exactly(store):
    data = bytes(range(256)) * 20
    stored = store.put_stream([data])
    assert b"".join(store.iter_chunks(stored.key, start=100, length=2500)) == data[100:2600]
    assert b"".join(store.iter_chunks(stored.key, start=len(data) - 5)) == data[-5:]


def test_a_failed_stream_leaves_no_object_and_no_temporary_file(store):
    def broken():
        yield b"x" * 1500
        raise ConnectionError("client went away")

    key = store.new_key()
    with pytest.raises(ConnectionError):
        store.put_stream(broken(), key)
    assert not store.exists(key)
    assert not store.fs.exists(f"{store.root}/tmp") or store.fs.ls(f"{store.root}/tmp") == []


def test_keys_are_unique_and_cannot_escape_the_store(store):
    assert store.new_key() != store.new_key()
    with pytest.raises(ValueError):
        store.open("../outside")
    with pytest.raises(ValueError):
        store.open("/etc/passwd")


def test_known_checksum_values():
    # Wikipedia's ADLER32 example, and the MD5 of the empty string.
    store = DataStore(fsspec.filesystem("memory"), "/known")
    assert store.put_stream([b"Wikipedia"]).adler32 == "11e60398"
    assert store.put_stream([]).md5 == "d41d8cd98f00b204e9800998ecf8427e"
    assert store.put_stream([]).sha512.startswith("cf83e1357eefb8bdf1542850d66d8007")


def test_a_store_from_settings_reads_from_its_replicas_when_the_primary_object_is_missing(tmp_path):
    from catalog.settings import Settings

    replica_root = tmp_path / "replica"
    settings = Settings(data_dir=tmp_path / "data", replicas=[{"url": str(replica_root)}])
    store = DataStore.from_settings(settings)
    assert [r.root for r in store.replicas] == [DataStore.from_url(str(replica_root)).root]
    stored = store.put_stream([b"abc", b"def"])
    store.replicas[0].put_stream(store.iter_chunks(stored.key), stored.key)
    store.delete(stored.key)
    assert b"".join(store.iter_chunks(stored.key)) == b"abcdef"
