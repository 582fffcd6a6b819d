"""AWS Signature Version 4 for the portal's S3 endpoint: header signatures and presigned URLs.

The access key id is the data user's login and the secret is its S3 secret access key (kept encrypted,
`catalog.data_users`). Only the request's signature is checked: payloads sent as `aws-chunked` carry
per-chunk signatures that are not verified (TLS protects the body in transit); a hex
`x-amz-content-sha256` is verified against the body by the caller.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qsl, quote

ALGORITHM = "AWS4-HMAC-SHA256"
MAX_SKEW = timedelta(minutes=15)


class SignatureError(Exception):
    """The request is not signed, or not signed right; `code` is the S3 error code to answer."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class SignedRequest:
    access_key: str
    payload_hash: str
    """`UNSIGNED-PAYLOAD`, a `STREAMING-…` marker, or the hex SHA-256 the body must have."""


def _hmac(key: bytes, text: str) -> bytes:
    return hmac.new(key, text.encode(), hashlib.sha256).digest()


def signing_key(secret: str, date: str, region: str, service: str) -> bytes:
    return _hmac(_hmac(_hmac(_hmac(("AWS4" + secret).encode(), date), region), service), "aws4_request")


def _canonical_query(query: str, *, drop_signature: bool) -> str:
    pairs = parse_qsl(query, keep_blank_values=True)
    if drop_signature:
        pairs = [(k, v) for k, v in pairs if k != "X-Amz-Signature"]
    encoded = sorted((quote(k, safe="-_.~"), quote(v, safe="-_.~")) for k, v in pairs)
    return "&".join(f"{k}={v}" for k, v in encoded)


def _parse_authorization(header: str) -> dict[str, str]:
    algorithm, _, rest = header.partition(" ")
    if algorithm != ALGORITHM:
        raise SignatureError("InvalidRequest", "only AWS4-HMAC-SHA256 (Signature Version 4) is supported")
    fields = {}
    for part in rest.split(","):
        key, _, value = part.strip().partition("=")
        fields[key] = value
    if not {"Credential", "SignedHeaders", "Signature"} <= fields.keys():
        raise SignatureError("AuthorizationHeaderMalformed", "the Authorization header is incomplete")
    return fields


def verify(
    method: str,
    raw_path: str,
    query: str,
    headers: Mapping[str, str],
    secret_of: Callable[[str], str | None],
    now: datetime | None = None,
) -> SignedRequest:
    """Check a request's SigV4 signature (header or presigned URL); return who signed it."""
    now = now or datetime.now(UTC)
    params = dict(parse_qsl(query, keep_blank_values=True))
    presigned = "X-Amz-Signature" in params
    if presigned:
        if params.get("X-Amz-Algorithm") != ALGORITHM:
            raise SignatureError("InvalidRequest", "only AWS4-HMAC-SHA256 presigned URLs are supported")
        credential, signed_headers = params.get("X-Amz-Credential", ""), params.get("X-Amz-SignedHeaders", "")
        signature, amz_date = params["X-Amz-Signature"], params.get("X-Amz-Date", "")
        payload_hash = "UNSIGNED-PAYLOAD"
        try:
            expires = int(params.get("X-Amz-Expires", "0"))
            signed_at = datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
        except ValueError:
            raise SignatureError("AuthorizationQueryParametersError", "bad X-Amz-Date or X-Amz-Expires") from None
        if now > signed_at + timedelta(seconds=expires):
            raise SignatureError("AccessDenied", "Request has expired")
    else:
        header = headers.get("authorization", "")
        if not header:
            raise SignatureError("AccessDenied", "anonymous access is not allowed: sign requests with SigV4")
        fields = _parse_authorization(header)
        credential, signed_headers, signature = fields["Credential"], fields["SignedHeaders"], fields["Signature"]
        amz_date = headers.get("x-amz-date", "")
        payload_hash = headers.get("x-amz-content-sha256", "UNSIGNED-PAYLOAD")
        try:
            signed_at = datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
        except ValueError:
            raise SignatureError("AccessDenied", "x-amz-date is missing or malformed") from None
        if abs(now - signed_at) > MAX_SKEW:
            raise SignatureError("RequestTimeTooSkewed", "the request time is too far from the server's")
    try:
        access_key, date, region, service, terminal = credential.split("/")
    except ValueError:
        raise SignatureError("AuthorizationHeaderMalformed", f"malformed credential {credential!r}") from None
    if terminal != "aws4_request":
        raise SignatureError("AuthorizationHeaderMalformed", "the credential scope must end in aws4_request")
    secret = secret_of(access_key)
    if secret is None:
        raise SignatureError("InvalidAccessKeyId", f"no S3 access key {access_key!r}")
    names = signed_headers.split(";")
    canonical_headers = "".join(f"{n}:{' '.join(headers.get(n, '').split())}\n" for n in names)
    canonical = "\n".join(
        [
            method,
            raw_path,
            _canonical_query(query, drop_signature=presigned),
            canonical_headers,
            signed_headers,
            payload_hash,
        ]
    )
    scope = f"{date}/{region}/{service}/aws4_request"
    to_sign = "\n".join([ALGORITHM, amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()])
    expected = hmac.new(signing_key(secret, date, region, service), to_sign.encode(), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, signature):
        raise SignatureError(
            "SignatureDoesNotMatch", "the request signature does not match (check the secret access key)"
        )
    return SignedRequest(access_key, payload_hash)


async def decode_aws_chunked(body: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """The payload of an `aws-chunked` body: `<hex size>[;chunk-signature=…]\\r\\n<data>\\r\\n` … `0…`, trailers."""
    buffer = bytearray()
    source = body.__aiter__()

    async def fill(need: int) -> bool:
        while len(buffer) < need:
            try:
                buffer.extend(await source.__anext__())
            except StopAsyncIteration:
                return False
        return True

    while True:
        while b"\r\n" not in buffer:
            if not await fill(len(buffer) + 1):
                raise ValueError("aws-chunked body ended inside a chunk header")
        line, _, rest = bytes(buffer).partition(b"\r\n")
        size = int(line.split(b";")[0], 16)
        del buffer[: len(line) + 2]
        if size == 0:
            return  # Trailers (checksums) follow; the store computes its own.
        if not await fill(size + 2):
            raise ValueError("aws-chunked body ended inside a chunk")
        yield bytes(buffer[:size])
        del buffer[: size + 2]
        del rest
