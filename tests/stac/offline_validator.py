"""Run `stac-api-validator` and `stac-validator` with no internet: JSON schemas come from local copies.

The validator (through stac-validator and stac-check) fetches schemas with requests and urllib. Both
are patched here: a schema URL is answered from a local copy by its `$id`, either one pystac ships
(the STAC 1.1.0 core and GeoJSON schemas) or one vendored, unmodified, under `schemas/` (the STAC
extensions pds declares, the STAC 1.0.0 core schemas and the PROJJSON schema they refer to: see
`schemas/README.md`). Any other address off this machine is refused, so a schema without a local copy
shows up as a failure, never as traffic and never as a pass.

    python -m tests.stac.offline_validator --root-url http://127.0.0.1:PORT/stac/ --conformance core ...

In a test, `offline()` applies the same patches for the duration of a `with` block.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlparse

import pystac.validation
import requests
import requests.adapters

LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}
VENDORED = Path(__file__).parent / "schemas"
"""Vendored schemas, each at the path of its URL: `schemas/{host}/{path}`."""


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


def vendored_schemas() -> dict[str, bytes]:
    """The vendored schemas by URL; each one's `$id` must be that URL (a misplaced copy is an error)."""
    schemas = {}
    for path in VENDORED.rglob("*.json"):
        content = path.read_bytes()
        url = "https://" + path.relative_to(VENDORED).as_posix()
        schema_id = json.loads(content).get("$id", "").rstrip("#")
        if schema_id != url:
            raise ValueError(f"{path}: $id {schema_id!r} is not the URL its path names ({url})")
        schemas[url] = content
    return schemas


SCHEMAS = shipped_schemas() | vendored_schemas()


def _local(url: str) -> bool:
    return (urlparse(url).hostname or "") in LOCAL_HOSTS


def _schema(url: str) -> bytes:
    key = url.split("#", 1)[0]
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


@contextmanager
def offline() -> Iterator[None]:
    """requests and urllib (also where stac-validator imported `urlopen` by name) answer schema URLs
    from the local copies and refuse other remote addresses; restored on exit."""
    import stac_validator.utilities

    saved = requests.adapters.HTTPAdapter.send, urllib.request.urlopen, stac_validator.utilities.urlopen
    requests.adapters.HTTPAdapter.send = send  # type: ignore[method-assign]
    urllib.request.urlopen = urlopen  # type: ignore[assignment]
    stac_validator.utilities.urlopen = urlopen
    try:
        yield
    finally:
        requests.adapters.HTTPAdapter.send, urllib.request.urlopen, stac_validator.utilities.urlopen = saved  # type: ignore[method-assign]


CONFORMANCE = ["core", "collections", "features", "item-search", "filter", "item-search#sort", "item-search#fields"]


def run_api_validator(
    root_url: str, collection: str, geometry: dict, nested_property: str, headers: dict[str, str] | None = None
) -> str:
    """stac-api-validator, offline, on the API at `root_url` (every class of `CONFORMANCE`, pagination
    too): its output, asserted free of errors."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            __name__,
            "--root-url",
            root_url,
            *[arg for c in CONFORMANCE for arg in ("--conformance", c)],
            "--collection",
            collection,
            "--geometry",
            json.dumps(geometry),
            "--fields-nested-property",
            nested_property,
            "--validate-pagination",
            *[arg for name, value in (headers or {}).items() for arg in ("-H", f"{name}: {value}")],
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    output = result.stdout + result.stderr
    assert "Failed." not in output, output
    assert result.returncode == 0, output
    assert "errors: none" in output.lower(), output
    return output


def main() -> None:
    from stac_api_validator.__main__ import main as validator

    with offline():
        code = validator()
    sys.exit(code)


if __name__ == "__main__":
    main()
