"""The lean PutObject of small files (`blocks.s3_put`) against servers that check signatures.

moto accepts any signature, so the signing is checked by SeaweedFS configured with one identity (a
wrong signature is refused there) and, byte for byte, against botocore's own signer.
"""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import ReadOnlyCredentials
from pydantic import SecretStr

from blocks.s3 import S3Host
from blocks.s3_put import SignedPut, canonical_query
from catalog.errors import FailOverToNextHost, FailTransfer


@pytest.fixture(params=["seaweedfs", "moto"])
def server(request) -> Any:
    return request.getfixturevalue("seaweed" if request.param == "seaweedfs" else "s3_server")


def s3_host(server: Any, bucket: str, **changes: Any) -> S3Host:
    options = {"region": server.region, **changes.pop("options", {})}
    return S3Host(
        name="s3",
        address=server.endpoint_url,
        directory=bucket,
        login=server.access_key,
        password=SecretStr(changes.pop("secret", server.secret_key)),
        options=options,
        **changes,
    )


def put(host: S3Host, path: str, data: bytes) -> tuple[tuple[int, str | None], list[str]]:
    """`put_whole` on the host's filesystem; also the requests that went through botocore."""
    fs = host.filesystem()
    through_botocore: list[str] = []
    call_s3 = fs._call_s3

    async def counted(method: str, *args: Any, **kwargs: Any) -> Any:
        through_botocore.append(method)
        return await call_s3(method, *args, **kwargs)

    fs._call_s3 = counted
    try:
        return asyncio.run_coroutine_threadsafe(host.put_whole(fs, path, data), fs.loop).result(60), through_botocore
    finally:
        del fs._call_s3


def test_an_object_arrives_whole_with_its_md5_as_etag_without_botocore(server):
    bucket = f"b-{uuid.uuid4().hex[:12]}"
    server.create_bucket(bucket)
    data = bytes(range(256)) * 256
    key = "dir/a name with spaces+plus~tilde=é.bin"  # characters that URI-encoding must get right
    (size, md5), through_botocore = put(s3_host(server, bucket), f"{bucket}/{key}", data)
    assert (size, md5) == (len(data), hashlib.md5(data).hexdigest())
    assert through_botocore == []  # the signed PUT was accepted
    stored = server.client().get_object(Bucket=bucket, Key=key)
    assert stored["Body"].read() == data
    assert stored["ETag"].strip('"') == md5


def test_a_wrong_secret_is_refused_and_classified_as_before(seaweed):
    """SeaweedFS checks signatures: the signed PUT is refused, botocore's retry is too, and the error
    is the one botocore alone gives (SignatureDoesNotMatch → the transfer is stopped)."""
    bucket = f"b-{uuid.uuid4().hex[:12]}"
    seaweed.create_bucket(bucket)
    outcomes = []
    for signed_put in (True, False):
        host = s3_host(seaweed, bucket, secret="wrong-secret", options={"signed_put": signed_put})
        with pytest.raises(Exception) as raised:
            put(host, f"{bucket}/x.bin", b"x")
        classified = host.classify(raised.value)
        outcomes.append((type(raised.value).__name__, type(classified), str(classified)))
    assert outcomes[0] == outcomes[1]
    assert outcomes[0][1] is FailTransfer
    assert "SignatureDoesNotMatch" in outcomes[0][2]
    assert not seaweed.client().list_objects_v2(Bucket=bucket).get("Contents")


def test_a_missing_bucket_stops_the_transfer(s3_server):
    """On moto (SeaweedFS makes a missing bucket on upload for an administrator's key)."""
    host = s3_host(s3_server, "no-such-bucket-anywhere")
    with pytest.raises(Exception) as raised:
        put(host, "no-such-bucket-anywhere/x.bin", b"x")
    assert isinstance(host.classify(raised.value), FailTransfer)


def test_an_unreachable_host_fails_over(server):
    from tests.servers._common import free_port

    host = s3_host(server, "b", options={"retries": 0}).model_copy(
        update={"address": f"http://127.0.0.1:{free_port()}"}
    )
    with pytest.raises(Exception) as raised:
        put(host, "b/x.bin", b"x")
    assert isinstance(host.classify(raised.value), FailOverToNextHost)


class _Meta:
    region_name = "eu-west-3"
    endpoint_url = "https://s3.eu-west-3.amazonaws.com"


@pytest.mark.parametrize("token", [None, "session-token"])
@pytest.mark.parametrize(
    ("endpoint", "path_style"), [("https://s3.eu-west-3.amazonaws.com", False), ("http://127.0.0.1:9000/base", True)]
)
def test_the_signature_is_the_one_botocore_computes(token, endpoint, path_style):
    """The same request signed by botocore's S3 signer carries the same Authorization header."""
    client = type("Client", (), {"meta": _Meta()})()
    signed = SignedPut(client, None, None, endpoint, path_style)
    data = b"some bytes" * 100
    credentials = ReadOnlyCredentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", token, None)
    host, path = signed._url_parts("my-bucket", "a dir/f~x+y.bin")

    reference = AWSRequest("PUT", f"{endpoint.split('://')[0]}://{host}{path}", data=data)
    S3SigV4Auth(credentials, "s3", "eu-west-3").add_auth(reference)
    now = datetime.strptime(reference.headers["X-Amz-Date"], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)

    ours = signed.signed_headers(host, path, data, credentials, now)
    assert ours["authorization"] == reference.headers["Authorization"]
    assert ours["x-amz-content-sha256"] == hashlib.sha256(data).hexdigest()
    if not path_style:
        assert host == "my-bucket.s3.eu-west-3.amazonaws.com"
    else:
        assert (host, path) == ("127.0.0.1:9000", "/base/my-bucket/a%20dir/f~x%2By.bin")


@pytest.mark.parametrize(
    ("endpoint", "path_style"), [("https://s3.eu-west-3.amazonaws.com", False), ("http://127.0.0.1:9000/base", True)]
)
def test_a_listing_request_is_signed_as_botocore_signs_it(endpoint, path_style):
    """The GET of a ListObjectsV2 page (`blocks.s3_listing`): the query is signed as sent."""
    client = type("Client", (), {"meta": _Meta()})()
    signed = SignedPut(client, None, None, endpoint, path_style)
    credentials = ReadOnlyCredentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", None, None)
    query = {"list-type": "2", "prefix": "a dir/é+", "delimiter": "/", "continuation-token": "1/x+y="}
    host, path = signed._bucket_parts("my-bucket")

    url = f"{endpoint.split('://')[0]}://{host}{path}?{canonical_query(query)}"
    reference = AWSRequest("GET", url)
    reference.context["payload_signing_enabled"] = True  # botocore hashes the empty body, as pds does
    S3SigV4Auth(credentials, "s3", "eu-west-3").add_auth(reference)
    now = datetime.strptime(reference.headers["X-Amz-Date"], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)

    ours = signed.signed_headers(host, path, b"", credentials, now, method="GET", query=query)
    assert ours["authorization"] == reference.headers["Authorization"]
    assert (host, path) == (
        ("127.0.0.1:9000", "/base/my-bucket") if path_style else ("my-bucket.s3.eu-west-3.amazonaws.com", "/")
    )
