"""The Data Portal as an S3 endpoint at `/s3` (path-style): buckets are destinations, keys are targets.

For aws-cli, boto3 and rclone: ListBuckets, HeadBucket, GetBucketLocation, ListObjects (V1 and V2:
prefix, delimiter, continuation), Head/Get (Range)/Put/Delete object, CopyObject, DeleteObjects,
multipart upload (parts are staged as objects in the Data Store and composed on completion, streamed),
SigV4 header signatures and presigned URLs. The access key id is the data user's login; its secret is
made by `pds user s3secret LOGIN`. Errors are S3 error XML.

It is a raw ASGI app mounted in the Litestar app (S3 routes by query string, which routers do not).
"""

from __future__ import annotations

import contextlib
import hashlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from email.utils import format_datetime
from typing import Any
from urllib.parse import parse_qs, unquote
from xml.etree import ElementTree as ET  # noqa: S405  (bodies are parsed with defusedxml-like limits below)

import anyio.to_thread
from litestar import asgi
from litestar.types import Receive, Scope, Send

from api.routes.data_users import portal_secret_key
from api.routes.portal import InvalidRange, parse_range
from api.s3_sigv4 import SignatureError, decode_aws_chunked, verify
from catalog import multipart
from catalog.access import Permission
from catalog.data_users import s3_secret
from catalog.database import read_scope
from catalog.errors import AccessDenied, Conflict, InvalidInput, NotFound, NotYetAvailable, PdsError, QuotaExceeded
from catalog.paths import clean_target
from catalog.portal import Entry, Portal, PortalUser
from catalog.portal_models import Operation
from catalog.portal_streams import Upload
from catalog.store import DataStore

NS = "http://s3.amazonaws.com/doc/2006-03-01/"
MAX_XML_BODY = 1024 * 1024
PREFIX = "/s3"


class S3Error(Exception):
    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.headers = status, code, headers or {}


def s3_error(exc: PdsError, key: str) -> S3Error:
    if isinstance(exc, NotFound):
        return S3Error(404, "NoSuchKey" if key else "NoSuchBucket", str(exc))
    if isinstance(exc, AccessDenied):
        return S3Error(403, "AccessDenied", str(exc))
    if isinstance(exc, NotYetAvailable):  # fetched on first use: SDKs retry SlowDown by themselves
        return S3Error(503, "SlowDown", str(exc), {"Retry-After": str(exc.retry_after)})
    if isinstance(exc, QuotaExceeded):
        if "connection" in str(exc):
            return S3Error(503, "SlowDown", str(exc), {"Retry-After": str(exc.retry_after or 5)})
        return S3Error(403, "QuotaExceeded", str(exc))
    if isinstance(exc, Conflict):
        return S3Error(409, "OperationAborted", str(exc))
    if isinstance(exc, InvalidInput):
        return S3Error(400, "InvalidArgument", str(exc))
    return S3Error(500, "InternalError", str(exc))


def _object_path(bucket: str, key: str) -> str:
    """The tree path of an object: keys are targets, so `..`, `.` and leading slashes are refused."""
    return f"/{bucket}/{clean_target(key)}"


def _xml(root: str, children: list[Any]) -> bytes:
    # S3 puts its namespace on results but not on errors (clients read `Error/Code` without one).
    element = ET.Element(root, xmlns=NS) if root != "Error" else ET.Element(root)
    _fill(element, children)
    return b'<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(element)


def _fill(parent: ET.Element, children: list[Any]) -> None:
    for name, value in children:
        child = ET.SubElement(parent, name)
        if isinstance(value, list):
            _fill(child, value)
        elif value is not None:
            child.text = str(value)


def _iso(entry: Entry) -> str:
    return entry.mtime.strftime("%Y-%m-%dT%H:%M:%S.000Z") if entry.mtime else "1970-01-01T00:00:00.000Z"


