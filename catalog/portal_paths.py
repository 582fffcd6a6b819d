"""The Data Portal's paths and what they show: a data user's reach, tree paths, entries.

Every front end parses the paths its clients send with `parse_path`, so `.` and `..` are resolved the
same way everywhere and never rise above the root.
"""

from __future__ import annotations

import fnmatch
import posixpath
from dataclasses import dataclass
from datetime import datetime

from catalog.errors import InvalidInput
from catalog.models import DataFile, DataTransfer
from catalog.portal_models import Operation


@dataclass(frozen=True)
class PortalUser:
    """A logged-in data user and what it may reach."""

    login: str
    is_admin: bool
    reach: dict[str, frozenset[Operation]]
    """Destination → allowed operations (admins reach every destination with every operation)."""
    description: str = ""
    country_code: str = ""


@dataclass(frozen=True)
class Entry:
    """A file or directory of the tree, as listings and stat calls show it."""

    name: str
    is_dir: bool
    size: int = 0
    mtime: datetime | None = None
    md5: str | None = None
    pending: bool = False
    """A file registered without retrieval whose content is not fetched yet (its size is the listed one)."""


@dataclass(frozen=True)
class TreePath:
    """A parsed path: the root (no destination), a destination, or a target inside one."""

    destination: str | None
    target: str

    def __str__(self) -> str:
        return "/" + "/".join(p for p in (self.destination, self.target) if p)


def parse_path(path: str) -> TreePath:
    """`/dest/a/b.bin` → TreePath("dest", "a/b.bin"); `.` and `..` are resolved and never rise above `/`.

    The caller gives the path after its protocol's own decoding (URL, FTP, SFTP); a backslash, a NUL or
    another control character is refused rather than guessed at.
    """
    if any(ord(c) < 32 or c in "\\\x7f" for c in path):
        raise InvalidInput(f"the path {path!r} contains a control character or a backslash")
    parts: list[str] = []
    for segment in path.split("/"):
        if segment in ("", "."):
            continue
        if segment == "..":
            if parts:
                parts.pop()
            continue
        parts.append(segment)
    if not parts:
        return TreePath(None, "")
    return TreePath(parts[0], "/".join(parts[1:]))


def is_temporary(name: str, patterns: list[str]) -> bool:
    base = posixpath.basename(name)
    return any(fnmatch.fnmatchcase(base, p) for p in patterns)


def entry_of(name: str, transfer: DataTransfer, data_file: DataFile) -> Entry:
    pending = data_file.store_key is None
    return Entry(name, False, data_file.size or 0, data_file.arrived_at or transfer.queued_at, data_file.md5, pending)
