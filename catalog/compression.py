"""The compressions a destination may ask for, and the extension each adds to the target name."""

from __future__ import annotations

from catalog.errors import InvalidInput

#: Name → file-name extension. The codecs themselves live in `tasks/compression.py`.
EXTENSIONS: dict[str, str] = {
    "gzip": ".gz",
    "bzip2": ".bz2",
    "lzma": ".xz",
    "zstd": ".zst",
    "lz4": ".lz4",
    "snappy": ".sz",
}


def check_compression(name: str | None) -> str | None:
    if name is None or name in EXTENSIONS:
        return name
    raise InvalidInput(f"unknown compression {name!r}; known: {', '.join(EXTENSIONS)}")