class S3Request:
    def __init__(self, scope: Any, receive: Any) -> None:
        self.scope, self.receive = scope, receive
        self.method: str = scope["method"]
        raw = scope.get("raw_path") or scope["path"].encode()
        self.raw_path = raw.split(b"?", 1)[0].decode("latin-1")
        self.query: str = scope.get("query_string", b"").decode("latin-1")
        self.params = {k: v[0] for k, v in parse_qs(self.query, keep_blank_values=True).items()}
        self.headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        path = unquote(self.raw_path)[len(PREFIX) :].lstrip("/")
        self.bucket, _, self.key = path.partition("/")
        if self.bucket in (".", ".."):
            self.bucket = ""  # Never a way up: answered as an invalid bucket name.
            self.invalid_bucket = True
        client = scope.get("client")
        self.client_address: str | None = client[0] if client else None
        self.invalid_bucket = getattr(self, "invalid_bucket", False)
        self.body_read = False

    async def body(self) -> AsyncIterator[bytes]:
        while True:
            message = await self.receive()
            if message["type"] == "http.disconnect":
                raise PdsError("client disconnected")
            chunk: bytes = message.get("body", b"")
            if chunk:
                yield chunk
            if not message.get("more_body", False):
                self.body_read = True
                return

    async def payload(self) -> AsyncIterator[bytes]:
        """The object's bytes: aws-chunked decoded when the client sent it so."""
        signed = self.headers.get("x-amz-content-sha256", "")
        if signed.startswith("STREAMING-") or "aws-chunked" in self.headers.get("content-encoding", ""):
            async for chunk in decode_aws_chunked(self.body()):
                yield chunk
        else:
            async for chunk in self.body():
                yield chunk

    async def small_body(self) -> bytes:
        data = bytearray()
        async for chunk in self.payload():
            data += chunk
            if len(data) > MAX_XML_BODY:
                raise S3Error(400, "MalformedXML", "the request body is too large")
        return bytes(data)


Responder = Callable[[int, dict[str, str], bytes | AsyncIterator[bytes]], Awaitable[None]]


