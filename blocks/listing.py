"""One directory's entries, read lazily a page at a time, for directories too large to list whole.

fsspec's `ls` returns a list: for a directory of 100,000 files that is 100,000 dicts held at once,
and nothing can be done with the first until the last has arrived. `iter_entries` instead yields
each entry as soon as the page (or line, or XML element) holding it has been read and forgets it
once handed over, so memory stays about one page whatever the directory holds.

Every backend gives the same thing: an `Entry` with the full path as `fs.ls` gives it (so it can be
passed back to `fs`), the bare name, the size of files (None for directories, and where the server
does not tell), the modification time in UTC where the server tells, and whether it is a directory.
A missing directory raises FileNotFoundError, once iteration starts, on every protocol. On object
stores (S3, Azure, GCS) a "directory" is a key prefix: one that no object starts with does not
exist, while a bucket or container with nothing in it is an empty directory.

Entries come in the server's order, not sorted: sorting would need the whole listing.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import os
import posixpath
import ssl
import stat
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from ftplib import FTP, error_perm, error_reply, error_temp
from typing import IO, Any

import fsspec
from fsspec.asyn import sync

from blocks.base import HostBlock
from blocks.entries import Entry as Entry  # re-exported: what every listing yields
from blocks.entries import child_path as _child
from blocks.s3_listing import list_objects_page
from blocks.sftp_names import lean_readdir_works, sftp_scandir, sftp_v3_names

PAGE_SIZE = 1000
"""Entries asked for per request on object stores, and per batch handed over from SFTP."""

_DAV = "{DAV:}"
_PROPFIND = (
    b'<?xml version="1.0" encoding="utf-8"?>'
    b'<D:propfind xmlns:D="DAV:"><D:prop>'
    b"<D:resourcetype/><D:getcontentlength/><D:getlastmodified/>"
    b"</D:prop></D:propfind>"
)
_MONTHS = {
    m: i for i, m in enumerate(("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"), 1)
}


#: Protocols whose server narrows a listing to names starting with a given text (object stores).
SERVER_SIDE_PREFIX = frozenset({"s3", "azure", "gcs"})


def wildcard_prefix(wildcard: str | None) -> str:
    """The literal start of a shell wildcard (`T2M_2026*.grib` → `T2M_2026`): every name it matches
    starts with it, so an object store can be asked for those names only."""
    if not wildcard:
        return ""
    for i, char in enumerate(wildcard):
        if char in "*?[":
            return wildcard[:i]
    return wildcard


def iter_entries(
    block: HostBlock,
    fs: fsspec.AbstractFileSystem,
    path: str,
    *,
    page_size: int = PAGE_SIZE,
    name_prefix: str = "",
) -> Iterator[Entry]:
    """The entries of the directory `path` on `fs` (a filesystem of `block`), not recursing.

    Lazy: nothing is asked of the server until the first entry is wanted, and errors (a missing
    directory: FileNotFoundError) are raised then. Stop early and the listing is abandoned cleanly.
    While an FTP listing is under way its control connection is busy: use another `fs` meanwhile.

    `name_prefix`, on the protocols of SERVER_SIDE_PREFIX, asks the server for the entries whose
    names start with it only (elsewhere it is ignored: the caller filters names itself). A missing
    directory then lists as empty, since no entry is no proof that the directory is missing.
    """
    protocol = block.protocol
    if protocol == "file":
        return _local(fs, path)
    if protocol == "s3":
        return _s3(fs, path, page_size, name_prefix)
    if protocol == "azure":
        return _drive(fs.loop, _azure_pages(fs, path, page_size, name_prefix))
    if protocol == "gcs":
        return _gcs(fs, path, page_size, name_prefix)
    if protocol == "sftp":
        return _drive(fs.loop, _sftp_batches(fs, path, page_size))
    if protocol == "ftp":
        return _ftp(fs, path)
    if protocol in ("http", "https", "webdav") and getattr(fs, "webdav", False):
        return _webdav(fs, path)
    return _fallback(fs, path)


# --- shared helpers


def _utc(value: Any) -> datetime | None:
    """A timestamp as fsspec backends give it (datetime, epoch seconds, ISO text) in UTC, or None."""
    if value is None or value == "":
        return None
    if isinstance(value, int | float):
        return datetime.fromtimestamp(value, UTC)
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return None
    if not isinstance(value, datetime):
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


async def _next_page(pages: AsyncIterator[list[Entry]]) -> list[Entry] | None:
    try:
        return await pages.__anext__()
    except StopAsyncIteration:
        return None


def _drive(loop: Any, pages: Any) -> Iterator[Entry]:
    """Entries from an async generator of pages running on `loop`, pulled one page ahead.

    The asynchronous libraries (adlfs, sshfs) run on their filesystem's event loop in another thread;
    the next page is read there while this one is handed out here (the caller registers it in the
    database meanwhile), so the listing waits neither for the caller nor the caller for the server,
    and no more than two pages are ever held.
    """
    ahead = asyncio.run_coroutine_threadsafe(_next_page(pages), loop)
    try:
        while (page := ahead.result()) is not None:
            ahead = asyncio.run_coroutine_threadsafe(_next_page(pages), loop)
            yield from page
    finally:
        if not ahead.done():
            with contextlib.suppress(Exception):
                ahead.result()  # the page being read when the caller stopped: let it finish
        sync(loop, pages.aclose)  # releases the connection when the caller stops early


def _fallback(fs: fsspec.AbstractFileSystem, path: str) -> Iterator[Entry]:
    """`fs.ls` turned into entries: the whole listing is read first (not streamed), for backends
    with no page-by-page listing of their own (plain HTTP indexes, protocols added by plugins)."""
    for info in fs.ls(path, detail=True):
        full = str(info["name"]).rstrip("/")
        is_directory = info.get("type") == "directory"
        size = info.get("size")
        modified = next((info[k] for k in ("mtime", "modified", "LastModified", "last_modified") if k in info), None)
        yield Entry(
            full,
            posixpath.basename(full),
            None if is_directory or size is None else int(size),
            _utc(modified),
            is_directory,
        )


# --- local disk


def _local(fs: fsspec.AbstractFileSystem, path: str) -> Iterator[Entry]:
    """`os.scandir`, which reads the directory a buffer of names at a time."""
    directory = fs._strip_protocol(path)
    with os.scandir(directory) as found:
        for item in found:
            try:
                info = item.stat()  # follows links, as fsspec's local `ls` reports them
            except FileNotFoundError:  # a dangling link, or removed since it was read
                try:
                    info = item.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue
            is_directory = stat.S_ISDIR(info.st_mode)
            yield Entry(
                _child(directory, item.name),
                item.name,
                None if is_directory else info.st_size,
                datetime.fromtimestamp(info.st_mtime, UTC),
                is_directory,
            )


# --- object stores


def _prefix(key: str) -> str:
    key = key.strip("/")
    return f"{key}/" if key else ""


def _s3(fs: Any, path: str, page_size: int, name_prefix: str = "") -> Iterator[Entry]:
    return _drive(fs.loop, _s3_pages(fs, path, page_size, name_prefix))


async def _s3_pages(fs: Any, path: str, page_size: int, name_prefix: str = "") -> AsyncIterator[list[Entry]]:
    """`ListObjectsV2` with `Delimiter="/"`, one page (`MaxKeys`) per request, read by
    `blocks.s3_listing` (the next page is asked for while this one is handed out, see `_drive`).
    Sub-"directories" are the common prefixes."""
    bucket, key, _ = fs.split_path(path)
    prefix = _prefix(key)
    skip = len(prefix)
    found = False
    token: str | None = None
    while True:
        page = await list_objects_page(fs, bucket, prefix + name_prefix, page_size, token)
        entries = []
        for common in page.prefixes:
            found = True
            full = common.rstrip("/")
            entries.append(Entry(f"{bucket}/{full}", full[skip:], None, None, True))
        for object_key, size, modified in page.objects:
            found = True
            if object_key == prefix:
                continue  # the marker object some tools write for an empty "directory"
            entries.append(Entry(f"{bucket}/{object_key}", object_key[skip:], size, modified, False))
        yield entries
        if page.next_token is None:
            break
        token = page.next_token
    if prefix and not found and not name_prefix:
        raise FileNotFoundError(f"{bucket}/{prefix.rstrip('/')}: no object under this prefix")


async def _azure_pages(fs: Any, path: str, page_size: int, name_prefix: str = "") -> AsyncIterator[list[Entry]]:
    """The container's `walk_blobs` pager (List Blobs with `delimiter="/"`), page by page."""
    from azure.core.exceptions import ResourceNotFoundError

    container, key, _ = fs.split_path(path)
    prefix = _prefix(key)
    found = False
    try:
        async with fs.service_client.get_container_client(container) as client:
            blobs = client.walk_blobs(
                name_starts_with=(prefix + name_prefix) or None,
                include=["metadata"],
                delimiter="/",
                results_per_page=page_size,
            )
            folders: set[str] = set()  # adlfs's folder blobs, so their prefix is not listed twice
            async for blob_page in blobs.by_page():
                entries = []
                async for blob in blob_page:
                    found = True
                    full = str(blob.name).rstrip("/")
                    if full == prefix.rstrip("/"):
                        continue  # this directory's own marker
                    metadata = getattr(blob, "metadata", None) or {}
                    is_directory = not hasattr(blob, "size") or metadata.get("hdi_isfolder") == "true"
                    if is_directory:
                        if full in folders:
                            continue
                        folders.add(full)
                    modified = None if is_directory else _utc(blob.last_modified)
                    size = None if is_directory else int(blob.size)
                    entries.append(Entry(f"{container}/{full}", full[len(prefix) :], size, modified, is_directory))
                yield entries
    except ResourceNotFoundError as exc:
        raise FileNotFoundError(f"{container}: {exc.message}") from exc
    if prefix and not found and not name_prefix:
        raise FileNotFoundError(f"{container}/{prefix.rstrip('/')}: no blob under this prefix")


