"""The Data Store: data files as objects in an fsspec location, streamed in and out.

An object is written under `tmp/` and moved to its key only once whole, so a crash never leaves a
partial object under a key a data file points at. ADLER32 (OpenECPDS's own checksum) and MD5 (what
sites and S3 ETags compare) are computed while the bytes stream through, never by re-reading.
"""

from __future__ import annotations

import hashlib
import queue
import threading
import uuid
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import IO, TYPE_CHECKING, Any

import fsspec
from fsspec.core import url_to_fs

if TYPE_CHECKING:
    from catalog.settings import Settings

DEFAULT_CHUNK = 4 * 1024 * 1024


@dataclass(frozen=True)
class StoredObject:
    """What the store knows of an object once it is whole."""

    key: str
    size: int
    adler32: str
    md5: str
    sha512: str


class Checksums:
    """ADLER32, MD5 and SHA-512 of a stream, fed chunk by chunk.

    ADLER32 and MD5 are what ECPDS sites compare; SHA-512 is the integrity a WIS2 notification may
    carry (WNM accepts only SHA-2/SHA-3), taken in the same pass so the file is never read twice.
    The two halves can be fed from two threads (`update_ecpds`, `update_sha512`): hashlib releases
    the GIL on large chunks, so on two cores SHA-512 costs no time next to MD5.
    """

    def __init__(self) -> None:
        self.size = 0
        self._adler = 1
        self._md5 = hashlib.md5(usedforsecurity=False)
        self._sha512 = hashlib.sha512()

    def update(self, chunk: bytes) -> None:
        self.update_ecpds(chunk)
        self.update_sha512(chunk)

    def update_ecpds(self, chunk: bytes) -> None:
        """Size, ADLER32 and MD5."""
        self.size += len(chunk)
        self._adler = zlib.adler32(chunk, self._adler)
        self._md5.update(chunk)

    def update_sha512(self, chunk: bytes) -> None:
        self._sha512.update(chunk)

    @property
    def adler32(self) -> str:
        return f"{self._adler & 0xFFFFFFFF:08x}"

    @property
    def md5(self) -> str:
        return self._md5.hexdigest()

    @property
    def sha512(self) -> str:
        return self._sha512.hexdigest()

    def stored(self, key: str) -> StoredObject:
        """The object `key` these checksums were taken of."""
        return StoredObject(key, self.size, self.adler32, self.md5, self.sha512)


class _Hasher:
    """A thread that feeds the chunks it is given to one digest, in order."""

    def __init__(self, update: Callable[[bytes], None], name: str) -> None:
        self._update = update
        self._chunks: queue.Queue[bytes | None] = queue.Queue(maxsize=2)
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (chunk := self._chunks.get()) is not None:
            self._update(chunk)

    def feed(self, chunk: bytes) -> None:
        self._chunks.put(chunk)

    def finish(self) -> None:
        """Wait until every chunk fed is digested (again: nothing)."""
        if self._thread.is_alive():
            self._chunks.put(None)
            self._thread.join()


class ObjectWriter:
    """An object being written: `write()` chunks, then `commit()` or `abort()` (also as a context)."""

    def __init__(self, store: DataStore, key: str) -> None:
        self._store = store
        self.key = key
        self._temp = store._path(f"tmp/{uuid.uuid4().hex}")
        self._file: IO[bytes] = store.fs.open(self._temp, "wb")
        self.checksums = Checksums()
        self.size = 0
        """Bytes written so far (the checksums catch up in their thread)."""
        self._closed = False
        # Checksums are computed in threads while the next chunk is written (and, for a download,
        # received): MD5 alone costs about as much CPU as the network, so doing it in line halves the
        # speed. MD5 (with ADLER32) and SHA-512 each have their thread, so a second core takes the
        # SHA-512. At most two chunks wait for each.
        self._hashers = [
            _Hasher(self.checksums.update_ecpds, "pds-checksums"),
            _Hasher(self.checksums.update_sha512, "pds-sha512"),
        ]

    def _finish_hashing(self) -> None:
        for hasher in self._hashers:
            hasher.finish()

    def write(self, chunk: bytes) -> None:
        self._file.write(chunk)
        self.size += len(chunk)
        whole = bytes(chunk)
        for hasher in self._hashers:
            hasher.feed(whole)

    def commit(self) -> StoredObject:
        self._file.close()
        self._finish_hashing()
        self._closed = True
        final = self._store._path(self.key)
        self._store.fs.mv(self._temp, final)
        return self.checksums.stored(self.key)

    def abort(self) -> None:
        self._finish_hashing()
        if not self._closed:
            self._closed = True
            try:
                self._file.close()
            finally:
                if self._store.fs.exists(self._temp):
                    self._store.fs.rm(self._temp)

    def __enter__(self) -> ObjectWriter:
        return self

    def __exit__(self, exc_type: object, *_: object) -> None:
        if exc_type is not None:
            self.abort()


