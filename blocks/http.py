"""HTTP(S) servers that accept uploads: WebDAV (nginx dav, Apache mod_dav, ownCloud…) or plain PUT.

`address` is the base URL (`https://host:port/path`; `host:port` means `http://host:port`);
`directory` is a path template under it (`incoming/$destination`). `login`/`password` are sent with
Basic auth; `options.secret_bearer_token` sends `Authorization: Bearer …` instead.
Options: `webdav` (true: directories made with MKCOL, temporary names renamed with MOVE, copies made
by the server with COPY, listings by PROPFIND; false: only PUT, GET, HEAD and DELETE, listings read
from the HTML index), `headers` (extra request headers), `verify_tls` (true, false, or the path of a
CA bundle), `timeout` (seconds to connect or wait for an answer, 60), `upload` (`put`, the default;
`post`, the file's bytes as the body of a POST to its URL; or `form`, a `multipart/form-data` POST
as a browser sends it), and for `form`: `form_url` (where to POST; by default the URL of the
file's directory), `form_field` (the file's field, `file`) and `form_fields` (other fields; `{name}`,
`{directory}` and `{path}` in their values are replaced). POST uploads write the final name directly
(there is no MOVE), so a site that wants atomic arrival should take PUT with WebDAV.

Uploads are one request each, with the body streamed (chunked transfer encoding) from the mover's writes,
so memory per upload is a few of its chunks whatever the file size.
"""

from __future__ import annotations

import contextlib
import errno
import posixpath
import queue
import re
import socket
import ssl
import threading
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import IO, Any, ClassVar
from urllib.parse import quote, unquote, urljoin, urlsplit

import fsspec
import httpx
from fsspec.spec import AbstractBufferedFile, AbstractFileSystem

from blocks.base import READ_BLOCK, HostBlock
from catalog.errors import FailOverToNextHost, FailTransfer, InvalidInput, RetryOnSameHost, TransferError

DEFAULT_TIMEOUT = 60.0
UPLOAD_METHODS = ("put", "post", "form")
_PUT_QUEUE = 2  # chunks waiting for the uploading thread; memory is about this many writes
_PROPFIND = (
    b'<?xml version="1.0" encoding="utf-8"?>'
    b'<D:propfind xmlns:D="DAV:"><D:prop>'
    b"<D:resourcetype/><D:getcontentlength/><D:getlastmodified/>"
    b"</D:prop></D:propfind>"
)
_DAV = "{DAV:}"
_HREF = re.compile(rb"""href\s*=\s*["']([^"'?#]+)["']""", re.IGNORECASE)


