"""The lean S3 listing (`blocks.s3_listing`): the signed GET and its parser read what botocore reads.

Checked on SeaweedFS configured with one identity (it refuses a wrong signature, so the signing is
checked too) and on moto.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest

from blocks.listing import iter_entries
from blocks.s3_listing import ObjectPage, list_objects_page, parse_page
from tests.blocks.test_s3_put import s3_host

#: Keys whose encoding the request and the parser must get right: spaces, plus signs, a literal
#: percent sign, XML's special characters, non-ASCII, and "sub-directories" with such names.
KEYS = [
    "a b.bin",
    "x+y.bin",
    "per%25cent.bin",
    "tags<&>'\".bin",
    "été~.bin",
    "plain-000.bin",
    "plain-001.bin",
    "sub/inner.bin",
    "sub two/inner.bin",
]


@pytest.fixture(params=["seaweedfs", "moto"])
def server(request) -> Any:
    return request.getfixturevalue("seaweed" if request.param == "seaweedfs" else "s3_server")


def pages(fs: Any, bucket: str, prefix: str, *, lean: bool) -> tuple[list[ObjectPage], list[str]]:
    """Every page of the listing, 2 keys a page; also the requests that went through botocore."""
    through_botocore: list[str] = []
    call_s3 = fs._call_s3

    async def counted(method: str, *args: Any, **kwargs: Any) -> Any:
        through_botocore.append(method)
        return await call_s3(method, *args, **kwargs)

    async def every_page() -> list[ObjectPage]:
        found, token = [], None
        while True:
            page = await list_objects_page(fs, bucket, prefix, 2, token, lean=lean)
            found.append(page)
            if (token := page.next_token) is None:
                return found

    fs._call_s3 = counted
    try:
        return asyncio.run_coroutine_threadsafe(every_page(), fs.loop).result(60), through_botocore
    finally:
        del fs._call_s3


def test_the_lean_listing_reads_what_botocore_reads(server):
    bucket = f"b-{uuid.uuid4().hex[:12]}"
    server.create_bucket(bucket)
    client = server.client()
    for i, key in enumerate(KEYS):
        client.put_object(Bucket=bucket, Key=f"dir/{key}", Body=b"x" * i)
    fs = s3_host(server, bucket).filesystem()

    lean, lean_through_botocore = pages(fs, bucket, "dir/", lean=True)
    reference, _ = pages(fs, bucket, "dir/", lean=False)

    assert lean_through_botocore == []  # every page came from the signed GET
    assert [(p.prefixes, p.objects) for p in lean] == [(p.prefixes, p.objects) for p in reference]
    assert len(lean) >= 4  # continuation tokens were followed
    objects = {key: (size, modified) for page in lean for key, size, modified in page.objects}
    assert sorted(objects) == sorted(f"dir/{k}" for k in KEYS if "/" not in k)
    assert objects["dir/x+y.bin"][0] == KEYS.index("x+y.bin")
    assert all(modified is not None and modified.utcoffset() is not None for _, modified in objects.values())
    assert sorted(p for page in lean for p in page.prefixes) == ["dir/sub two/", "dir/sub/"]


def test_a_missing_bucket_raises_file_not_found(server):
    fs = s3_host(server, "no-such-bucket-here").filesystem()
    with pytest.raises(FileNotFoundError):
        next(iter(iter_entries(s3_host(server, "no-such-bucket-here"), fs, "no-such-bucket-here/dir")))


def test_a_wrong_secret_is_refused_as_botocore_refuses_it(seaweed):
    bucket = f"b-{uuid.uuid4().hex[:12]}"
    seaweed.create_bucket(bucket)
    seaweed.client().put_object(Bucket=bucket, Key="dir/x.bin", Body=b"x")
    host = s3_host(seaweed, bucket, secret="wrong-secret")
    fs = host.filesystem()
    raised = []
    for lean in (True, False):
        with pytest.raises(Exception) as error:
            pages(fs, bucket, "dir/", lean=lean)
        raised.append((type(error.value), str(error.value)))
    assert raised[0] == raised[1]
    assert raised[0][0] is PermissionError


def test_a_body_that_is_no_complete_listing_is_left_to_botocore():
    """S3 may answer 200 with an error document; a connection may cut a body short."""
    listing = (
        b'<?xml version="1.0" encoding="UTF-8"?>'
        b'<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><IsTruncated>false</IsTruncated>'
        b"<Contents><Key>k</Key><LastModified>2026-12-07T07:10:00.000Z</LastModified><Size>3</Size></Contents>"
        b"</ListBucketResult>"
    )
    page = parse_page(listing)
    assert page is not None and page.objects[0][:2] == ("k", 3) and page.next_token is None
    assert page.objects[0][2] is not None and page.objects[0][2].isoformat() == "2026-12-07T07:10:00+00:00"
    assert parse_page(listing[:-30]) is None
    assert parse_page(b"<Error><Code>InternalError</Code><Message>try again</Message></Error>") is None
    truncated_without_token = listing.replace(b"<IsTruncated>false", b"<IsTruncated>true")
    assert parse_page(truncated_without_token) is None
