"""Compression on the fly: a compressed copy of a data file, made once per codec and kept in the store.

The copy is streamed chunk by chunk (memory stays flat) and stored under `<key>.<codec>` with its own
MD5, so several destinations asking for the same codec share it, and a retry does not compress again.
"""

from __future__ import annotations

import bz2
import lzma
import zlib
from dataclasses import replace
from typing import Protocol

import cramjam

from catalog.compression import EXTENSIONS
from catalog.store import Checksums, DataStore, StoredObject
from tasks.delivery import Delivery


class Compressor(Protocol):
    def compress(self, chunk: bytes) -> bytes: ...
    def finish(self) -> bytes: ...


class _Stdlib:
    def __init__(self, codec: zlib._Compress | bz2.BZ2Compressor | lzma.LZMACompressor) -> None:
        self._codec = codec

    def compress(self, chunk: bytes) -> bytes:
        return self._codec.compress(chunk)

    def finish(self) -> bytes:
        return self._codec.flush()


class _Cramjam:
    def __init__(self, codec: cramjam.zstd.Compressor | cramjam.lz4.Compressor | cramjam.snappy.Compressor) -> None:
        self._codec = codec

    def compress(self, chunk: bytes) -> bytes:
        self._codec.compress(chunk)
        return bytes(self._codec.flush())

    def finish(self) -> bytes:
        return bytes(self._codec.finish())


def compressor(name: str) -> Compressor:
    """A streaming compressor producing the standard file format for `name` (.gz, .bz2, .xz, frames)."""
    if name == "gzip":
        return _Stdlib(zlib.compressobj(6, zlib.DEFLATED, 16 + zlib.MAX_WBITS))
    if name == "bzip2":
        return _Stdlib(bz2.BZ2Compressor(9))
    if name == "lzma":
        return _Stdlib(lzma.LZMACompressor(lzma.FORMAT_XZ))
    if name == "zstd":
        return _Cramjam(cramjam.zstd.Compressor())
    if name == "lz4":
        return _Cramjam(cramjam.lz4.Compressor())
    if name == "snappy":
        return _Cramjam(cramjam.snappy.Compressor())
    raise ValueError(f"unknown compression {name!r}")


def compressed_copy(store: DataStore, key: str, name: str) -> StoredObject:
    """The compressed copy of object `key`, made now or found from an earlier transfer."""
    target = f"{key}.{name}"
    codec = compressor(name)
    if store.exists(target):
        # Already made for another destination or an earlier attempt: only its checksums are needed.
        sums = Checksums()
        for chunk in store.iter_chunks(target):
            sums.update(chunk)
        return sums.stored(target)
    with store.writer(target) as writer:
        for chunk in store.iter_chunks(key):
            if out := codec.compress(chunk):
                writer.write(out)
        writer.write(codec.finish())
        return writer.commit()


def compress_delivery(store: DataStore, delivery: Delivery) -> tuple[Delivery, str | None]:
    """What to send for the destination's compression: the compressed copy (target + extension), or
    the original when compression would not make it smaller. Returns the codec actually applied."""
    name = delivery.compression
    if not name:
        return delivery, None
    copy = compressed_copy(store, delivery.store_key, name)
    if copy.size >= delivery.size:
        return delivery, None
    compressed = replace(
        delivery, store_key=copy.key, size=copy.size, md5=copy.md5, remote_path=delivery.remote_path + EXTENSIONS[name]
    )
    return compressed, name
