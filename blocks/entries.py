"""What a directory listing yields, for every protocol (standard library only: a listing process
imports it without Prefect)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any


@dataclass(frozen=True, slots=True)
class Entry:
    """One thing in a listed directory."""

    path: str
    """The full path, as `fs.ls` gives it and as `fs` takes it back."""
    name: str
    """The last part of `path`."""
    size: int | None
    """Bytes, for files whose size the server tells; None for directories."""
    modified: datetime | None
    """Last modification (UTC-aware), or None when the server does not tell (object-store prefixes)."""
    is_directory: bool
    meta: dict[str, Any] | None = None
    """What the listing document says of the file beyond its name, size and time (a STAC listing:
    `{"stac": {"item": …, "asset": key, "collection": …}}`), recorded as the data file's metadata."""


def child_path(directory: str, name: str) -> str:
    """`name` under `directory`, written the way fsspec backends write listed paths."""
    if directory.strip("/"):
        return f"{directory.rstrip('/')}/{name}"
    return f"/{name}" if directory.startswith("/") else name


def walk_tree(
    entries_of: Callable[[str], Iterable[Entry]], root: str, max_depth: int, prefix: str, *, descend: bool = True
) -> Iterator[tuple[Entry, str]]:
    """(entry, path relative to `prefix`) for every file under `root`, `max_depth` levels of
    sub-directories down (breadth first: a directory is listed whole before those found in it, as
    an FTP control connection serves one listing at a time); `descend` False lists `root` only."""
    pending = [(root, 0)]
    while pending:
        directory, depth = pending.pop(0)
        below: list[str] = []
        for entry in entries_of(directory):
            if entry.is_directory:
                if depth < max_depth:
                    below.append(entry.path)
                continue
            relative = entry.path[len(prefix) :] if entry.path.startswith(prefix) else entry.name
            yield entry, relative.lstrip("/")
        if descend:
            pending.extend((d, depth + 1) for d in below)
