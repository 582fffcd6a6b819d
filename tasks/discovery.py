"""Discovery: list an acquisition host's directories by its listing rules and register what is new.

The listing streams (`blocks.listing.iter_entries`): entries are filtered as they arrive and
registered a page at a time (one transaction each, in a thread of its own while the next page is
listed), so a directory of 100,000 files never sits in memory whole.
Sub-directories found while a directory is listed are listed after it (an FTP control connection
serves one listing at a time).
"""

from __future__ import annotations

import contextlib
import posixpath
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime

import fsspec
import sqlalchemy as sa
from prefect import task

from blocks.base import HostBlock
from blocks.indexes import document_entries
from blocks.listing import SERVER_SIDE_PREFIX, Entry, iter_entries, wildcard_prefix
from blocks.registry import block_for
from catalog.acquisition import Listed, ListingRule, entry_filter, register_listed, render_dates, target_for
from catalog.database import session_scope
from catalog.errors import InvalidInput
from catalog.models import Host, utcnow

PAGE = 1000
"""Entries registered per transaction."""


@dataclass(frozen=True)
class RuleOutcome:
    rule_id: int
    directory: str
    listed: int
    registered: int


def listing_root(block: HostBlock, host: Host, rule: ListingRule, now: datetime) -> str:
    """The rule's directory on the host's filesystem, dates expanded."""
    return block.join(render_dates(host.directory, now), render_dates(rule.directory, now))


def _entries(
    block: HostBlock, fs: fsspec.AbstractFileSystem, path: str, listing_format: str, name_prefix: str = ""
) -> Iterator[Entry]:
    if not listing_format:
        return iter_entries(block, fs, path, name_prefix=name_prefix)
    return document_entries(fs, path, listing_format)


def walk(
    block: HostBlock,
    fs: fsspec.AbstractFileSystem,
    root: str,
    max_depth: int,
    listing_format: str = "",
    wildcard: str | None = None,
) -> Iterator[tuple[str, Listed]]:
    """(name, entry) for every file under `root` down to `max_depth` levels; target is the path
    relative to `root` (for a listing document: relative to the document's directory).

    Without sub-directories to descend into, the wildcard's literal start goes to the server where
    the protocol narrows listings by name (object stores), so only candidates cross the network; the
    wildcard itself is still applied to every name by the rule's filter.
    """
    name_prefix = wildcard_prefix(wildcard) if max_depth == 0 and block.protocol in SERVER_SIDE_PREFIX else ""
    pending = [(root, 0)]
    document = root.partition("?")[0]  # a STAC API search's parameters follow its path
    base = posixpath.dirname(document.rstrip("/")) if listing_format in ("json", "csv", "stac", "stac-api") else root
    prefix = base.rstrip("/") + "/" if base.strip("/") else base
    while pending:
        directory, depth = pending.pop(0)
        below: list[str] = []
        for entry in _entries(block, fs, directory, listing_format, name_prefix):
            if entry.is_directory:
                if depth < max_depth:
                    below.append(entry.path)
                continue
            relative = entry.path[len(prefix) :] if entry.path.startswith(prefix) else entry.name
            yield entry.name, Listed(entry.path, relative.lstrip("/"), entry.size, entry.modified)
        if listing_format in ("", "html"):
            pending.extend((d, depth + 1) for d in below)


def discover_rule(
    engine: sa.Engine, host: Host, rule: ListingRule, *, by: str, now: datetime | None = None
) -> RuleOutcome:
    """One rule's listing, filtered and registered page by page."""
    assert rule.id is not None
    if rule.listing_format == "mqtt":
        return RuleOutcome(rule.id, rule.directory, 0, 0)  # discovered by its subscription, not by listing
    now = now or utcnow()
    block = block_for(host)
    fs = block.filesystem()
    root = listing_root(block, host, rule, now)
    keeps = entry_filter(rule, now)
    listed = registered = 0
    page: list[Listed] = []

    def register(entries: list[Listed]) -> int:
        with session_scope(engine) as session:
            return register_listed(session, rule, entries, by=by)

    # Pages are registered in a thread of their own, in order, one transaction each, while the next
    # page is listed and filtered here: the database's work (which runs without the GIL) overlaps
    # the listing's. At most one page waits for the registrar, so memory stays two pages.
    with ThreadPoolExecutor(1, thread_name_prefix=f"register-rule-{rule.id}") as registrar:
        waiting: Future[int] | None = None
        try:
            for name, entry in walk(block, fs, root, rule.max_depth, rule.listing_format, rule.wildcard):
                listed += 1
                if not keeps(name, entry.size, entry.modified):
                    continue
                try:
                    target = target_for(rule, entry.target)
                except InvalidInput:
                    continue  # a name that cannot be a target (control characters): never registered
                page.append(Listed(entry.path, target, entry.size, entry.modified))
                if len(page) >= PAGE:
                    if waiting is not None:
                        registered += waiting.result()  # a failed page stops the pass here
                    waiting, page = registrar.submit(register, page), []
        except BaseException:
            if waiting is not None:  # let the page under way finish; the listing's error is the one to tell
                with contextlib.suppress(Exception):
                    waiting.result()
            raise
        if waiting is not None:
            registered += waiting.result()
        registered += register(page)
    return RuleOutcome(rule.id, posixpath.normpath(root) if root else root, listed, registered)


@task(name="discover", task_run_name="discover {host.name} rule {rule.id}")
def discover_rule_task(host: Host, rule: ListingRule, by: str) -> RuleOutcome:
    from tasks.runtime import runtime

    return discover_rule(runtime().engine, host, rule, by=by)
