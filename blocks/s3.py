"""Amazon S3 and S3-compatible object stores through s3fs.

`address` is the endpoint URL (empty for AWS); `directory` starts with the bucket
(`bucket/prefix/$destination`). Credentials: `login`/`password` as access key/secret key, or
`options.aws_credentials_block`, the name of a saved prefect-aws `AwsCredentials` block.
Options: `region`, `path_style` (true for most non-AWS servers), `part_size` (bytes per multipart
part; memory per upload is about one part), `timeout` (seconds to connect or wait for an answer, 60),
`retries` (times a failed request is repeated, 3), `etag_is_md5` (true; false for buckets with SSE-KMS
or SSE-C encryption, whose ETags are not the MD5 of the content, so uploads are checked by size only),
`parallel_puts` (small files of a batch in flight at once over one connection, 4; 1 sends them one by one),
`signed_put` (true: small files of a batch go as one PutObject signed by pds, `blocks.s3_put`, on the same
connections; false sends them through botocore, as every other request goes).
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
from functools import lru_cache
from typing import IO, Any, ClassVar

import fsspec
from aiobotocore.session import AioSession
from botocore.handlers import add_expect_header
from fsspec.asyn import sync
from s3fs import S3File, S3FileSystem

from blocks.base import HostBlock
from blocks.s3_put import SignedPut
from catalog.errors import FailOverToNextHost, FailTransfer, InvalidInput, RetryOnSameHost, TransferError

_AUTH_CODES = {"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "NoSuchBucket", "AllAccessDisabled"}
DEFAULT_PART_SIZE = 16 * 1024 * 1024


@lru_cache(maxsize=1)
def _botocore_session() -> AioSession:
    """One botocore session per process, shared by every S3 connection.

    A session loads the S3 service model (a large JSON file) on its first client: about 0.2 s of CPU,
    once per process instead of once per batch. Credentials go to each client, never to the session.
    """
    return AioSession()


#: Filesystems by their settings (and process): see `S3Host.filesystem`.
_filesystems: dict[str, S3FileSystem] = {}
_filesystems_lock = threading.Lock()
_MAX_FILESYSTEMS = 64


class _StreamedBody:
    """A synchronous reader over an aiobotocore streaming body running on s3fs's event loop."""

    def __init__(self, loop: Any, body: Any) -> None:
        self._loop, self._body = loop, body
        self.closed = False

    def read(self, size: int = -1) -> bytes:
        data: bytes = sync(self._loop, self._read, size)
        return data

    async def _read(self, size: int) -> bytes:
        """Up to `size` bytes, fewer only at the end of the object.

        The body hands over whatever the socket had (often 64 KiB): gathering a whole chunk on the
        event loop costs one hop between threads per chunk instead of one per network read.
        """
        if size < 0:
            whole: bytes = await self._body.read()
            return whole
        parts: list[bytes] = []
        wanted = size
        while wanted > 0:
            part: bytes = await self._body.read(wanted)
            if not part:
                break
            parts.append(part)
            wanted -= len(part)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._body.close()

    def __enter__(self) -> _StreamedBody:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


class _DeadlineS3FileSystem(S3FileSystem):  # type: ignore[misc]
    """s3fs without `Expect: 100-continue` on uploads.

    aiohttp starts its read timeout only once the body is written, and with that header the body
    waits for a `100 Continue` that a hung server never sends: a PutObject then blocks forever
    whatever `timeout` says. Without it the read timeout covers every request.
    """

    async def set_session(self, refresh: bool = False, kwargs: dict[str, Any] | None = None) -> Any:
        client = await super().set_session(refresh=refresh, kwargs=kwargs or {})
        client.meta.events.unregister("before-call.s3", add_expect_header)
        # botocore composes the User-Agent header anew, twice, for every request (feature metrics
        # for AWS): about 4% of the mover's CPU when it sends small files. It is composed once here.
        creator = getattr(client, "_user_agent_creator", None)
        if creator is not None and callable(getattr(creator, "to_string", None)):
            agent = creator.to_string()
            creator.to_string = lambda: agent
        return client

    def _open(self, path: str, mode: str = "rb", *args: Any, **kwargs: Any) -> Any:
        file = super()._open(path, mode, *args, **kwargs)
        if "r" not in mode:
            file.__class__ = _CommitRecordingFile
        return file


