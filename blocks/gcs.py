"""Google Cloud Storage (and GCS emulators) through gcsfs.

`address` is the endpoint URL (empty for Google); `directory` starts with the bucket
(`bucket/prefix/$destination`). Credentials: `options.secret_service_account_json`, the JSON text of
a service account key; or `options.token`, anything gcsfs takes as a token ("anon" for emulators and
public buckets, "google_default", "cloud", or the path of a credentials file); with neither, gcsfs
finds the default credentials of the machine. Options: `project`, `part_size` (bytes per resumable
upload chunk, a multiple of 256 KiB; memory per upload is about one chunk), `retries` (times a failed
request is repeated, 3 by default; gcsfs's own 6 take half a minute to give up on an unreachable host),
`timeout` (seconds to wait for an answer, 60).

Set `GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT=false` in the environment of every process that uses this
block before gcsfs is imported: otherwise gcsfs asks each bucket for its hierarchical-namespace
layout, which emulators do not serve, and every call waits out a 60 s timeout.
"""

from __future__ import annotations

import base64
import json
import os
from functools import cache
from typing import Any, ClassVar

# Before gcsfs is imported (it chooses its filesystem class then): see the module docstring.
os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")

import fsspec  # noqa: E402
from gcsfs import GCSFileSystem  # noqa: E402
from gcsfs.retry import retry_request  # noqa: E402

from blocks.base import HostBlock
from catalog.errors import FailOverToNextHost, FailTransfer, InvalidInput, TransferError

DEFAULT_PART_SIZE = 16 * 1024 * 1024
DEFAULT_RETRIES = 3
_CONNECT_ERRORS = ("ClientConnectorError", "ClientConnectorDNSError", "ServerTimeoutError", "ConnectionTimeoutError")


_UNWRAPPED_REQUEST = GCSFileSystem._request.__wrapped__


@cache
def _request_retrying(attempts: int) -> Any:
    return retry_request(retries=attempts)(_UNWRAPPED_REQUEST)


class _GcsFileSystem(GCSFileSystem):  # type: ignore[misc]
    """gcsfs with the number of attempts per request set per instance (gcsfs fixes it per class)."""

    def __init__(self, *args: Any, retries: int = DEFAULT_RETRIES, **kwargs: Any) -> None:
        self._attempts = max(1, retries + 1)
        super().__init__(*args, **kwargs)

    async def _request(self, *args: Any, **kwargs: Any) -> Any:
        return await _request_retrying(self._attempts)(self, *args, **kwargs)


class GcsHost(HostBlock):
    """Objects appear only when their upload completes, so no temporary name is needed."""

    _block_type_name = "pds GCS Host"
    protocol: ClassVar[str] = "gcs"
    supports_server_side_copy: ClassVar[bool] = True
    has_directories: ClassVar[bool] = False
    reports_md5: ClassVar[bool] = True  # GCS keeps the MD5 of every object not made by `compose`

    def _token(self) -> Any:
        account_json = self.options.get("secret_service_account_json")
        if account_json:
            return json.loads(account_json) if isinstance(account_json, str) else dict(account_json)
        return self.options.get("token")

    def filesystem(self) -> fsspec.AbstractFileSystem:
        kwargs: dict[str, Any] = {}
        if self.address:
            kwargs["endpoint_url"] = self.address if "://" in self.address else f"https://{self.address}"
        if self.options.get("project"):
            kwargs["project"] = self.options["project"]
        return _GcsFileSystem(
            token=self._token(),
            retries=int(self.options.get("retries", DEFAULT_RETRIES)),
            block_size=int(self.options.get("part_size", DEFAULT_PART_SIZE)),
            requests_timeout=float(self.options.get("timeout", 60)),
            skip_instance_cache=True,
            **kwargs,
        )

    def check(self) -> None:
        super().check()
        if not self.directory.strip("/"):
            raise InvalidInput(f"host {self.name}: the directory must start with the bucket name")
        account_json = self.options.get("secret_service_account_json")
        if account_json and isinstance(account_json, str):
            try:
                info = json.loads(account_json)
            except ValueError as exc:
                raise InvalidInput(f"host {self.name}: secret_service_account_json is not JSON ({exc})") from None
            if not isinstance(info, dict) or info.get("type") != "service_account":
                raise InvalidInput(f"host {self.name}: secret_service_account_json is not a service account key")
        if account_json and self.options.get("token"):
            raise InvalidInput(f"host {self.name}: give either secret_service_account_json or token, not both")

    def remote_md5(self, fs: fsspec.AbstractFileSystem, path: str) -> str | None:
        encoded = fs.info(path, refresh=True).get("md5Hash")
        return base64.b64decode(encoded).hex() if encoded else None

    def classify(self, exc: BaseException) -> TransferError:
        if isinstance(exc, TransferError):
            return exc
        from gcsfs.retry import HttpError

        chain: list[BaseException] = []
        current: BaseException | None = exc
        while current is not None and current not in chain:
            chain.append(current)
            current = current.__cause__ or current.__context__
        bucket = self.directory.strip("/").split("/", 1)[0]
        for error in chain:
            message = f"{type(error).__name__}: {error}".replace("\n", " ")
            code = getattr(error, "code", None) if isinstance(error, HttpError) else None
            if code in {401, 403} or (isinstance(error, OSError) and str(error).startswith("Forbidden")):
                return FailTransfer(f"host {self.name} refused the request ({code or 403}): {message}")
            if code == 404 or (isinstance(error, FileNotFoundError) and _names_bucket(error, bucket)):
                return FailTransfer(f"host {self.name} has no bucket {bucket}: {message}")
            if type(error).__name__ in _CONNECT_ERRORS:
                return FailOverToNextHost(f"cannot reach host {self.name}: {message}")
        return super().classify(exc)


def _names_bucket(error: FileNotFoundError, bucket: str) -> bool:
    """Whether gcsfs's 404 is about the bucket (`b/BUCKET/o...` upload URL) rather than an object."""
    text = str(error)
    return f"/b/{bucket}/o" in text and "/o/" not in text.split(f"/b/{bucket}", 1)[1]
