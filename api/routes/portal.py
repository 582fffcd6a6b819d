"""The Data Portal over HTTPS: `/portal/<destination>/<target path>`, the tree of `catalog.portal`.

- `PUT` streams the body into the Data Store (a push: synchronous, as `ecpds` does): the answer comes
  once the content is whole and carries the data file id and the queued transfers. Everything is
  validated before a single byte or row is written; an upload that breaks off leaves its transfers
  Failed with the reason, never queued.
- `GET`/`HEAD` of a file streams it (one `Range` supported: 206, 416), with `ETag` (the MD5),
  `Last-Modified` and `Content-Length`; a whole download marks the transfer Done.
- `GET`/`HEAD` of a file registered without retrieval (not fetched yet) asks for its retrieval (once,
  however many ask) and answers 503 with `Retry-After` until the content is in the Data Store.
- `GET` of a directory lists it: JSON, or HTML when the client asks for `text/html` (browsers) or
  `?format=html`.
- `DELETE` removes a file from the tree.

Every request counts against the caller's connection limit; quotas answer 429 (downloads) and 413
(an upload that would pass the quota) with `Retry-After`.
"""

from __future__ import annotations

import html
import re
from collections.abc import AsyncIterator, Generator
from email.utils import format_datetime
from typing import Any
from urllib.parse import quote, unquote

import anyio.to_thread
from litestar import MediaType, Request, Response, Router, delete, get, head, put
from litestar.datastructures import State
from litestar.exceptions import ClientException, HTTPException, InternalServerException
from litestar.params import FromPath, FromQuery
from litestar.response import Stream
from pydantic import BaseModel

from api.auth import Caller
from api.deps import MAX_SECONDS, MAX_SIZE
from catalog.access import Permission
from catalog.errors import InvalidInput, QuotaExceeded
from catalog.paths import clean_target
from catalog.portal import Download, Entry, Portal, PortalUser
from catalog.submission import PushRequest, check_priority


class QueuedTransfer(BaseModel):
    id: int
    destination: str
    status: str


class PushResult(BaseModel):
    data_file_id: int
    target: str
    size: int
    md5: str
    adler32: str
    transfers: list[QueuedTransfer]


def _int(name: str, value: str | None, default: int | None, *, low: int = 0, high: int = MAX_SECONDS) -> int | None:
    """A query integer within [low, high]; anything else is a 400 before a transfer exists."""
    if value is None or value == "":
        return default
    try:
        number = int(value)
    except ValueError:
        raise InvalidInput(f"{name} must be an integer, not {value!r}") from None
    if not low <= number <= high:
        raise InvalidInput(f"{name} must be from {low} to {high}, not {number}")
    return number


def _raw_target(request: Request[Any, Any, State], destination: str) -> str:
    """The target exactly as sent: path parameters lose a doubled slash, which marks an absolute path."""
    prefix = f"/portal/{destination}/"
    raw: bytes = request.scope.get("raw_path") or request.scope["path"].encode()
    # Some ASGI servers (and test clients) leave the query string on raw_path.
    path = unquote(raw.split(b"?", 1)[0].decode("latin-1"))
    return path[len(prefix) :] if path.startswith(prefix) else ""


def _tree_path(request: Request[Any, Any, State], destination: str) -> str:
    """The tree path of a request; `..`, absolute and encoded-separator tricks are refused, not resolved."""
    raw = _raw_target(request, destination)
    target = clean_target(raw) if raw.strip("/") else ""
    return f"/{destination}/{target}"


def _meta(values: list[str] | None) -> dict[str, Any]:
    meta = {}
    for item in values or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise InvalidInput(f"metadata must be key=value, not {item!r}")
        meta[key] = value
    return meta


def _client(request: Request[Any, Any, State]) -> str | None:
    return request.client.host if request.client else None


async def _portal_user(request: Request[Caller, Any, State]) -> tuple[Portal, PortalUser]:
    portal: Portal = request.app.state.portal
    return portal, await anyio.to_thread.run_sync(portal.user, request.user.login)