class _CommitRecordingFile(S3File):  # type: ignore[misc]
    """An s3fs file that keeps the answer to the request that committed it (PutObject or
    CompleteMultipartUpload): its ETag is the MD5 of a single-part object, so no HEAD is needed."""

    write_result: dict[str, Any] | None = None

    def _call_s3(self, method: str, *args: Any, **kwargs: Any) -> Any:
        result = super()._call_s3(method, *args, **kwargs)
        if method in ("put_object", "complete_multipart_upload"):
            self.write_result = {"method": method, **result}
        return result


class S3Host(HostBlock):
    """Objects appear only when their upload completes, so no temporary name is needed."""

    _block_type_name = "pds S3 Host"
    protocol: ClassVar[str] = "s3"
    supports_server_side_copy: ClassVar[bool] = True
    has_directories: ClassVar[bool] = False
    reports_md5: ClassVar[bool] = True  # the ETag of a single-part upload is its MD5

    def _credentials(self) -> dict[str, Any]:
        block_name = self.options.get("aws_credentials_block")
        if block_name:
            from prefect_aws import AwsCredentials

            creds: Any = AwsCredentials.load(block_name)
            secret = creds.aws_secret_access_key
            return {
                "key": creds.aws_access_key_id,
                "secret": secret.get_secret_value() if secret else None,
                "token": creds.aws_session_token,
            }
        if self.login:
            return {"key": self.login, "secret": self.password.get_secret_value()}
        return {}

    def filesystem(self) -> fsspec.AbstractFileSystem:
        client_kwargs: dict[str, Any] = {}
        if self.address:
            client_kwargs["endpoint_url"] = self.address
        if self.options.get("region"):
            client_kwargs["region_name"] = self.options["region"]
        timeout = float(self.options.get("timeout", 60))
        retries = int(self.options.get("retries", 3))
        config: dict[str, Any] = {
            "connect_timeout": timeout,
            "read_timeout": timeout,
            "retries": {"max_attempts": retries + 1, "mode": "standard"},
            # No CRC32 header on uploads, no CRC check on downloads: uploads are checked by ETag (MD5)
            # and size, and some S3-compatible servers reject the newer checksum headers.
            "request_checksum_calculation": "when_required",
            "response_checksum_validation": "when_required",
            # pds builds every request itself; checking each one against the service model cost
            # about 2% of the mover's CPU on small files.
            "parameter_validation": False,
        }
        if self.options.get("path_style", bool(self.address)):
            config["s3"] = {"addressing_style": "path"}
        settings: dict[str, Any] = {
            **self._credentials(),
            "client_kwargs": client_kwargs,
            "config_kwargs": config,
            "default_block_size": int(self.options.get("part_size", DEFAULT_PART_SIZE)),
        }
        # One filesystem per distinct setting in a process, shared by every batch and thread: its
        # botocore client (about 0.1 s of CPU to create, most of it the service model and TLS
        # contexts) and its pooled connections are then made once, not once per batch of small
        # files. Shared, so it keeps no listings cache: a listing is always read from the server.
        key = json.dumps([os.getpid(), settings], sort_keys=True, default=str)
        with _filesystems_lock:
            filesystem = _filesystems.get(key)
            if filesystem is None:
                if len(_filesystems) >= _MAX_FILESYSTEMS:
                    _filesystems.clear()  # many hosts come and go (tests); the next calls reconnect
                filesystem = _DeadlineS3FileSystem(
                    **settings, skip_instance_cache=True, use_listings_cache=False, session=_botocore_session()
                )
                filesystem.retries = 1  # botocore repeats failed calls (above); s3fs repeating would multiply them
                # The client now, once: threads that first use a new filesystem together would
                # otherwise each create one (s3fs checks and sets it across an await).
                filesystem.connect()
                _filesystems[key] = filesystem
        return filesystem

    def check(self) -> None:
        super().check()
        if not self.directory.strip("/"):
            raise InvalidInput(f"host {self.name}: the directory must start with the bucket name")
        if bool(self.login) != bool(self.password.get_secret_value()):
            raise InvalidInput(f"host {self.name}: give both the access key (login) and the secret key (password)")

    def parallel_puts(self) -> int:
        return max(1, int(self.options.get("parallel_puts", 4)))

    def whole_put_limit(self) -> int:
        # Up to one part: a streamed upload of such a file holds it whole in memory too, then PUTs it.
        return int(self.options.get("part_size", DEFAULT_PART_SIZE))

    async def put_whole(
        self,
        fs: fsspec.AbstractFileSystem,
        path: str,
        data: bytes,
        *,
        temporary: str | None = None,
        replace_temporary: bool = False,
    ) -> tuple[int, str | None]:
        """One PutObject; its ETag is the MD5 of the object S3 stored whole (or not at all). No
        temporary name: an object is visible only once whole."""
        bucket, key, _ = fs.split_path(path)
        etag = None
        if self.options.get("signed_put", True):
            signed = SignedPut.of(fs)
            with contextlib.suppress(Exception):  # botocore sends it again below, and raises what it finds
                etag = await signed.put(bucket, key, data) if signed is not None else None
        if etag is None:
            result = await fs._call_s3("put_object", Bucket=bucket, Key=key, Body=data)
            etag = str(result.get("ETag", ""))
        etag = etag.strip('"')
        md5 = etag if etag and "-" not in etag and self.options.get("etag_is_md5", True) else None
        return len(data), md5

    def open_raw_stream(self, fs: fsspec.AbstractFileSystem, path: str) -> IO[bytes]:
        """One streamed GET for the whole object, instead of s3fs's ranged request per block."""
        bucket, key, _ = fs.split_path(path)
        response = sync(fs.loop, fs._call_s3, "get_object", Bucket=bucket, Key=key)
        stream: IO[bytes] = _StreamedBody(fs.loop, response["Body"])  # type: ignore[assignment]
        return stream

    def confirmed_write(self, file: Any) -> tuple[int, str | None] | None:
        """A single-part PutObject answered with the object's ETag, its MD5: the size is what was
        sent (S3 stores the body whole or not at all) and the MD5 comes back without a HEAD."""
        result = getattr(file, "write_result", None)
        if not result or result.get("method") != "put_object":
            return None  # a multipart upload: ask for size and ETag afterwards
        etag = str(result.get("ETag", "")).strip('"')
        if not etag or "-" in etag:
            return None
        return int(file.tell()), etag if self.options.get("etag_is_md5", True) else None

    def remote_md5(self, fs: fsspec.AbstractFileSystem, path: str) -> str | None:
        if not self.options.get("etag_is_md5", True):
            return None
        etag = str(fs.info(path, refresh=True).get("ETag", "")).strip('"')
        return etag if etag and "-" not in etag else None  # multipart ETags are not MD5s

    def classify(self, exc: BaseException) -> TransferError:
        code = _error_code(exc) or _error_code(exc.__cause__ or exc.__context__)
        if code in _AUTH_CODES:
            return FailTransfer(f"host {self.name} refused the request ({code}): {exc}")
        if type(exc).__name__ in {"EndpointConnectionError", "ConnectTimeoutError"}:
            return FailOverToNextHost(f"cannot reach host {self.name}: {exc}")
        if type(exc).__name__ == "ReadTimeoutError":
            return RetryOnSameHost(f"host {self.name} did not answer in time: {exc}")
        return super().classify(exc)


def _error_code(exc: BaseException | None) -> str | None:
    """The S3 error code (`AccessDenied`, …) botocore attached to `exc`, if any."""
    response = getattr(exc, "response", None)
    if not isinstance(response, dict):
        return None
    code = response.get("Error", {}).get("Code")
    return str(code) if code else None
