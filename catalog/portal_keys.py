"""One page of a destination's files as an object store lists them: keys in byte order after a
marker, under a prefix, with the keys below a delimiter folded into common prefixes.

Each page is read from the database in key order, from the marker on, a few rows at a time, so
listing page after page of a bucket of 100,000 files reads each file about once (before, every page
read the whole bucket). A folded common prefix is skipped in one step: the next read starts after
every key it holds. Byte order is what S3 clients expect (rclone and aws-cli compare markers that
way); PostgreSQL is asked for it with the "C" collation, SQLite compares text that way already.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass, field
from typing import Any

from sqlmodel import Session, col, select

from catalog.models import DataFile, DataTransfer
from catalog.on_demand import visible as visible_condition
from catalog.portal_paths import Entry, entry_of
from catalog.statuses import TransferStatus

#: Rows read per query while a page fills (duplicates of a target and folded keys need more than a page).
ROWS_PER_READ = 500


@dataclass
class KeyPage:
    """Files (key, entry) and common prefixes, each in byte order; `truncated` when more follow,
    and then `next_marker` is where the next page starts (the last key or prefix of this one)."""

    files: list[tuple[str, Entry]] = field(default_factory=list)
    prefixes: list[str] = field(default_factory=list)
    truncated: bool = False
    next_marker: str = ""


def successor(prefix: str) -> str:
    """The least string greater than every string that starts with `prefix` (non-empty)."""
    last = ord(prefix[-1])
    if last >= 0x10FFFF:  # no greater code point: drop it and carry into the one before
        return successor(prefix[:-1]) if len(prefix) > 1 else ""
    return prefix[:-1] + chr(last + 1)


def _fold(key: str, prefix: str, delimiter: str) -> str | None:
    """The common prefix `key` is folded into, or None when it is listed itself."""
    if not delimiter:
        return None
    cut = key.find(delimiter, len(prefix))
    return key[: cut + len(delimiter)] if cut >= 0 else None


def list_keys(
    session: Session,
    destination: str,
    visible: frozenset[TransferStatus],
    *,
    prefix: str = "",
    delimiter: str = "",
    after: str = "",
    limit: int = 1000,
) -> KeyPage:
    """Up to `limit` files and common prefixes of `destination` after the marker `after`.

    When a target was pushed several times, the newest visible transfer stands for it (as in the
    portal's other views), and files registered without retrieval are listed before they are fetched.
    A common prefix at or before the marker is not listed again, and the keys it holds are skipped.
    """
    bind = session.get_bind()
    target: Any = col(DataTransfer.target)
    if bind.dialect.name == "postgresql":
        target = target.collate("C")
    # Where the reading starts: strictly after the marker, or at a string (inclusive).
    above: str | None = after if after > prefix else None
    start = prefix if above is None else None
    folded = _fold(after, prefix, delimiter) if after.startswith(prefix) else None
    if folded is not None and successor(folded):
        above, start = None, successor(folded)  # the marker's common prefix was listed before: skip it whole
    end = successor(prefix) if prefix else ""
    page = KeyPage()
    items: list[str] = []  # keys and prefixes in order, to find the marker of a truncated page
    while True:
        query = (
            select(DataTransfer, DataFile)
            .where(
                DataTransfer.destination_name == destination,
                visible_condition(visible),
                DataTransfer.data_file_id == DataFile.id,
            )
            .order_by(target, col(DataTransfer.id).desc())
            .limit(ROWS_PER_READ)
        )
        if above is not None:
            query = query.where(target > above)
        if start:
            query = query.where(target >= start)
        if end:
            query = query.where(target < end)
        rows = session.exec(query).all()
        if not rows:
            return page
        jumped = False
        for transfer, data_file in rows:
            key = transfer.target
            if key == above:
                continue  # an older transfer of the target just listed
            above, start = key, None
            common = _fold(key, prefix, delimiter)
            if len(items) >= limit:
                page.truncated, page.next_marker = True, items[-1] if items else after
                return page
            if common is None:
                page.files.append((key, entry_of(posixpath.basename(key), transfer, data_file)))
                items.append(key)
                continue
            page.prefixes.append(common)
            items.append(common)
            # Every key under the common prefix folds into it: read on from the first key past them.
            following = successor(common)
            if not following:
                return page
            above, start, jumped = None, following, True
            break
        if not jumped and len(rows) < ROWS_PER_READ:
            return page
