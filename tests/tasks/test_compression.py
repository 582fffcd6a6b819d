"""Compression on the fly: standard formats, streamed, shared between destinations, never larger."""

from __future__ import annotations

import bz2
import gzip
import hashlib
import lzma
import os

import cramjam
import pytest

from blocks.local import LocalHost
from catalog.compression import EXTENSIONS
from tasks.compression import compress_delivery, compressed_copy
from tasks.delivery import Delivery

DECOMPRESS = {
    "gzip": gzip.decompress,
    "bzip2": bz2.decompress,
    "lzma": lzma.decompress,
    "zstd": lambda b: bytes(cramjam.zstd.decompress(b)),
    "lz4": lambda b: bytes(cramjam.lz4.decompress(b)),
    "snappy": lambda b: bytes(cramjam.snappy.decompress(b)),
}


@pytest.mark.parametrize("codec", list(EXTENSIONS))
def test_each_codec_writes_its_standard_format_in_chunks(store, codec):
    data = b"GRIB temperature 273.15 " * 200_000 + os.urandom(1000)  # several store chunks
    original = store.put_stream([data])
    copy = compressed_copy(store, original.key, codec)
    compressed = b"".join(store.iter_chunks(copy.key))
    assert copy.size == len(compressed) < len(data)
    assert copy.md5 == hashlib.md5(compressed).hexdigest()
    assert DECOMPRESS[codec](compressed) == data


def delivery(stored, compression):
    host = LocalHost(name="h", address="/tmp/unused")
    return Delivery(1, stored.key, stored.size, stored.md5, host, "/tmp/unused/f.grib", compression)


def test_the_original_goes_when_compression_would_make_it_larger(store):
    stored = store.put_stream([os.urandom(100_000)])
    sent, applied = compress_delivery(store, delivery(stored, "gzip"))
    assert applied is None
    assert (sent.store_key, sent.md5, sent.remote_path) == (stored.key, stored.md5, "/tmp/unused/f.grib")


def test_the_compressed_copy_gets_the_extension_and_is_reused(store):
    stored = store.put_stream([b"0123456789" * 100_000])
    first, applied = compress_delivery(store, delivery(stored, "zstd"))
    assert applied == "zstd" and first.remote_path == "/tmp/unused/f.grib.zst"
    assert first.size < stored.size and first.md5 != stored.md5
    again, _ = compress_delivery(store, delivery(stored, "zstd"))
    assert (again.store_key, again.md5, again.size) == (first.store_key, first.md5, first.size)


def test_no_compression_sends_the_original(store):
    stored = store.put_stream([b"x" * 1000])
    sent, applied = compress_delivery(store, delivery(stored, None))
    assert applied is None and sent.store_key == stored.key