def _gcs(fs: Any, path: str, page_size: int, name_prefix: str = "") -> Iterator[Entry]:
    """The JSON API's objects list with `delimiter="/"`, one page (`maxResults`) per request,
    following `nextPageToken` only when this page has been handed out."""
    bucket, key, _ = fs.split_path(path)
    prefix = _prefix(key)
    params: dict[str, Any] = {"delimiter": "/", "maxResults": page_size}
    if prefix + name_prefix:
        params["prefix"] = prefix + name_prefix
    found = False
    while True:
        page = sync(fs.loop, fs._call, "GET", "b/{}/o", bucket, json_out=True, **params)
        for common in page.get("prefixes", []):
            found = True
            full = str(common).rstrip("/")
            yield Entry(f"{bucket}/{full}", full[len(prefix) :], None, None, True)
        for item in page.get("items", []):
            found = True
            if item["name"] == prefix:
                continue  # a "directory" placeholder object
            name = item["name"][len(prefix) :]
            yield Entry(f"{bucket}/{item['name']}", name, int(item.get("size", 0)), _utc(item.get("updated")), False)
        token = page.get("nextPageToken")
        if not token:
            break
        params["pageToken"] = token
    if prefix and not found and not name_prefix:
        raise FileNotFoundError(f"{bucket}/{prefix.rstrip('/')}: no object under this prefix")