@put(
    ["/portal/{destination:str}/{target:path}"],
    request_max_body_size=None,
    status_code=201,
    summary="Push a file to a destination",
    permission=Permission.PORTAL,
)
async def push(
    request: Request[Caller, Any, State],
    destination: FromPath[str],
    target: FromPath[str],
    priority: FromQuery[str | None] = None,
    standby: FromQuery[bool] = False,
    delay: FromQuery[str | None] = None,
    lifetime: FromQuery[str | None] = None,
    stream: FromQuery[str | None] = None,
    data_type: FromQuery[str | None] = None,
    time_base: FromQuery[str | None] = None,
    time_step: FromQuery[str | None] = None,
    meta: FromQuery[list[str] | None] = None,
    if_exists: FromQuery[str] = "add",
) -> PushResult:
    """Store the body as a data file and queue it to `destination` (and its aliases)."""
    options = PushRequest(
        destination=destination,
        target="",
        priority=check_priority(99 if priority is None or priority == "" else priority),
        standby=standby,
        delay_seconds=_int("delay", delay, 0) or 0,
        lifetime_seconds=_int("lifetime", lifetime, None, low=1),
        stream=stream,
        data_type=data_type,
        time_base=time_base,
        time_step=time_step,
        meta=_meta(meta),
        if_exists=if_exists,
    )
    path = _tree_path(request, destination)
    portal, user = await _portal_user(request)
    with portal.connections.hold(user.login, await anyio.to_thread.run_sync(portal.max_connections, user.login)):
        upload = await anyio.to_thread.run_sync(
            lambda: portal.begin_upload(user, path, protocol="https", client_address=_client(request), options=options)
        )
        try:
            buffer = bytearray()
            async for chunk in request.stream():
                buffer += chunk
                if upload.progress_due():
                    await anyio.to_thread.run_sync(upload.note_progress)
                if len(buffer) >= portal.store.chunk_size:
                    data, buffer = bytes(buffer), bytearray()
                    await anyio.to_thread.run_sync(upload.write, data)
            if buffer:
                await anyio.to_thread.run_sync(upload.write, bytes(buffer))
            expected = request.headers.get("content-length")
            if expected is not None and _int("Content-Length", expected, None, high=MAX_SIZE) != upload.size:
                raise InvalidInput(f"received {upload.size} bytes but Content-Length said {expected}")
            stored, queued = await anyio.to_thread.run_sync(upload.commit)
        except QuotaExceeded as exc:
            raise HTTPException(
                status_code=413, detail=str(exc), headers={"Retry-After": str(exc.retry_after or 3600)}
            ) from exc
        except BaseException as exc:
            reason = (
                "upload broke off: client disconnected"
                if isinstance(exc, InternalServerException)
                else f"upload failed: {exc}"
            )
            await anyio.to_thread.run_sync(upload.abort, reason)
            if isinstance(exc, InternalServerException):  # the client is gone: nothing to answer, nothing kept
                raise ClientException(reason) from None
            raise
    return PushResult(
        data_file_id=upload.data_file_id,
        target=upload.request.target,
        size=stored.size,
        md5=stored.md5,
        adler32=stored.adler32,
        transfers=[QueuedTransfer(id=t.id or 0, destination=t.destination_name, status=t.status) for t in queued],
    )


_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """(start, length) of a single byte range, None for the whole file; InvalidRange if unsatisfiable."""
    if not header:
        return None
    match = _RANGE.match(header.strip())
    if not match or match.groups() == ("", ""):
        return None  # A multi-range or malformed header: answer with the whole file, as RFC 9110 allows.
    first, last = match.groups()
    if first == "":
        length = min(int(last), size)
        if length == 0:
            raise InvalidRange(size)
        return size - length, length
    start = int(first)
    end = min(int(last), size - 1) if last else size - 1
    if start >= size or end < start:
        raise InvalidRange(size)
    return start, end - start + 1


class InvalidRange(Exception):
    def __init__(self, size: int) -> None:
        super().__init__(f"range not satisfiable: the file has {size} bytes")
        self.size = size


def _file_headers(entry: Entry) -> dict[str, str]:
    headers = {"Accept-Ranges": "bytes"}
    if entry.md5:
        headers["ETag"] = f'"{entry.md5}"'
    if entry.mtime:
        headers["Last-Modified"] = format_datetime(entry.mtime, usegmt=True)
    return headers


async def _chunks(download: Download) -> AsyncIterator[bytes]:
    iterator: Generator[bytes] = download.chunks()
    try:
        while True:
            chunk = await anyio.to_thread.run_sync(next, iterator, None)
            if chunk is None:
                return
            yield chunk
    finally:
        # A client that hangs up mid-file still has its bytes accounted (and no Done).
        await anyio.to_thread.run_sync(iterator.close)