class S3Endpoint:
    """Routes one S3 request onto the portal."""

    def __init__(self, portal: Portal, server_key: str) -> None:
        self.portal = portal
        self.server_key = server_key
        self.store: DataStore = portal.store

    def _secret(self, login: str) -> str | None:
        with read_scope(self.portal.engine) as session:
            return s3_secret(session, login, self.server_key)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        request = S3Request(scope, receive)

        async def respond(status: int, headers: dict[str, str], body: bytes | AsyncIterator[bytes]) -> None:
            raw_headers = [(k.lower().encode(), v.encode()) for k, v in headers.items()]
            await send({"type": "http.response.start", "status": status, "headers": raw_headers})
            if isinstance(body, bytes):
                await send({"type": "http.response.body", "body": body if request.method != "HEAD" else b""})
                return
            async for chunk in body:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})

        try:
            signed = await anyio.to_thread.run_sync(
                lambda: verify(request.method, request.raw_path, request.query, request.headers, self._secret)
            )
            user = await anyio.to_thread.run_sync(self.portal.user, signed.access_key)
            limit = await anyio.to_thread.run_sync(self.portal.max_connections, user.login)
            with self.portal.connections.hold(user.login, limit):
                await self.route(request, user, respond)
        except SignatureError as exc:
            status = 400 if exc.code in ("AuthorizationHeaderMalformed", "InvalidRequest") else 403
            await self._error(respond, request, S3Error(status, exc.code, str(exc)))
        except PdsError as exc:
            await self._error(respond, request, s3_error(exc, request.key))
        except S3Error as exc:
            await self._error(respond, request, exc)

    async def _error(self, respond: Responder, request: S3Request, exc: S3Error) -> None:
        body = _xml(
            "Error",
            [
                ("Code", exc.code),
                ("Message", str(exc)),
                ("Resource", request.raw_path),
                ("RequestId", uuid.uuid4().hex),
            ],
        )
        headers = {"Content-Type": "application/xml", **exc.headers}
        if request.method in ("PUT", "POST") and not request.body_read:
            # A refused upload leaves its body unread (or unsent after `Expect: 100-continue`): closing the
            # connection keeps the server's parser from reading those bytes as the next request.
            headers["Connection"] = "close"
        await respond(exc.status, headers, body)

    async def route(self, request: S3Request, user: PortalUser, respond: Responder) -> None:
        method, bucket, key, params = request.method, request.bucket, request.key, request.params
        if request.invalid_bucket:
            raise S3Error(400, "InvalidBucketName", "bucket names are destinations; '.' and '..' are not")
        if not bucket:
            if method != "GET":
                raise S3Error(405, "MethodNotAllowed", "only ListBuckets is allowed on the service")
            return await self.list_buckets(user, respond)
        if not key:
            if method in ("GET", "HEAD") and "location" in params:
                return await respond(200, {"Content-Type": "application/xml"}, _xml("LocationConstraint", []))
            if method == "GET":
                return await self.list_objects(request, user, respond)
            if method in ("HEAD", "PUT"):
                # PUT: rclone and aws-cli "create" the bucket they copy into; it must exist already.
                await anyio.to_thread.run_sync(self.portal.stat, user, f"/{bucket}")
                return await respond(200, {}, b"")
            if method == "POST" and "delete" in params:
                return await self.delete_objects(request, user, respond)
            raise S3Error(405, "MethodNotAllowed", f"{method} on a bucket is not supported")
        if method == "PUT" and "uploadId" in params:
            return await self.upload_part(request, user, respond)
        if method == "POST" and "uploads" in params:
            return await self.create_multipart(request, user, respond)
        if method == "POST" and "uploadId" in params:
            return await self.complete_multipart(request, user, respond)
        if method == "DELETE" and "uploadId" in params:
            return await self.abort_multipart(request, user, respond)
        if method == "PUT" and "x-amz-copy-source" in request.headers:
            return await self.copy_object(request, user, respond)
        if method == "PUT":
            return await self.put_object(request, user, respond)
        if method in ("GET", "HEAD"):
            return await self.get_object(request, user, respond)
        if method == "DELETE":
            await self._may_delete(user, bucket)
            with contextlib.suppress(NotFound):  # S3 deletes are idempotent: a missing key is deleted.
                await anyio.to_thread.run_sync(self.portal.delete, user, _object_path(bucket, key))
            return await respond(204, {}, b"")
        raise S3Error(405, "MethodNotAllowed", f"{method} is not supported")

    # --- Listing ---

    async def list_buckets(self, user: PortalUser, respond: Responder) -> None:
        buckets = [
            ("Bucket", [("Name", name), ("CreationDate", "2026-01-01T00:00:00.000Z")]) for name in sorted(user.reach)
        ]
        body = _xml("ListAllMyBucketsResult", [("Owner", [("ID", user.login)]), ("Buckets", buckets)])
        await respond(200, {"Content-Type": "application/xml"}, body)

    async def list_objects(self, request: S3Request, user: PortalUser, respond: Responder) -> None:
        params = request.params
        v2 = params.get("list-type") == "2"
        prefix, delimiter = params.get("prefix", ""), params.get("delimiter", "")
        try:
            max_keys = min(int(params.get("max-keys", "1000") or 1000), 1000)
        except ValueError:
            max_keys = -1
        if max_keys < 0:
            raise S3Error(400, "InvalidArgument", "max-keys must be a whole number from 0 to 1000")
        after = params.get("continuation-token") or params.get("start-after", "") if v2 else params.get("marker", "")
        page = await anyio.to_thread.run_sync(
            lambda: self.portal.list_keys(
                user, request.bucket, prefix=prefix, delimiter=delimiter, after=after, limit=max_keys
            )
        )
        contents: list[Any] = [
            (
                "Contents",
                [
                    ("Key", key),
                    ("LastModified", _iso(entry)),
                    ("ETag", f'"{entry.md5 or ""}"'),  # no MD5 before an on-demand file is fetched
                    ("Size", entry.size),
                    ("StorageClass", "STANDARD"),
                ],
            )
            for key, entry in page.files
        ]
        prefixes, truncated, last = page.prefixes, page.truncated, page.next_marker
        fields: list[Any] = [("Name", request.bucket), ("Prefix", prefix), ("MaxKeys", max_keys)]
        if delimiter:
            fields.append(("Delimiter", delimiter))
        fields.append(("IsTruncated", "true" if truncated else "false"))
        if v2:
            fields.append(("KeyCount", len(contents) + len(prefixes)))
            if truncated:
                fields.append(("NextContinuationToken", last))
        elif truncated:
            fields.append(("NextMarker", last))
        fields += contents + [("CommonPrefixes", [("Prefix", p)]) for p in prefixes]
        await respond(200, {"Content-Type": "application/xml"}, _xml("ListBucketResult", fields))

    # --- Objects ---

    async def get_object(self, request: S3Request, user: PortalUser, respond: Responder) -> None:
        path = _object_path(request.bucket, request.key)
        entry = await anyio.to_thread.run_sync(self.portal.stat, user, path)
        if entry.is_dir:
            raise S3Error(404, "NoSuchKey", f"no object {request.key!r}")
        if entry.pending:  # registered without retrieval: this read asks for it, then 503 SlowDown
            entry = await anyio.to_thread.run_sync(lambda: self.portal.require_content(user, path, protocol="s3"))
        headers = {
            "Content-Type": "application/octet-stream",
            "ETag": f'"{entry.md5}"',
            "Accept-Ranges": "bytes",
        }
        if entry.mtime:
            headers["Last-Modified"] = format_datetime(entry.mtime, usegmt=True)
        if request.method == "HEAD":
            headers["Content-Length"] = str(entry.size)
            return await respond(200, headers, b"")
        try:
            wanted = parse_range(request.headers.get("range"), entry.size)
        except InvalidRange as exc:
            raise S3Error(416, "InvalidRange", str(exc)) from None
        start, length = wanted if wanted else (0, entry.size)
        download = await anyio.to_thread.run_sync(
            lambda: self.portal.open_read(
                user, path, protocol="s3", client_address=request.client_address, start=start, length=length
            )
        )
        headers["Content-Length"] = str(length)
        if wanted:
            headers["Content-Range"] = f"bytes {start}-{start + length - 1}/{entry.size}"
        iterator = download.chunks()

        async def chunks() -> AsyncIterator[bytes]:
            try:
                while (chunk := await anyio.to_thread.run_sync(next, iterator, None)) is not None:
                    yield chunk
            finally:
                await anyio.to_thread.run_sync(iterator.close)

        await respond(206 if wanted else 200, headers, chunks())

    async def _receive_into(self, upload: Any, chunks: AsyncIterator[bytes], expected_sha256: str | None) -> None:
        digest = hashlib.sha256() if expected_sha256 else None
        buffer = bytearray()
        try:
            async for chunk in chunks:
                if digest is not None:
                    digest.update(chunk)
                buffer += chunk
                if isinstance(upload, Upload) and upload.progress_due():  # a part has no transfer to keep alive
                    await anyio.to_thread.run_sync(upload.note_progress)
                if len(buffer) >= self.store.chunk_size:
                    data, buffer = bytes(buffer), bytearray()
                    await anyio.to_thread.run_sync(upload.write, data)
            if buffer:
                await anyio.to_thread.run_sync(upload.write, bytes(buffer))
            if digest is not None and digest.hexdigest() != expected_sha256:
                raise S3Error(400, "XAmzContentSHA256Mismatch", "the body does not match x-amz-content-sha256")
        except BaseException as exc:
            await anyio.to_thread.run_sync(upload.abort, f"upload failed: {exc}")
            raise

    @staticmethod
    def _sha256(request: S3Request) -> str | None:
        value = request.headers.get("x-amz-content-sha256", "")
        return value if len(value) == 64 and all(c in "0123456789abcdef" for c in value) else None

    async def put_object(self, request: S3Request, user: PortalUser, respond: Responder) -> None:
        path = _object_path(request.bucket, request.key)
        upload = await anyio.to_thread.run_sync(
            lambda: self.portal.begin_upload(user, path, protocol="s3", client_address=request.client_address)
        )
        await self._receive_into(upload, request.payload(), self._sha256(request))
        stored, _ = await anyio.to_thread.run_sync(upload.commit)
        await respond(200, {"ETag": f'"{stored.md5}"'}, b"")

    async def copy_object(self, request: S3Request, user: PortalUser, respond: Responder) -> None:
        source_bucket, _, source_key = (
            unquote(request.headers["x-amz-copy-source"].split("?", 1)[0]).lstrip("/").partition("/")
        )
        source = _object_path(source_bucket, source_key)
        download = await anyio.to_thread.run_sync(
            lambda: self.portal.open_read(user, source, protocol="s3", client_address=request.client_address)
        )
        path = _object_path(request.bucket, request.key)
        upload = await anyio.to_thread.run_sync(
            lambda: self.portal.begin_upload(user, path, protocol="s3", client_address=request.client_address)
        )

        def copy() -> Any:
            try:
                for chunk in download.chunks():
                    upload.write(chunk)
            except BaseException as exc:
                upload.abort(f"copy failed: {exc}")
                raise
            return upload.commit()[0]

        stored = await anyio.to_thread.run_sync(copy)
        body = _xml("CopyObjectResult", [("LastModified", _iso(Entry("", False))), ("ETag", f'"{stored.md5}"')])
        await respond(200, {"Content-Type": "application/xml"}, body)

    async def _may_delete(self, user: PortalUser, bucket: str) -> None:
        """A delete outside the user's rights is refused whole, before any key is looked at: 404
        NoSuchBucket for a bucket out of its reach (as GET answers), 403 AccessDenied where it may not
        delete. Only then is a missing key "deleted", as S3 answers it."""
        try:
            await anyio.to_thread.run_sync(self.portal.check, user, bucket, Operation.DELETE)
        except NotFound as exc:
            raise S3Error(404, "NoSuchBucket", str(exc)) from None

    async def delete_objects(self, request: S3Request, user: PortalUser, respond: Responder) -> None:
        await self._may_delete(user, request.bucket)
        body = await request.small_body()
        try:
            root = ET.fromstring(body)  # noqa: S314  (size-capped, no entities are resolved by ElementTree)
        except ET.ParseError:
            raise S3Error(400, "MalformedXML", "the Delete body is not XML") from None
        keys = [el.text or "" for el in root.iter() if el.tag.endswith("Key")]
        results: list[Any] = []
        for key in keys:
            try:
                await anyio.to_thread.run_sync(self.portal.delete, user, _object_path(request.bucket, key))
                results.append(("Deleted", [("Key", key)]))
            except NotFound:
                results.append(("Deleted", [("Key", key)]))
            except PdsError as exc:
                error = s3_error(exc, key)
                results.append(("Error", [("Key", key), ("Code", error.code), ("Message", str(exc))]))
        await respond(200, {"Content-Type": "application/xml"}, _xml("DeleteResult", results))

    # --- Multipart uploads: parts staged in the Data Store, composed (streamed) on completion ---

    def _manifest(self, upload_id: str, user: PortalUser, request: S3Request) -> multipart.Manifest:
        """The caller's upload `upload_id` of the request's key; another user's (or another key's)
        upload is answered as missing, as S3 does."""
        try:
            manifest = multipart.read_manifest(self.store, upload_id)
        except NotFound:
            raise S3Error(404, "NoSuchUpload", f"no multipart upload {upload_id}") from None
        try:
            path = _object_path(request.bucket, request.key)
        except InvalidInput:
            path = None
        if manifest.login != user.login or manifest.path != path:
            raise S3Error(404, "NoSuchUpload", f"no multipart upload {upload_id}")
        return manifest

    async def create_multipart(self, request: S3Request, user: PortalUser, respond: Responder) -> None:
        path = _object_path(request.bucket, request.key)

        def create() -> str:
            # Check the right to put (and the quota) now, so a refused upload fails before any part.
            self.portal.check_upload(user, path)
            return multipart.begin(self.store, user.login, path)

        upload_id = await anyio.to_thread.run_sync(create)
        body = _xml(
            "InitiateMultipartUploadResult",
            [("Bucket", request.bucket), ("Key", request.key), ("UploadId", upload_id)],
        )
        await respond(200, {"Content-Type": "application/xml"}, body)

    async def upload_part(self, request: S3Request, user: PortalUser, respond: Responder) -> None:
        upload_id = request.params["uploadId"]
        try:
            number = int(request.params.get("partNumber", ""))
        except ValueError:
            raise S3Error(400, "InvalidArgument", "partNumber must be an integer from 1 to 10000") from None
        if not 1 <= number <= 10000:
            raise S3Error(400, "InvalidArgument", "partNumber must be from 1 to 10000")
        await anyio.to_thread.run_sync(self._manifest, upload_id, user, request)
        writer = _PartWriter(self.store, multipart.part_key(upload_id, number))
        await self._receive_into(writer, request.payload(), self._sha256(request))
        stored = await anyio.to_thread.run_sync(writer.commit)
        await respond(200, {"ETag": f'"{stored.md5}"'}, b"")

    async def complete_multipart(self, request: S3Request, user: PortalUser, respond: Responder) -> None:
        upload_id = request.params["uploadId"]
        manifest = await anyio.to_thread.run_sync(self._manifest, upload_id, user, request)
        body = await request.small_body()
        try:
            root = ET.fromstring(body)  # noqa: S314
        except ET.ParseError:
            raise S3Error(400, "MalformedXML", "the CompleteMultipartUpload body is not XML") from None
        numbers = [int(el.text or 0) for el in root.iter() if el.tag.endswith("PartNumber")]
        if not numbers or numbers != sorted(numbers):
            raise S3Error(400, "InvalidPartOrder", "parts must be listed in ascending order")
        part_keys = [multipart.part_key(upload_id, n) for n in numbers]
        for key in part_keys:
            if not self.store.exists(key):
                raise S3Error(400, "InvalidPart", f"part {key.rsplit('-', 1)[1]} was not uploaded")

        def compose() -> Any:
            upload = self.portal.begin_upload(user, manifest.path, protocol="s3", client_address=request.client_address)
            try:
                for key in part_keys:
                    for chunk in self.store.iter_chunks(key):
                        upload.write(chunk)
            except BaseException as exc:
                upload.abort(f"multipart upload failed: {exc}")
                raise
            stored = upload.commit()[0]
            self._drop_parts(upload_id)
            return stored

        stored = await anyio.to_thread.run_sync(compose)
        result = _xml(
            "CompleteMultipartUploadResult",
            [("Bucket", request.bucket), ("Key", request.key), ("ETag", f'"{stored.md5}"')],
        )
        await respond(200, {"Content-Type": "application/xml"}, result)

    async def abort_multipart(self, request: S3Request, user: PortalUser, respond: Responder) -> None:
        upload_id = request.params["uploadId"]
        await anyio.to_thread.run_sync(self._manifest, upload_id, user, request)
        await anyio.to_thread.run_sync(self._drop_parts, upload_id)
        await respond(204, {}, b"")

    def _drop_parts(self, upload_id: str) -> None:
        try:
            multipart.drop(self.store, upload_id)
        except NotFound:
            raise S3Error(404, "NoSuchUpload", f"no multipart upload {upload_id}") from None


class _PartWriter:
    """A part of a multipart upload: written to the store under its own key."""

    def __init__(self, store: DataStore, key: str) -> None:
        self.writer = store.writer(key)

    def write(self, chunk: bytes) -> None:
        self.writer.write(chunk)

    def commit(self) -> Any:
        return self.writer.commit()

    def abort(self, reason: str = "") -> None:
        self.writer.abort()


@asgi(PREFIX, is_mount=True, copy_scope=True, permission=Permission.PORTAL)
async def s3_endpoint(scope: Scope, receive: Receive, send: Send) -> None:
    app = scope["app"]
    endpoint: S3Endpoint | None = getattr(app.state, "s3_endpoint", None)
    if endpoint is None:
        endpoint = S3Endpoint(app.state.portal, portal_secret_key(app.state))
        app.state.s3_endpoint = endpoint
    await endpoint(scope, receive, send)
