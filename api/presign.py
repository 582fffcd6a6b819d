"""SigV4-presigned GET URLs for assets in protected object storage.

The asset's upstream host is an `s3` Host of the transfer layer: its address is the endpoint (empty
for AWS), login and password the access and secret keys, `options.region` the region.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any
from urllib.parse import urlsplit

import boto3
from botocore.config import Config

from catalog.models import Host
from catalog.sealing import unseal


@lru_cache(maxsize=64)
def _client(endpoint: str, region: str, key: str, secret: str, path_style: bool) -> Any:
    config = Config(signature_version="s3v4", s3={"addressing_style": "path" if path_style else "auto"})
    return boto3.client(
        "s3",
        endpoint_url=endpoint or None,
        region_name=region or None,
        aws_access_key_id=key or None,
        aws_secret_access_key=secret or None,
        config=config,
    )


def presigned_url(href: str, host: Host | None, seconds: int) -> str:
    """`s3://bucket/key` (or `bucket/key` on the host) as a URL valid for `seconds`."""
    if host is None or host.protocol != "s3":
        raise ValueError(f"presigning {href!r} needs an s3 upstream host with credentials")
    url = urlsplit(href)
    bucket, _, key = (url.netloc + url.path if url.scheme == "s3" else href.lstrip("/")).partition("/")
    if not bucket or not key:
        raise ValueError(f"{href!r} names no bucket and key")
    options = host.options or {}
    client = _client(
        host.address,
        str(options.get("region", "")),
        host.login,
        unseal(host.password, host=host.name),
        bool(options.get("path_style", bool(host.address))),
    )
    return str(client.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=seconds))