class HttpStatusError(OSError):
    """An unexpected HTTP status; the message keeps the method, URL and the server's status line."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _status_error(response: httpx.Response) -> OSError:
    request = response.request
    message = f"{request.method} {request.url}: HTTP {response.status_code} {response.reason_phrase}".rstrip()
    status = response.status_code
    if status in (401, 403):
        return PermissionError(message)
    if status in (404, 409, 410):  # 409: the parent collection is missing
        return FileNotFoundError(message)
    return HttpStatusError(status, message)


def _check(response: httpx.Response, *ok: int) -> httpx.Response:
    if response.status_code not in ok and not (not ok and response.is_success):
        raise _status_error(response)
    return response


def _parse_http_date(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        parsed = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


class _PutFile:
    """A write-only file whose bytes go out as the body of one PUT, sent by a thread as they come.

    Writes wait while the thread is `_PUT_QUEUE` chunks behind, so memory stays flat. `close()`
    finishes the request and raises if the server did not accept it; `discard()` breaks the request
    off, so the server keeps nothing.
    """

    def __init__(self, fs: HttpFileSystem, path: str) -> None:
        self.fs, self.path, self.mode = fs, path, "wb"
        self.closed = False
        self.written = 0
        self._queue: queue.Queue[bytes | None | BaseException] = queue.Queue(maxsize=_PUT_QUEUE)
        self._response: httpx.Response | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._upload, name=f"pds-put {path}", daemon=True)
        self._thread.start()

    def _body(self) -> Iterator[bytes]:
        while True:
            try:
                item = self._queue.get(timeout=self.fs.timeout)
            except queue.Empty:
                raise TimeoutError(f"no data to upload to {self.path} for {self.fs.timeout:.0f} s") from None
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    def _upload(self) -> None:
        fs = self.fs
        try:
            if fs.upload == "form":
                form = MultipartForm(self.path, fs.form_field, fs.form_fields)
                url = fs.form_url or fs.url(posixpath.dirname(self.path.rstrip("/")), collection=True)
                headers = {"Content-Type": form.content_type}
                self._response = fs.client.post(url, content=form.body(self._body()), headers=headers)
            else:
                method = "POST" if fs.upload == "post" else "PUT"
                self._response = fs.client.request(method, fs.url(self.path), content=self._body())
        except BaseException as exc:  # noqa: BLE001 — handed to the writer, which raises it
            self._error = exc

    def _hand_over(self, item: bytes | None | BaseException) -> None:
        while True:
            if self._error is not None:
                raise self._error
            if not self._thread.is_alive():
                self._finish()  # the server answered before the body was complete
            try:
                self._queue.put(item, timeout=0.2)
                return
            except queue.Full:
                continue

    def _finish(self) -> None:
        self._thread.join()
        if self._error is not None:
            raise self._error
        if self._response is None:
            raise OSError(f"upload of {self.path} ended without an answer")
        _check(self._response, 200, 201, 204)
        raise OSError(f"{self.path}: the server answered before the upload was complete")

    def write(self, data: bytes | bytearray | memoryview) -> int:
        if self.closed:
            raise ValueError("write to a closed file")
        chunk = bytes(data)
        if chunk:
            self._hand_over(chunk)
            self.written += len(chunk)
        return len(chunk)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._hand_over(None)
        self._thread.join()
        if self._error is not None:
            raise self._error
        assert self._response is not None
        _check(self._response, 200, 201, 204)

    def discard(self) -> None:
        """Break the request off; the server drops the incomplete body."""
        if self.closed:
            return
        self.closed = True
        with contextlib.suppress(Exception):
            self._queue.put(ConnectionAbortedError("upload discarded"), timeout=self.fs.timeout)
        self._thread.join(self.fs.timeout)

    def writable(self) -> bool:
        return True

    def readable(self) -> bool:
        return False

    def seekable(self) -> bool:
        return False

    def tell(self) -> int:
        return self.written

    def flush(self) -> None:
        pass

    def __enter__(self) -> _PutFile:
        return self

    def __exit__(self, kind: type[BaseException] | None, *_: object) -> None:
        if kind is None:
            self.close()
        else:
            self.discard()

    def __del__(self) -> None:
        if not getattr(self, "closed", True):
            self.discard()  # never commit a file nobody closed


class MultipartForm:
    """A `multipart/form-data` body whose file part is streamed, never held whole in memory."""

    def __init__(self, path: str, field: str, fields: dict[str, str]) -> None:
        self.boundary = f"pds-{uuid.uuid4().hex}"
        self.path, self.field = path.strip("/"), field
        name, directory = posixpath.basename(self.path), posixpath.dirname(self.path)
        self.fields = {k: v.replace("{name}", name).replace("{directory}", directory).replace("{path}", self.path)
                       for k, v in fields.items()}  # fmt: skip

    @property
    def content_type(self) -> str:
        return f"multipart/form-data; boundary={self.boundary}"

    @staticmethod
    def _quoted(value: str) -> str:
        return value.replace("\\", "\\\\").replace('"', '\\"').replace("\r", " ").replace("\n", " ")

    def body(self, content: Iterator[bytes]) -> Iterator[bytes]:
        for key, value in self.fields.items():
            yield (
                f'--{self.boundary}\r\nContent-Disposition: form-data; name="{self._quoted(key)}"\r\n\r\n{value}\r\n'
            ).encode()
        name = self._quoted(posixpath.basename(self.path))
        yield (
            f'--{self.boundary}\r\nContent-Disposition: form-data; name="{self._quoted(self.field)}"; '
            f'filename="{name}"\r\nContent-Type: application/octet-stream\r\n\r\n'
        ).encode()
        yield from content
        yield f"\r\n--{self.boundary}--\r\n".encode()


class _RangedFile(AbstractBufferedFile):  # type: ignore[misc]
    """Random-access reads by ranged GET."""

    def _fetch_range(self, start: int, end: int) -> bytes:
        data: bytes = self.fs.cat_file(self.path, start, end)
        return data


class _StreamedGet:
    """One GET read from start to end (retrievals), without ranges."""

    def __init__(self, response: httpx.Response) -> None:
        self._response = response
        self._chunks = response.iter_bytes()  # as they come off the socket
        self._rest = b""
        self.closed = False

    def read(self, size: int = -1) -> bytes:
        parts, have = [self._rest] if self._rest else [], len(self._rest)
        self._rest = b""
        while size < 0 or have < size:
            chunk = next(self._chunks, b"")
            if not chunk:
                break
            parts.append(chunk)
            have += len(chunk)
        data = b"".join(parts)
        if 0 <= size < len(data):
            data, self._rest = data[:size], data[size:]
        return data

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._response.close()

    def __enter__(self) -> _StreamedGet:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


class HttpFileSystem(AbstractFileSystem):  # type: ignore[misc]
    """Paths are relative to `base_url` ("/a/b" and "a/b" are the same file); one httpx client per instance."""

    protocol = "pdshttp"
    cachable = False
    root_marker = ""

    def __init__(
        self,
        base_url: str,
        *,
        webdav: bool = True,
        auth: httpx.Auth | tuple[str, str] | None = None,
        headers: dict[str, str] | None = None,
        verify: bool | str | ssl.SSLContext = True,
        timeout: float = DEFAULT_TIMEOUT,
        upload: str = "put",
        form_url: str | None = None,
        form_field: str = "file",
        form_fields: dict[str, str] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.upload, self.form_url, self.form_field = upload, form_url, form_field
        self.form_fields = dict(form_fields or {})
        self.base_url = base_url.rstrip("/")
        self.base_path = urlsplit(self.base_url).path.rstrip("/")
        self.webdav = webdav
        self.timeout = timeout
        self.verify = verify  # as given (a CA file path, or a bool), for clients other than httpx
        if isinstance(verify, str):
            verify = ssl.create_default_context(cafile=verify)
        self.client = httpx.Client(auth=auth, headers=headers, verify=verify, timeout=timeout, follow_redirects=False)

    # --- URLs and requests

    def url(self, path: str, collection: bool = False) -> str:
        relative = quote(path.strip("/"))
        url = f"{self.base_url}/{relative}" if relative else self.base_url
        return url + "/" if collection and not url.endswith("/") else url

    def request(self, method: str, path: str, *, collection: bool = False, **kwargs: Any) -> httpx.Response:
        return self.client.request(method, self.url(path, collection), **kwargs)

    def _need_webdav(self, what: str) -> None:
        if not self.webdav:
            raise NotImplementedError(f"{what} needs WebDAV (options.webdav is false)")

    # --- metadata

    def info(self, path: str, **kwargs: Any) -> dict[str, Any]:
        path = path.rstrip("/")
        if not path.strip("/"):
            return {"name": path, "size": 0, "type": "directory"}
        response = self.request("HEAD", path)
        if response.is_redirect and response.headers.get("location", "").endswith("/"):
            response = self.request("HEAD", path, collection=True)
            _check(response)
            return {"name": path, "size": 0, "type": "directory", "mtime": self._mtime(response)}
        _check(response)
        length = response.headers.get("content-length")
        if length is None and self.webdav:  # some servers send no length on HEAD; PROPFIND tells
            length = self._propfind_length(path)
        return {
            "name": path,
            "size": int(length) if length is not None else None,
            "type": "file",
            "mtime": self._mtime(response),
            "ETag": response.headers.get("etag"),
            "content_type": response.headers.get("content-type"),
        }

    def _propfind_length(self, path: str) -> str | None:
        response = self.request(
            "PROPFIND", path, content=_PROPFIND, headers={"Depth": "0", "Content-Type": "application/xml"}
        )
        if response.status_code != 207:
            return None
        return ET.fromstring(response.content).findtext(f".//{_DAV}getcontentlength")  # noqa: S314 — as in ls

    @staticmethod
    def _mtime(response: httpx.Response) -> datetime | None:
        return _parse_http_date(response.headers.get("last-modified"))

    def exists(self, path: str, **kwargs: Any) -> bool:
        if not path.strip("/"):
            return True
        response = self.request("HEAD", path)
        if response.status_code == 404:
            return False
        if response.is_success or response.is_redirect:
            return True
        raise _status_error(response)

    def size(self, path: str) -> int | None:
        size: int | None = self.info(path)["size"]
        return size

    def modified(self, path: str) -> datetime:
        mtime: datetime | None = self.info(path).get("mtime")
        if mtime is None:
            raise NotImplementedError(f"the server sends no Last-Modified for {path}")
        return mtime

    def ls(self, path: str, detail: bool = True, **kwargs: Any) -> list[Any]:
        entries = self._propfind(path) if self.webdav else None
        if entries is None:
            entries = self._index(path)
        return entries if detail else [e["name"] for e in entries]

    def _child(self, path: str, href: str) -> tuple[str, bool] | None:
        """The fsspec path of a listed href, and whether it is a collection; None for the listed path itself."""
        collection = href.endswith("/")
        target = unquote(urlsplit(urljoin(self.url(path, collection=True), href)).path).rstrip("/")
        parent = unquote(urlsplit(self.url(path)).path).rstrip("/")
        if target == parent or posixpath.dirname(target) != parent:
            return None
        return f"{path.rstrip('/')}/{posixpath.basename(target)}", collection

    def _propfind(self, path: str) -> list[dict[str, Any]] | None:
        response = self.request(
            "PROPFIND",
            path,
            collection=True,
            content=_PROPFIND,
            headers={"Depth": "1", "Content-Type": "application/xml"},
        )
        if response.status_code in (405, 501):
            return None  # no PROPFIND here: read the HTML index
        _check(response, 207)
        entries = []
        # expat (>= 2.4.1) refuses entity expansion bombs and etree resolves no external entities.
        for item in ET.fromstring(response.content).iter(f"{_DAV}response"):  # noqa: S314
            href = item.findtext(f"{_DAV}href") or ""
            child = self._child(path, href)
            if child is None:
                continue
            name, collection = child
            prop = item.find(f".//{_DAV}prop")
            is_dir = collection or (prop is not None and prop.find(f"{_DAV}resourcetype/{_DAV}collection") is not None)
            length = prop.findtext(f"{_DAV}getcontentlength") if prop is not None else None
            modified = prop.findtext(f"{_DAV}getlastmodified") if prop is not None else None
            entries.append(
                {
                    "name": name,
                    "size": 0 if is_dir else int(length) if length else None,
                    "type": "directory" if is_dir else "file",
                    "mtime": _parse_http_date(modified),
                }
            )
        return entries

    def _index(self, path: str) -> list[dict[str, Any]]:
        response = _check(self.request("GET", path, collection=True))
        entries, seen = [], set()
        for match in _HREF.finditer(response.content):
            href = match.group(1).decode(errors="replace")
            child = self._child(path, href)
            if child is None or child[0] in seen:
                continue
            seen.add(child[0])
            entries.append({"name": child[0], "size": None, "type": "directory" if child[1] else "file"})
        return entries

    # --- directories

    def mkdir(self, path: str, create_parents: bool = True, **kwargs: Any) -> None:
        if create_parents:
            self.makedirs(path, exist_ok=True)
            return
        self._need_webdav("MKCOL")
        response = self.request("MKCOL", path, collection=True)
        if response.status_code == 405:
            raise FileExistsError(f"MKCOL {response.request.url}: HTTP 405 {response.reason_phrase} (exists)")
        _check(response, 200, 201)

    def makedirs(self, path: str, exist_ok: bool = False) -> None:
        """MKCOL the path, and its missing parents when the server says they are missing (409)."""
        if not self.webdav:
            return  # plain PUT servers make directories themselves, or not at all
        parts = [p for p in path.strip("/").split("/") if p]
        if not parts:
            return
        response = self.request("MKCOL", path, collection=True)
        if response.status_code == 409:
            for depth in range(1, len(parts) + 1):
                response = self.request("MKCOL", "/".join(parts[:depth]), collection=True)
                if response.status_code not in (200, 201, 405):
                    break
        if response.status_code == 405:  # it exists (RFC 4918 §9.3.1)
            if not exist_ok:
                raise FileExistsError(f"MKCOL {response.request.url}: HTTP 405 {response.reason_phrase} (exists)")
            return
        _check(response, 200, 201)

    def rmdir(self, path: str) -> None:
        _check(self.request("DELETE", path, collection=True), 200, 204)

    # --- files

    def _rm(self, path: str) -> None:
        self.rm_file(path)

    def rm_file(self, path: str) -> None:
        _check(self.request("DELETE", path), 200, 204)

    def rm(self, path: str | list[str], recursive: bool = False, maxdepth: int | None = None) -> None:
        for one in [path] if isinstance(path, str) else path:
            response = self.request("DELETE", one)
            if response.status_code in (301, 409) and recursive:  # a collection: nginx wants the slash
                response = self.request("DELETE", one, collection=True)
            _check(response, 200, 204)

    def cat_file(self, path: str, start: int | None = None, end: int | None = None, **kwargs: Any) -> bytes:
        headers = {}
        if start is not None or end is not None:
            if start is not None and start < 0 or end is not None and end < 0:
                size = self.size(path) or 0
                start = size + start if start is not None and start < 0 else start
                end = size + end if end is not None and end < 0 else end
            begin = start or 0
            if end is not None and end <= begin:
                return b""
            headers["Range"] = f"bytes={begin}-{'' if end is None else end - 1}"
        with self.client.stream("GET", self.url(path), headers=headers) as response:
            _check(response, 200, 206)
            if response.status_code == 206 or not headers:
                return response.read()
            # The server ignored the range: keep only the part asked for, without holding the rest.
            begin, out, position = start or 0, bytearray(), 0
            for chunk in response.iter_bytes():
                low, high = max(begin - position, 0), len(chunk) if end is None else min(end - position, len(chunk))
                if high > low:
                    out += chunk[low:high]
                position += len(chunk)
                if end is not None and position >= end:
                    break
            return bytes(out)

    def pipe_file(self, path: str, value: bytes, mode: str = "overwrite", **kwargs: Any) -> None:
        _check(self.request("PUT", path, content=value), 200, 201, 204)

    def open_streamed(self, path: str) -> _StreamedGet:
        response = self.client.send(self.client.build_request("GET", self.url(path)), stream=True)
        if not response.is_success:
            response.close()
            raise _status_error(response)
        return _StreamedGet(response)

    def _open(
        self,
        path: str,
        mode: str = "rb",
        block_size: int | None = None,
        autocommit: bool = True,
        cache_options: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> Any:
        if mode == "wb":
            return _PutFile(self, path)
        if mode == "rb":
            return _RangedFile(
                self, path, mode, block_size=block_size or READ_BLOCK, cache_options=cache_options, **kwargs
            )
        raise NotImplementedError(f"mode {mode!r}: an HTTP file is read whole or written whole")

    # --- server-side operations (WebDAV)

    def _move_or_copy(self, method: str, path1: str, path2: str) -> None:
        self._need_webdav(method)
        headers = {"Destination": self.url(path2), "Overwrite": "T"}
        _check(self.request(method, path1, headers=headers), 200, 201, 204)

    def mv(self, path1: str, path2: str, recursive: bool = False, maxdepth: int | None = None, **kwargs: Any) -> None:
        self._move_or_copy("MOVE", path1, path2)

    def cp_file(self, path1: str, path2: str, **kwargs: Any) -> None:
        self._move_or_copy("COPY", path1, path2)

    def copy(self, path1: Any, path2: Any, recursive: bool = False, **kwargs: Any) -> None:
        if isinstance(path1, str) and isinstance(path2, str) and not recursive:
            self.cp_file(path1, path2)
        else:
            super().copy(path1, path2, recursive=recursive, **kwargs)


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


class HttpHost(HostBlock):
    """One PUT per file; with WebDAV, under a temporary name renamed by MOVE when complete."""

    _block_type_name = "pds HTTP Host"
    protocol: ClassVar[str] = "http"
    default_scheme: ClassVar[str] = "http"

    # Capabilities that hold only with WebDAV (options.webdav, default true) and PUT uploads.
    @property
    def supports_rename(self) -> bool:  # type: ignore[override]
        return bool(self.options.get("webdav", True)) and self.options.get("upload", "put") == "put"

    @property
    def reads_back(self) -> bool:  # type: ignore[override]
        # a form posted to a fixed URL is filed where the site decides: only its answer tells
        return not (self.options.get("upload") == "form" and self.options.get("form_url"))

    @property
    def has_directories(self) -> bool:  # type: ignore[override]
        return bool(self.options.get("upload", "put") == "put")  # a POST endpoint files the upload itself

    @property
    def supports_server_side_copy(self) -> bool:  # type: ignore[override]
        return bool(self.options.get("webdav", True))

    def base_url(self) -> str:
        address = self.address.strip()
        return address if "://" in address else f"{self.default_scheme}://{address}"

    def filesystem(self) -> fsspec.AbstractFileSystem:
        token = self.options.get("secret_bearer_token")
        headers = {str(k): str(v) for k, v in (self.options.get("headers") or {}).items()}
        auth: tuple[str, str] | None = None
        if token:
            headers["Authorization"] = f"Bearer {token}"
        elif self.login:
            auth = (self.login, self.password.get_secret_value())
        return HttpFileSystem(
            self.base_url(),
            webdav=bool(self.options.get("webdav", True)),
            auth=auth,
            headers=headers,
            verify=self.options.get("verify_tls", True),
            timeout=float(self.options.get("timeout", DEFAULT_TIMEOUT)),
            upload=str(self.options.get("upload", "put")),
            form_url=self.options.get("form_url"),
            form_field=str(self.options.get("form_field", "file")),
            form_fields={str(k): str(v) for k, v in (self.options.get("form_fields") or {}).items()},
        )

    def check(self) -> None:
        super().check()
        scheme = urlsplit(self.base_url()).scheme
        if scheme not in ("http", "https"):
            raise InvalidInput(f"host {self.name}: the address must be an http:// or https:// URL, not {scheme}://")
        if not urlsplit(self.base_url()).hostname:
            raise InvalidInput(f"host {self.name}: the address {self.address!r} names no server")
        if not isinstance(self.options.get("headers", {}), dict):
            raise InvalidInput(f"host {self.name}: options.headers must be a mapping of header names to values")
        if self.options.get("upload", "put") not in UPLOAD_METHODS:
            raise InvalidInput(f"host {self.name}: options.upload must be one of {', '.join(UPLOAD_METHODS)}")
        if not isinstance(self.options.get("form_fields", {}), dict):
            raise InvalidInput(f"host {self.name}: options.form_fields must be a mapping of field names to values")
        form_url = self.options.get("form_url")
        if form_url and urlsplit(str(form_url)).scheme not in ("http", "https"):
            raise InvalidInput(f"host {self.name}: options.form_url must be an http:// or https:// URL")
        verify = self.options.get("verify_tls", True)
        if not isinstance(verify, bool | str):
            raise InvalidInput(f"host {self.name}: options.verify_tls must be true, false or a CA bundle path")

    def open_raw_stream(self, fs: fsspec.AbstractFileSystem, path: str) -> IO[bytes]:
        """One streamed GET for the whole file, instead of a ranged request per block."""
        if not isinstance(fs, HttpFileSystem):
            return super().open_raw_stream(fs, path)
        stream: IO[bytes] = fs.open_streamed(path)  # type: ignore[assignment]
        return stream

    def classify(self, exc: BaseException) -> TransferError:
        if isinstance(exc, TransferError):
            return exc
        message = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        for link in _chain(exc):
            if isinstance(link, HttpStatusError):
                if link.status == 507:
                    return FailOverToNextHost(f"host {self.name} is full: {link}")
                if link.status >= 500 or link.status in (408, 429):
                    return RetryOnSameHost(f"host {self.name}: {link}")
                return FailTransfer(f"host {self.name} refused the request: {link}")
            if isinstance(link, PermissionError):
                return FailTransfer(f"host {self.name} refused access: {link}")
            if isinstance(link, FileNotFoundError):
                return FailTransfer(f"not found (host {self.name}): {link}")
            if isinstance(link, ssl.SSLCertVerificationError):
                return FailOverToNextHost(f"host {self.name}: TLS certificate rejected: {message}")
            if isinstance(link, ConnectionRefusedError | socket.gaierror) or (
                isinstance(link, OSError) and link.errno in (errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH)
            ):
                return FailOverToNextHost(f"cannot reach host {self.name}: {message}")
            if isinstance(link, httpx.ConnectTimeout) and "handshake" not in str(link).lower():
                # No TCP answer at all: the host is down or filtered. A TLS handshake that stalls
                # after the connection was accepted is a hung server, like any other read timeout.
                return FailOverToNextHost(f"cannot reach host {self.name} (connect timeout): {message}")
            if isinstance(link, httpx.TimeoutException):
                return RetryOnSameHost(f"host {self.name} timed out: {message}")
            if isinstance(link, httpx.ConnectError) and any(
                words in str(link).lower() for words in ("refused", "name or service not known")
            ):
                return FailOverToNextHost(f"cannot reach host {self.name}: {message}")
        return super().classify(exc)


class HttpsHost(HttpHost):
    """`https` hosts: the same module, with https:// assumed when the address has no scheme."""

    _block_type_name = "pds HTTPS Host"
    protocol: ClassVar[str] = "https"
    default_scheme: ClassVar[str] = "https"


class WebdavHost(HttpHost):
    """`webdav` hosts: the same module under the name sites know it by (WebDAV is on by default anyway)."""

    _block_type_name = "pds WebDAV Host"
    protocol: ClassVar[str] = "webdav"
