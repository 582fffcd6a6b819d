"""A lean PutObject for whole small objects: one SigV4-signed PUT on s3fs's own connection pool.

Through botocore, a PutObject of a 64 KiB file costs the mover about 1.4 ms of CPU, most of it not
the request but the machinery around it: event hooks, endpoint rules, request serialisation and
the signer rebuilding its keys. A batch of small files spends most of its time there. This module
signs the same request itself (AWS Signature Version 4, the signing key kept for the day) and sends
it on the client's own HTTP session, so the endpoint, TLS verification, CA bundle, proxies, timeouts
and connection pool are the ones s3fs configured, and connection failures come back as the same
botocore exceptions (`EndpointConnectionError`, `ConnectTimeoutError`, `ReadTimeoutError`).

Only the plain case goes this way: a success is answered here; anything else (an error answer, a
redirect to another region, a broken connection, anonymous access) is sent again through botocore,
whose retries, redirects and error parsing then decide, so failures are classified exactly as before.
A PUT of a whole object is idempotent: sending it twice stores it once.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlsplit

from botocore.awsrequest import AWSPreparedRequest

_ALGORITHM = "AWS4-HMAC-SHA256"
#: Bucket names that can be a host name label (virtual-hosted addressing); others go path-style.
_DNS_BUCKET = re.compile(r"^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$")


def _is_ip(host: str | None) -> bool:
    try:
        ipaddress.ip_address(host or "")
    except ValueError:
        return False
    return True


def canonical_query(query: Mapping[str, str]) -> str:
    """A query string as SigV4 signs it (and as it is then sent): names and values percent-encoded
    except for unreserved characters, sorted by name."""
    return "&".join(f"{quote(name, safe='-_.~')}={quote(value, safe='-_.~')}" for name, value in sorted(query.items()))


def _hmac(key: bytes, message: str) -> bytes:
    return hmac.new(key, message.encode(), hashlib.sha256).digest()


class SignedPut:
    """PutObject requests signed here and sent on an aiobotocore client's HTTP session.

    Made on the client's event loop by `for_client`, which returns None when the client is not one
    this class can sign for (no credentials, no endpoint, an unexpected aiobotocore), so callers use
    botocore instead.
    """

    def __init__(self, client: Any, credentials: Any, http_session: Any, endpoint: str, path_style: bool) -> None:
        self._client, self._credentials, self._http = client, credentials, http_session
        parts = urlsplit(endpoint)
        self._scheme, self._netloc = parts.scheme, parts.netloc
        # The Host header as signed: without a port that is the scheme's default (as HTTP clients send it).
        default_port = {"http": ":80", "https": ":443"}[self._scheme]
        self._host = self._netloc.removesuffix(default_port)
        self._base_path = parts.path.rstrip("/")
        self._path_style = path_style
        self._region = client.meta.region_name or "us-east-1"
        self._signing_key: tuple[tuple[str, str], bytes] | None = None

    @classmethod
    def of(cls, fs: Any) -> SignedPut | None:
        """The signer of an s3fs filesystem's current client, made once per client (None: a client
        it does not sign for). PutObject and the listing share it."""
        client = fs.s3
        if getattr(fs, "_pds_signer_client", None) is not client:
            fs._pds_signer = cls.for_client(client)
            fs._pds_signer_client = client
        signed: SignedPut | None = fs._pds_signer
        return signed

    @classmethod
    def for_client(cls, client: Any) -> SignedPut | None:
        signer = getattr(client, "_request_signer", None)
        credentials = getattr(signer, "_credentials", None)
        http_session = getattr(getattr(client, "_endpoint", None), "http_session", None)
        endpoint = getattr(client.meta, "endpoint_url", None)
        if credentials is None or http_session is None or not endpoint:
            return None
        if getattr(signer, "signature_version", "s3v4") not in ("s3v4", "v4"):
            return None
        if urlsplit(endpoint).scheme not in ("http", "https"):
            return None
        s3_config = getattr(client.meta.config, "s3", None) or {}
        return cls(client, credentials, http_session, endpoint, s3_config.get("addressing_style") == "path")

    def _url_parts(self, bucket: str, key: str) -> tuple[str, str]:
        """(host, path) of the object: the bucket in the host name where the server allows it."""
        quoted_key = quote(key, safe="/~")
        if not self._path_style and _DNS_BUCKET.match(bucket) and not _is_ip(urlsplit("//" + self._host).hostname):
            return f"{bucket}.{self._host}", f"{self._base_path}/{quoted_key}"
        return self._host, f"{self._base_path}/{quote(bucket, safe='~')}/{quoted_key}"

    def _bucket_parts(self, bucket: str) -> tuple[str, str]:
        """(host, path) of the bucket itself, as bucket operations (ListObjectsV2) address it."""
        if not self._path_style and _DNS_BUCKET.match(bucket) and not _is_ip(urlsplit("//" + self._host).hostname):
            return f"{bucket}.{self._host}", f"{self._base_path}/"
        return self._host, f"{self._base_path}/{quote(bucket, safe='~')}"

    def _key_for(self, secret: str, day: str) -> bytes:
        """The signing key of a day: four HMACs, made once a day per secret instead of per request."""
        if self._signing_key is None or self._signing_key[0] != (secret, day):
            key = _hmac(("AWS4" + secret).encode(), day)
            for part in (self._region, "s3", "aws4_request"):
                key = _hmac(key, part)
            self._signing_key = ((secret, day), key)
        return self._signing_key[1]

    def signed_headers(
        self,
        host: str,
        path: str,
        data: bytes,
        credentials: Any,
        now: datetime,
        *,
        method: str = "PUT",
        query: Mapping[str, str] | None = None,
    ) -> dict[str, str]:
        """The headers of a `method` request (a PUT of `data` by default) at `path` on `host` with
        `query`, signed with `credentials` at `now`."""
        amz_date, day = now.strftime("%Y%m%dT%H%M%SZ"), now.strftime("%Y%m%d")
        payload_hash = hashlib.sha256(data).hexdigest()
        headers = {"host": host, "x-amz-content-sha256": payload_hash, "x-amz-date": amz_date}
        if credentials.token:
            headers["x-amz-security-token"] = credentials.token
        names = sorted(headers)
        canonical = "\n".join(
            [
                method,
                path,
                canonical_query(query or {}),
                *(f"{name}:{headers[name].strip()}" for name in names),
                "",
                ";".join(names),
                payload_hash,
            ]
        )
        scope = f"{day}/{self._region}/s3/aws4_request"
        to_sign = f"{_ALGORITHM}\n{amz_date}\n{scope}\n{hashlib.sha256(canonical.encode()).hexdigest()}"
        signature = hmac.new(self._key_for(credentials.secret_key, day), to_sign.encode(), hashlib.sha256).hexdigest()
        headers["authorization"] = (
            f"{_ALGORITHM} Credential={credentials.access_key}/{scope}, "
            f"SignedHeaders={';'.join(names)}, Signature={signature}"
        )
        if data or method == "PUT":
            headers["content-length"] = str(len(data))
        return headers

    async def put(self, bucket: str, key: str, data: bytes) -> str | None:
        """PUT `data` as `bucket/key`; the ETag of the stored object, or None when the server did not
        answer 200 (the caller then sends it through botocore). Connection errors are raised."""
        credentials = await self._credentials.get_frozen_credentials()
        if not credentials.access_key or not credentials.secret_key:
            return None
        host, path = self._url_parts(bucket, key)
        headers = self.signed_headers(host, path, data, credentials, datetime.now(UTC))
        request = AWSPreparedRequest("PUT", f"{self._scheme}://{host}{path}", headers, data, stream_output=False)
        response = await self._http.send(request)
        if response.status_code != 200:
            return None
        return str(response.headers.get("etag", ""))

    async def get_bucket(self, bucket: str, query: Mapping[str, str]) -> bytes | None:
        """GET `bucket` with `query` (a bucket operation such as ListObjectsV2); the body of a 200
        answer, or None for any other answer (the caller then asks botocore). Connection errors are
        raised."""
        credentials = await self._credentials.get_frozen_credentials()
        if not credentials.access_key or not credentials.secret_key:
            return None
        host, path = self._bucket_parts(bucket)
        headers = self.signed_headers(host, path, b"", credentials, datetime.now(UTC), method="GET", query=query)
        url = f"{self._scheme}://{host}{path}?{canonical_query(query)}"
        request = AWSPreparedRequest("GET", url, headers, None, stream_output=False)
        response = await self._http.send(request)
        if response.status_code != 200:
            return None
        body: bytes = await response.content
        return body