def _listing(request: Request[Any, Any, State], path: str, entries: list[Entry], format: str | None) -> Response[Any]:
    accept = request.headers.get("accept", "")
    if format == "html" or (format is None and "text/html" in accept):
        base = "/portal" + path.rstrip("/")
        rows = ['<tr><td><a href="../">../</a></td><td></td><td></td></tr>']
        for e in entries:
            name = e.name + ("/" if e.is_dir else "")
            href = quote(f"{base}/{name}")
            when = e.mtime.strftime("%Y-%m-%d %H:%M:%S") if e.mtime else ""
            rows.append(
                f'<tr><td><a href="{href}">{html.escape(name)}</a></td><td>{"" if e.is_dir else e.size}</td>'
                f"<td>{when}</td></tr>"
            )
        title = html.escape(f"Index of {path}")
        body = (
            f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{title}</title></head><body><h1>{title}</h1>"
            f"<table><tr><th>Name</th><th>Size</th><th>Modified (UTC)</th></tr>{''.join(rows)}</table></body></html>"
        )
        return Response(body, media_type=MediaType.HTML)
    return Response(
        {
            "path": path,
            "entries": [
                {
                    "name": e.name,
                    "type": "directory" if e.is_dir else "file",
                    "size": None if e.is_dir else e.size,
                    "mtime": e.mtime.isoformat() if e.mtime else None,
                    "md5": e.md5,
                    # Registered without retrieval and not fetched yet: a read asks for it (503 meanwhile).
                    "fetched": None if e.is_dir else not e.pending,
                }
                for e in entries
            ],
        },
        media_type=MediaType.JSON,
    )


@get(
    ["/portal", "/portal/{destination:str}", "/portal/{destination:str}/{target:path}"],
    summary="Download or list",
    permission=Permission.PORTAL,
)
async def pull(
    request: Request[Caller, Any, State],
    destination: FromPath[str | None] = None,
    format: FromQuery[str | None] = None,
) -> Response[Any]:
    """A file streams (Range supported); a directory is listed (JSON, or HTML for browsers)."""
    path = _tree_path(request, destination) if destination else "/"
    portal, user = await _portal_user(request)
    limit = await anyio.to_thread.run_sync(portal.max_connections, user.login)
    with portal.connections.hold(user.login, limit):
        entry = await anyio.to_thread.run_sync(portal.stat, user, path)
        if entry.is_dir:
            entries = await anyio.to_thread.run_sync(portal.list, user, path)
            return _listing(request, path, entries, format)
        if entry.pending:  # registered without retrieval: this read asks for it, then 503 + Retry-After
            entry = await anyio.to_thread.run_sync(lambda: portal.require_content(user, path, protocol="https"))
    return await _send_file(request, portal, user, path, entry, limit)


async def _send_file(
    request: Request[Caller, Any, State], portal: Portal, user: PortalUser, path: str, entry: Entry, limit: int | None
) -> Response[Any]:
    headers = _file_headers(entry)
    try:
        wanted = parse_range(request.headers.get("range"), entry.size)
    except InvalidRange as exc:
        return Response(
            {"status": 416, "error": "InvalidRange", "reason": str(exc)},
            status_code=416,
            headers={**headers, "Content-Range": f"bytes */{exc.size}"},
        )
    start, length = wanted if wanted else (0, entry.size)
    download = await anyio.to_thread.run_sync(
        lambda: portal.open_read(
            user, path, protocol="https", client_address=_client(request), start=start, length=length
        )
    )
    headers["Content-Length"] = str(length)
    if wanted:
        headers["Content-Range"] = f"bytes {start}-{start + length - 1}/{entry.size}"

    async def guarded() -> AsyncIterator[bytes]:
        with portal.connections.hold(user.login, limit):
            async for chunk in _chunks(download):
                yield chunk

    return Stream(
        guarded(),
        status_code=206 if wanted else 200,
        headers=headers,
        media_type="application/octet-stream",
    )


@head(
    ["/portal/{destination:str}/{target:path}"], summary="Size, ETag and time of a file", permission=Permission.PORTAL
)
async def stat_file(request: Request[Caller, Any, State], destination: FromPath[str]) -> Response[None]:
    path = _tree_path(request, destination)
    portal, user = await _portal_user(request)
    entry = await anyio.to_thread.run_sync(portal.stat, user, path)
    if entry.pending:  # as a GET: asks for the file registered without retrieval, 503 + Retry-After
        entry = await anyio.to_thread.run_sync(lambda: portal.require_content(user, path, protocol="https"))
    headers = {} if entry.is_dir else {**_file_headers(entry), "Content-Length": str(entry.size)}
    headers["Content-Type"] = "application/json" if entry.is_dir else "application/octet-stream"
    return Response(None, headers=headers)


@delete(
    ["/portal/{destination:str}/{target:path}"],
    status_code=204,
    summary="Remove a file from the tree",
    permission=Permission.PORTAL,
)
async def remove(request: Request[Caller, Any, State], destination: FromPath[str]) -> None:
    path = _tree_path(request, destination)
    portal, user = await _portal_user(request)
    await anyio.to_thread.run_sync(portal.delete, user, path)


portal_router = Router("/", tags=["portal"], route_handlers=[push, pull, stat_file, remove])