# --- SFTP


async def _sftp_batches(fs: Any, path: str, batch_size: int) -> AsyncIterator[list[Entry]]:
    """`READDIR` requests, each answered with as many names as the server sends at once (OpenSSH:
    about 100), gathered into batches of `batch_size` for the caller."""
    import asyncssh

    directory = fs._strip_protocol(path)
    try:
        async with fs._pool.get() as channel:
            lean = lean_readdir_works(channel)
            names = sftp_v3_names(channel, directory) if lean else sftp_scandir(channel, directory)
            batch: list[Entry] = []
            async for name, size, permissions, mtime in names:
                if name in ("", ".", ".."):
                    continue
                is_directory = permissions is not None and stat.S_ISDIR(permissions)
                modified = None if mtime is None else datetime.fromtimestamp(mtime, UTC)
                size = None if is_directory else size
                batch.append(Entry(_child(directory, name), name, size, modified, is_directory))
                if len(batch) >= batch_size:
                    yield batch
                    batch = []
            if batch:
                yield batch
    except asyncssh.SFTPNoSuchFile as exc:
        raise FileNotFoundError(f"{directory}: {exc.reason}") from exc
    except asyncssh.SFTPPermissionDenied as exc:
        raise PermissionError(f"{directory}: {exc.reason}") from exc


