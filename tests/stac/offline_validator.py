"""Run `stac-api-validator` with no internet: JSON schemas come from the copies pystac ships.

The validator (through stac-validator and stac-check) fetches schemas with requests and urllib. Both
are patched here: a schema URL is answered from pystac's files by its `$id`; any other address off
this machine is refused, so a schema that is not shipped shows up as a failure, never as traffic.

    python -m tests.stac.offline_validator --root-url http://127.0.0.1:PORT/stac/ --conformance core ...
"""

from __future__ import annotations

import io
import json
import sys
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

import pystac.validation
import requests
import requests.adapters

LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}


def shipped_schemas() -> dict[str, bytes]:
    root = Path(pystac.validation.__file__).parent / "jsonschemas"
    schemas = {}
    for path in root.rglob("*.json"):
        content = path.read_bytes()
        schema_id = json.loads(content).get("$id", "").rstrip("#")
        if schema_id:
            schemas[schema_id] = content
    # common.json declares a mistyped $id ("…/commonjson"); the item schema refers to it by file name
    for schema_id, content in list(schemas.items()):
        if schema_id.endswith("/commonjson"):
            schemas[schema_id[: -len("json")] + ".json"] = content
    return schemas


SCHEMAS = shipped_schemas()


def _local(url: str) -> bool:
    return (urlparse(url).hostname or "") in LOCAL_HOSTS


def _schema(url: str) -> bytes:
    key = url.split("#", 1)[0].rstrip("#")
    if key not in SCHEMAS:
        raise requests.ConnectionError(f"offline: no local copy of {url}")
    return SCHEMAS[key]


_send = requests.adapters.HTTPAdapter.send


def send(self, request, *args, **kwargs):  # type: ignore[no-untyped-def]
    if _local(request.url):
        return _send(self, request, *args, **kwargs)
    response = requests.Response()
    response.status_code, response.url, response.request = 200, request.url, request
    response._content = _schema(request.url)
    response.headers["Content-Type"] = "application/json"
    response.encoding = "utf-8"
    return response


_urlopen = urllib.request.urlopen


def urlopen(url, *args, **kwargs):  # type: ignore[no-untyped-def]
    target = url.full_url if isinstance(url, urllib.request.Request) else url
    if _local(target):
        return _urlopen(url, *args, **kwargs)
    try:
        body = _schema(target)
    except requests.ConnectionError as exc:
        raise OSError(str(exc)) from exc
    return io.BytesIO(body)


def main() -> None:
    requests.adapters.HTTPAdapter.send = send  # type: ignore[method-assign]
    urllib.request.urlopen = urlopen  # type: ignore[assignment]
    import stac_validator.utilities

    stac_validator.utilities.urlopen = urlopen  # imported by name there
    from stac_api_validator.__main__ import main as validator

    sys.exit(validator())


if __name__ == "__main__":
    main()
