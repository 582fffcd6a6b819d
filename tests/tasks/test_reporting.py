"""Which URL a Done transfer's notification gives a WIS2 subscriber to download from, per kind of site."""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import UTC, datetime

import pytest

from catalog.models import DataFile, DataTransfer, Destination, Host
from catalog.settings import Settings
from tasks.reporting import notification

CONTENT = b"BUFR" + bytes(200)
SETTINGS = Settings(mqtt_url="mqtt://broker.example.org", public_url="https://pds.example.org")
PORTAL = "https://pds.example.org/portal/ms/obs/x.bufr"


def done(host: Host, remote_path: str, *, compression: str | None = None, sent: bytes = CONTENT) -> dict:
    data_file = DataFile(
        id=1,
        name="x.bufr",
        size=len(CONTENT),
        md5=hashlib.md5(CONTENT).hexdigest(),
        sha512=hashlib.sha512(CONTENT).hexdigest(),
    )
    transfer = DataTransfer(
        id=7, data_file_id=1, destination_name="ms", target="obs/x.bufr", status="Done",
        bytes_sent=len(sent), sent_md5=hashlib.md5(sent).hexdigest(), compression=compression,
        finished_at=datetime(2026, 3, 20, 5, tzinfo=UTC),
    )  # fmt: skip
    destination = Destination(name="ms", mqtt_topic="t/$name", mqtt_payload="wis2")
    rendered = notification(SETTINGS, transfer, data_file, destination, host, remote_path)
    assert rendered is not None
    return json.loads(rendered.body)


@pytest.mark.parametrize(
    ("host", "remote_path", "alternate"),
    [
        (Host(name="s", protocol="sftp", address="sftp.example.org"), "/in/obs/x.bufr", "sftp://sftp.example.org/in/obs/x.bufr"),
        (Host(name="b", protocol="s3", address="s3.example.org"), "bucket/obs/x.bufr", "s3://bucket/obs/x.bufr"),
        (Host(name="f", protocol="file", address="/srv"), "/srv/obs/x.bufr", None),
    ],
)  # fmt: skip
def test_a_site_that_does_not_serve_http_is_downloaded_from_the_portal(host, remote_path, alternate):
    message = done(host, remote_path)
    canonical = {"rel": "canonical", "href": PORTAL, "type": "application/octet-stream", "length": len(CONTENT)}
    assert message["links"] == [canonical] + ([{"rel": "alternate", "href": alternate}] if alternate else [])


def test_an_http_site_holding_the_original_is_downloaded_from_the_site():
    host = Host(name="w", protocol="https", address="https://www.example.org/data")
    (link,) = done(host, "obs/x.bufr")["links"]
    assert (link["rel"], link["href"]) == ("canonical", "https://www.example.org/data/obs/x.bufr")


def test_a_compressed_copy_on_an_http_site_is_not_what_the_integrity_covers_so_the_portal_is_canonical():
    host = Host(name="w", protocol="https", address="https://www.example.org/data")
    message = done(host, "obs/x.bufr.gz", compression="gzip", sent=b"smaller")
    assert message["links"][0] == {
        "rel": "canonical", "href": PORTAL, "type": "application/octet-stream", "length": len(CONTENT),
    }  # fmt: skip
    assert message["links"][1] == {"rel": "alternate", "href": "https://www.example.org/data/obs/x.bufr.gz"}
    integrity = message["properties"]["integrity"]  # of the original, which the portal serves
    assert integrity == {"method": "sha512", "value": base64.b64encode(hashlib.sha512(CONTENT).digest()).decode()}