# --- FTP


def _ftp(fs: Any, path: str) -> Iterator[Entry]:
    """`MLSD` read line by line off its data connection, each line parsed and handed out before the
    next is read; `LIST` (parsed as `ls -l` output) only when the server does not know `MLSD`."""
    directory = fs._strip_protocol(path) or "/"
    ftp: FTP = fs.ftp
    ftp.sendcmd("TYPE A")
    try:
        lines = _data_lines(ftp, f"MLSD {directory}")
        parse = _mlsd_entry
    except error_perm as exc:
        if not str(exc).startswith(("500", "502")):
            raise _ftp_error(exc, directory) from exc
        try:
            lines = _data_lines(ftp, f"LIST {directory}")
        except error_perm as exc2:
            raise _ftp_error(exc2, directory) from exc2
        parse = _list_entry
    for line in lines:
        entry = parse(directory, line)
        if entry is not None:
            yield entry


def _ftp_error(exc: error_perm, directory: str) -> Exception:
    message = str(exc)
    if message.startswith("550") or (message.startswith("501") and "no such" in message.lower()):
        return FileNotFoundError(f"{directory}: {message}")
    return exc


def _data_lines(ftp: FTP, command: str) -> Iterator[str]:
    """Send `command` at once (so a refusal is raised here) and return its data's lines, read lazily."""
    connection = ftp.transfercmd(command)
    return _read_lines(ftp, connection)


def _read_lines(ftp: FTP, connection: Any) -> Iterator[str]:
    complete = False
    reader: IO[str] = connection.makefile("r", encoding=ftp.encoding)
    try:
        while line := reader.readline(ftp.maxline + 1):
            if len(line) > ftp.maxline:
                raise OSError(f"FTP listing line longer than {ftp.maxline} characters")
            yield line.rstrip("\r\n")
        complete = True
    finally:
        reader.close()
        if complete and isinstance(connection, ssl.SSLSocket):
            with contextlib.suppress(OSError):
                connection.unwrap()  # a clean TLS close, as ftplib does
        connection.close()
        if complete:
            ftp.voidresp()
        else:  # stopped early: the server answers 426 (or 226 if it had sent everything)
            with contextlib.suppress(error_temp, error_reply, error_perm, OSError, EOFError):
                ftp.voidresp()


def _mlsd_entry(directory: str, line: str) -> Entry | None:
    """An RFC 3659 line: `fact=value;…; name` (facts end at the first space)."""
    facts_text, _, name = line.partition(" ")
    if not name:
        return None
    facts = {}
    for fact in facts_text.split(";"):
        key, _, value = fact.partition("=")
        if key:
            facts[key.lower()] = value
    kind = facts.get("type", "").lower()
    if kind in ("cdir", "pdir") or name in (".", ".."):
        return None
    is_directory = kind == "dir"
    size = facts.get("size")
    modified = None
    if stamp := facts.get("modify"):
        with contextlib.suppress(ValueError):
            modified = datetime.strptime(stamp[:14], "%Y%m%d%H%M%S").replace(tzinfo=UTC)  # UTC per RFC 3659
    return Entry(
        _child(directory, name),
        name,
        None if is_directory or size is None else int(size),
        modified,
        is_directory,
    )


def _list_entry(directory: str, line: str) -> Entry | None:
    """A Unix `ls -l` line, as most servers without MLSD send: modes, links, owner, group, size,
    month, day, time or year, name. Times without a year are taken as in the last twelve months,
    and as UTC (LIST does not say which zone the server uses)."""
    parts = line.split(maxsplit=8)
    if len(parts) < 9 or not parts[4].isdigit():
        return None
    name = parts[8]
    if parts[0].startswith("l") and " -> " in name:
        name = name.split(" -> ", 1)[0]
    if name in (".", ".."):
        return None
    is_directory = parts[0].startswith("d")
    return Entry(
        _child(directory, name),
        name,
        None if is_directory else int(parts[4]),
        _list_time(parts[5], parts[6], parts[7]),
        is_directory,
    )


