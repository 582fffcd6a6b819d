"""Discovery: list an acquisition host's directories by its listing rules and register what is new.

The listing streams (`blocks.listing.iter_entries`): entries are filtered as they arrive and
registered a page at a time (one transaction each, in a thread of its own while the next page is
listed), so a directory of 100,000 files never sits in memory whole.
Sub-directories found while a directory is listed are listed after it (an FTP control connection
serves one listing at a time). On SFTP the walk, filters and targets run in a listing process of
their own (`blocks.sftp_lister`), on another core than the registration.
"""

from __future__ import annotations

import contextlib
import gc
import posixpath
import threading
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime

import fsspec
import sqlalchemy as sa
from prefect import task
from sshfs import SSHFileSystem

from blocks.base import HostBlock
from blocks.entries import walk_tree
from blocks.indexes import document_entries
from blocks.listing import SERVER_SIDE_PREFIX, Entry, iter_entries, wildcard_prefix
from blocks.registry import block_for
from blocks.sftp import SftpHost
from blocks.sftp_lister import ListingProcess
from catalog.acquisition import Listed, ListingRule, register_listed, render_dates
from catalog.database import session_scope
from catalog.errors import InvalidInput
from catalog.models import Host, utcnow
from catalog.selection import Selection

PAGE = 1000
"""Entries per page of a listing (what the listing process hands over at a time)."""

BATCH = 10_000
"""Entries registered per transaction, at most. Listings arrive in the server's order (SFTP's is a
hash order), so every insert lands at a random place in the target indexes; larger transactions
write each touched index page once for many entries (measured on 100,000 shuffled entries: 2.6 s of
CPU in 1,000-entry transactions, 1.9 s in 10,000-entry ones). 10,000 entries hold a few MB."""


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


def _prefix(root: str, listing_format: str) -> str:
    """What listed paths are made relative to: the listed directory, or a listing document's own."""
    document = root.partition("?")[0]  # a STAC API search's parameters follow its path
    base = posixpath.dirname(document.rstrip("/")) if listing_format in ("json", "csv", "stac", "stac-api") else root
    return base.rstrip("/") + "/" if base.strip("/") else base


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
    tree = walk_tree(
        lambda directory: _entries(block, fs, directory, listing_format, name_prefix),
        root,
        max_depth,
        _prefix(root, listing_format),
        descend=listing_format in ("", "html"),
    )
    for entry, relative in tree:
        yield entry.name, Listed(entry.path, relative, entry.size, entry.modified, entry.meta)


#: A rule whose last pass (in this process) listed fewer entries than this is listed in process: a
#: listing process takes about half a second of CPU to start, more than a small directory takes.
LISTING_PROCESS_FROM = 2000
_last_listed: dict[int, int] = {}
"""Entries each rule's last pass listed, by rule id (the acquisition scheduler is long-lived)."""


def listing_process(block: HostBlock, rule: ListingRule) -> ListingProcess | None:
    """A process to walk `rule`'s directories in, where that pays: SFTP (whose listings cost the
    client as much CPU as registering their entries, see `blocks.sftp_lister`), for a rule not
    known to list a small directory."""
    if rule.listing_format or not isinstance(block, SftpHost):
        return None
    if _last_listed.get(getattr(rule, "id", None) or 0, LISTING_PROCESS_FROM) < LISTING_PROCESS_FROM:
        return None
    return ListingProcess(block.connect_options(), block.timeout())


def selected_pages(
    block: HostBlock,
    root: str,
    rule: ListingRule,
    now: datetime,
    lister: ListingProcess | None = None,
) -> Iterator[tuple[int, list[Listed]]]:
    """(entries listed so far, a page of the entries the rule keeps, each with its target), the
    walk running in `lister`'s process when it is available, else here (on a connection made only
    then: with a listing process, this process needs none)."""
    selection = Selection.of(rule, now)
    if lister is not None and lister.available():
        directory = SSHFileSystem._strip_protocol(root) if root else root
        yield from lister.walk(directory, rule.max_depth, _prefix(root, ""), selection, PAGE)
        return
    fs = block.filesystem()
    keeps = selection.filter()
    listed, page = 0, []
    for name, entry in walk(block, fs, root, rule.max_depth, rule.listing_format, rule.wildcard):
        listed += 1
        if not keeps(name, entry.size, entry.modified):
            continue
        try:
            target = selection.target(entry.target)
        except InvalidInput:
            continue  # a name that cannot be a target (control characters): never registered
        page.append(Listed(entry.path, target, entry.size, entry.modified, entry.meta))
        if len(page) >= PAGE:
            yield listed, page
            page = []
    yield listed, page


