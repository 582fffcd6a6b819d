"""HTTP hosts that take uploads by POST — the raw bytes, or a multipart form as a browser sends it —
against a real web application that wants a bearer token and a site header."""

from __future__ import annotations

import hashlib
import json
import os
import uuid

import pytest

from blocks.registry import block_for
from catalog.errors import FailTransfer, InvalidInput
from catalog.models import Host
from tasks.transfer import send_data_file
from tests.blocks.test_contract import delivery


def post_host(server, upload: str, **options) -> Host:
    return Host(
        name=f"post-{upload}",
        protocol="http",
        address=server.base_url,
        directory=f"/{uuid.uuid4().hex}",
        options={
            "upload": upload,
            "webdav": False,
            "secret_bearer_token": server.token,
            "headers": {"X-Upload-Key": server.key},
            **options,
        },
    )


@pytest.mark.parametrize("upload", ["post", "form"])
def test_a_file_posted_arrives_whole(upload_server, store, upload):
    host = post_host(upload_server, upload)
    data = os.urandom(6 * 1024 * 1024 + 7)  # several chunks, and a boundary-sized tail to get right
    d = delivery(store, host, data, "in/forecast.grib")
    sent = send_data_file(store, d)
    assert sent.bytes == len(data)
    landed = upload_server.data_dir / host.directory.lstrip("/") / "in" / "forecast.grib"
    assert hashlib.md5(landed.read_bytes()).hexdigest() == hashlib.md5(data).hexdigest()
    assert not block_for(host).supports_rename  # a POST writes the final name directly


def test_a_form_carries_the_fields_the_site_asks_for(upload_server, store):
    host = post_host(upload_server, "form", form_field="upload", form_fields={"folder": "{directory}", "note": "pds"})
    d = delivery(store, host, b"grib" * 100, "day1/x.grib")
    send_data_file(store, d)
    directory = upload_server.data_dir / host.directory.lstrip("/") / "day1"
    assert (directory / "x.grib").read_bytes() == b"grib" * 100
    assert json.loads((directory / ".form.json").read_text()) == {
        "folder": f"{host.directory.strip('/')}/day1",
        "note": "pds",
    }


def test_a_form_can_go_to_a_fixed_upload_url(upload_server, store):
    drop = f"drop-{uuid.uuid4().hex}"
    host = post_host(upload_server, "form", form_url=f"{upload_server.base_url}/{drop}/")
    assert not block_for(host).reads_back  # the site files it: only its answer can be checked
    d = delivery(store, host, b"abc", "x.bin")
    assert send_data_file(store, d).bytes == 3
    assert (upload_server.data_dir / drop / "x.bin").read_bytes() == b"abc"


@pytest.mark.parametrize("missing", ["secret_bearer_token", "headers"])
def test_without_the_token_or_header_the_site_refuses_and_the_transfer_stops(upload_server, store, missing):
    host = post_host(upload_server, "post")
    host.options = {k: v for k, v in host.options.items() if k != missing}
    d = delivery(store, host, b"x", "x.bin")
    with pytest.raises(FailTransfer, match="401"):
        send_data_file(store, d)


def test_an_unknown_upload_method_is_refused_when_the_host_is_created(upload_server):
    with pytest.raises(InvalidInput, match="options.upload"):
        block_for(post_host(upload_server, "patch")).check()
    with pytest.raises(InvalidInput, match="form_url"):
        block_for(post_host(upload_server, "form", form_url="ftp://elsewhere/")).check()