def _list_time(month_text: str, day_text: str, time_or_year: str) -> datetime | None:
    month = _MONTHS.get(month_text[:3].lower())
    if month is None or not day_text.isdigit():
        return None
    now = datetime.now(UTC)
    try:
        if ":" in time_or_year:
            hour, minute = (int(p) for p in time_or_year.split(":", 1))
            stamp = datetime(now.year, month, int(day_text), hour, minute, tzinfo=UTC)
            return stamp if (stamp - now).days < 1 else stamp.replace(year=now.year - 1)
        return datetime(int(time_or_year), month, int(day_text), tzinfo=UTC)
    except ValueError:
        return None


# --- WebDAV


class _ResponseReader:
    """`read(n)` over a streamed httpx response, so `iterparse` pulls the body as it arrives."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._rest = b""

    def read(self, size: int = -1) -> bytes:
        while not self._rest:
            chunk = next(self._chunks, None)
            if chunk is None:
                return b""
            self._rest = chunk
        if size < 0 or size >= len(self._rest):
            data, self._rest = self._rest, b""
        else:
            data, self._rest = self._rest[:size], self._rest[size:]
        return data


def _webdav(fs: Any, path: str) -> Iterator[Entry]:
    """`PROPFIND` with `Depth: 1`, its multistatus body parsed as it streams in: each `response`
    element becomes an entry when it ends and is then dropped from the tree, so only one is ever
    held. A server that refuses PROPFIND (405, 501) is listed from its HTML index instead."""
    request = fs.client.build_request(
        "PROPFIND",
        fs.url(path, collection=True),
        content=_PROPFIND,
        headers={"Depth": "1", "Content-Type": "application/xml"},
    )
    response = fs.client.send(request, stream=True)
    try:
        if response.status_code in (405, 501):
            response.close()
            yield from _fallback(fs, path)
            return
        if response.status_code != 207:
            response.read()
            raise _http_error(response)
        root = None
        # expat (>= 2.4.1) refuses entity expansion bombs and etree resolves no external entities.
        parsed = ET.iterparse(_ResponseReader(response.iter_bytes()), events=("start", "end"))  # noqa: S314
        for event, element in parsed:
            if event == "start":
                root = element if root is None else root
                continue
            if element.tag != f"{_DAV}response" or root is None:
                continue
            entry = _dav_entry(fs, path, element)
            root.clear()  # drop this response (and the ones before it) from the tree
            if entry is not None:
                yield entry
    finally:
        response.close()


def _http_error(response: Any) -> OSError:
    """The error `fs` itself raises for this status, so callers see the same on both paths."""
    status = response.status_code
    message = f"PROPFIND {response.request.url}: HTTP {status} {response.reason_phrase}".rstrip()
    if status in (401, 403):
        return PermissionError(message)
    if status in (404, 409, 410):
        return FileNotFoundError(message)
    from blocks.http import HttpStatusError

    return HttpStatusError(status, message)


def _dav_text(element: ET.Element, tag: str) -> str | None:
    for found in element.iter(f"{_DAV}{tag}"):
        if found.text and found.text.strip():
            return found.text.strip()
    return None


def _dav_entry(fs: Any, path: str, element: ET.Element) -> Entry | None:
    child = fs._child(path, _dav_text(element, "href") or "")
    if child is None:
        return None  # the listed collection itself
    full, collection = child
    is_directory = collection or element.find(f".//{_DAV}resourcetype/{_DAV}collection") is not None
    length = _dav_text(element, "getcontentlength")
    modified = None
    if stamp := _dav_text(element, "getlastmodified"):
        with contextlib.suppress(TypeError, ValueError):
            modified = _utc(email.utils.parsedate_to_datetime(stamp))
    return Entry(
        full,
        posixpath.basename(full),
        None if is_directory or length is None else int(length),
        modified,
        is_directory,
    )