class DataStore:
    """Objects under `root` of filesystem `fs`; hand it any fsspec filesystem (tests use memory://)."""

    def __init__(self, fs: fsspec.AbstractFileSystem, root: str, *, chunk_size: int = DEFAULT_CHUNK) -> None:
        self.fs = fs
        self.root = root.rstrip("/")
        self.chunk_size = chunk_size
        self.replicas: list[DataStore] = []
        """Other locations holding copies of the objects; `open` reads from them when an object is
        missing here."""
        if not self.fs.exists(self.root):
            self.fs.makedirs(self.root, exist_ok=True)

    @classmethod
    def from_url(cls, url: str, *, chunk_size: int = DEFAULT_CHUNK, **options: Any) -> DataStore:
        if "://" not in url:
            options.setdefault("auto_mkdir", True)
        fs, root = url_to_fs(url, **options)
        return cls(fs, root, chunk_size=chunk_size)

    @classmethod
    def from_settings(cls, settings: Settings) -> DataStore:
        """The Data Store of `PDS_*` settings, with its replica locations to read from when an object
        is missing here."""
        store = cls.from_url(settings.resolved_store_url(), chunk_size=settings.chunk_size)
        store.replicas = [
            cls.from_url(r["url"], chunk_size=settings.chunk_size, **(r.get("options") or {}))
            for r in settings.replicas
        ]
        return store

    def _path(self, key: str) -> str:
        if not key or key.startswith("/") or ".." in key.split("/"):
            raise ValueError(f"invalid store key {key!r}")
        return f"{self.root}/{key}"

    @staticmethod
    def new_key(now: datetime | None = None) -> str:
        """A fresh, stable object key; dated directories keep listings small."""
        day = (now or datetime.now(UTC)).strftime("%Y/%m/%d")
        return f"objects/{day}/{uuid.uuid4().hex}"

    def writer(self, key: str | None = None) -> ObjectWriter:
        return ObjectWriter(self, key or self.new_key())

    def put_stream(self, chunks: Iterable[bytes], key: str | None = None) -> StoredObject:
        """Store an iterable of byte chunks; nothing is visible under the key unless all arrived."""
        with self.writer(key) as writer:
            for chunk in chunks:
                writer.write(chunk)
            return writer.commit()

    def put_file(self, file: IO[bytes], key: str | None = None) -> StoredObject:
        return self.put_stream(iter(lambda: file.read(self.chunk_size), b""), key)

    def open(self, key: str) -> IO[bytes]:
        try:
            f: IO[bytes] = self.fs.open(self._path(key), "rb", block_size=self.chunk_size)
        except FileNotFoundError:
            for replica in self.replicas:
                if replica.exists(key):
                    return replica.open(key)
            raise
        return f

    def location(self) -> str:
        """Where the objects are, for event lines (no credentials)."""
        protocol = self.fs.protocol if isinstance(self.fs.protocol, str) else self.fs.protocol[0]
        return self.root if protocol in ("file", "local") else f"{protocol}://{self.root}"

    def iter_chunks(self, key: str, start: int = 0, length: int | None = None) -> Iterator[bytes]:
        """Stream an object's bytes, optionally a range, without holding more than one chunk."""
        with self.open(key) as f:
            if start:
                f.seek(start)
            remaining = length
            while remaining is None or remaining > 0:
                want = self.chunk_size if remaining is None else min(self.chunk_size, remaining)
                chunk = f.read(want)
                if not chunk:
                    break
                if remaining is not None:
                    remaining -= len(chunk)
                yield chunk

    def size(self, key: str) -> int:
        return int(self.fs.size(self._path(key)))

    def exists(self, key: str) -> bool:
        return bool(self.fs.exists(self._path(key)))

    def delete(self, key: str) -> None:
        path = self._path(key)
        if self.fs.exists(path):
            self.fs.rm(path)