_passes_under_way = 0
_passes_lock = threading.Lock()


@contextlib.contextmanager
def _collecting_only_new_objects() -> Iterator[None]:
    """While passes run, the garbage collector looks only at objects made since the first began.

    A pass over 100,000 entries allocates millions of objects, so the collector runs its full
    collection several times, and each walks the whole heap: in a worker, Prefect's some hundred
    thousand objects (measured: 0.76 s of a pass's 2.75 s of CPU; 0.10 s with them set aside).
    They are set aside (`gc.freeze`) until the last pass under way ends; garbage among them is
    collected after that.
    """
    global _passes_under_way
    with _passes_lock:
        if _passes_under_way == 0:
            gc.freeze()
        _passes_under_way += 1
    try:
        yield
    finally:
        with _passes_lock:
            _passes_under_way -= 1
            if _passes_under_way == 0:
                gc.unfreeze()


def discover_rule(
    engine: sa.Engine, host: Host, rule: ListingRule, *, by: str, now: datetime | None = None
) -> RuleOutcome:
    """One rule's listing, filtered and registered page by page."""
    assert rule.id is not None
    if rule.listing_format == "mqtt":
        return RuleOutcome(rule.id, rule.directory, 0, 0)  # discovered by its subscription, not by listing
    now = now or utcnow()
    block = block_for(host)
    lister = listing_process(block, rule)  # starts now, and connects while this process does
    try:
        root = listing_root(block, host, rule, now)
        with _collecting_only_new_objects():
            pages = selected_pages(block, root, rule, now, lister)
            listed, registered = _register_pages(engine, rule, pages, by=by)
        _last_listed[rule.id] = listed
    finally:
        if lister is not None:
            lister.close()
    return RuleOutcome(rule.id, posixpath.normpath(root) if root else root, listed, registered)


def register_and_publish(engine: sa.Engine, rule: ListingRule, entries: list[Listed], *, by: str) -> int:
    """Register listed entries; when the rule's destination is published in the STAC inventory, the
    data files registered (or whose item changed upstream) become items in the same transaction."""
    from catalog import stac

    with session_scope(engine) as session:
        touched: list[int] = []
        registered = register_listed(session, rule, entries, by=by, touched=touched)
        if touched and stac.is_published(session, rule.destination_name):
            from tasks.runtime import runtime

            rt = runtime()
            stac.publish_data_files(
                session, rt.store, rule.destination_name, touched, public_url=rt.settings.resolved_public_url()
            )
    return registered


def _register_pages(
    engine: sa.Engine, rule: ListingRule, pages: Iterator[tuple[int, list[Listed]]], *, by: str
) -> tuple[int, int]:
    """Register the pages in batches of up to `BATCH` entries, one transaction each; (entries
    listed, files registered).

    Batches are registered in a thread of their own, in order, while the next is listed: the
    database's work (which runs without the GIL) overlaps the listing's. At most one batch waits for
    the registrar, so memory stays two batches.
    """

    def register(entries: list[Listed]) -> int:
        if not entries:
            return 0
        return register_and_publish(engine, rule, entries, by=by)

    listed = registered = 0
    with ThreadPoolExecutor(1, thread_name_prefix=f"register-rule-{rule.id}") as registrar:
        waiting: Future[int] | None = None
        batch: list[Listed] = []
        try:
            for so_far, page in pages:
                listed = so_far
                batch.extend(page)
                if len(batch) < BATCH:
                    continue
                if waiting is not None:
                    registered += waiting.result()  # a failed batch stops the pass here
                waiting, batch = registrar.submit(register, batch), []
        except BaseException:
            if waiting is not None:  # let the batch under way finish; the listing's error is the one to tell
                with contextlib.suppress(Exception):
                    waiting.result()
            raise
        if waiting is not None:
            registered += waiting.result()
        registered += register(batch)
    return listed, registered


@task(name="discover", task_run_name="discover {host.name} rule {rule.id}")
def discover_rule_task(host: Host, rule: ListingRule, by: str) -> RuleOutcome:
    from tasks.runtime import runtime

    return discover_rule(runtime().engine, host, rule, by=by)
