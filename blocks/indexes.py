"""Listings that a provider publishes as documents on an HTTP(S) host: an HTML directory index, a
JSON or CSV file list, a static STAC catalog, a STAC API search. Each yields `listing.Entry`s whose paths are relative
to the host's base URL, so the host's own filesystem fetches them like any other file.

Links to another server than the host are skipped (the retrieval could not reach them with the
host's credentials). A CSV listing is read a line at a time; an HTML index and a JSON listing are
read whole (a document, not a paged listing); a STAC catalog is walked one catalog or item at a time;
a STAC API search is read a page at a time by pystac-client, following the API's `next` links.
"""

from __future__ import annotations

import csv
import json
import posixpath
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from html.parser import HTMLParser
from typing import Any
from urllib.parse import unquote, urljoin, urlsplit

import httpx
import pystac
from pystac.stac_io import DefaultStacIO
from pystac_client import ItemSearch
from pystac_client.exceptions import APIError
from pystac_client.stac_api_io import StacApiIO

from blocks.listing import Entry, _utc
from catalog.acquisition import search_request

FORMATS = ("html", "json", "csv", "stac", "stac-api")

#: nginx and Apache autoindex text after a link: "23-Nov-2026 13:00    1234" (size "-" for directories).
#: Sizes may be rounded ("23M" with nginx's `autoindex_exact_size off`, Apache's "1.2K").
_INDEX_DETAILS = re.compile(r"(\d{1,2}-\w{3}-\d{4} \d{2}:\d{2}(?::\d{2})?)\s+(\d+(?:\.\d+)?[KMGTP]?|-)(?!\S)")


def _client(fs: Any) -> httpx.Client:
    client = getattr(fs, "client", None)
    if not isinstance(client, httpx.Client):
        raise ValueError("documents listings (html, json, csv, stac, stac-api) need an http or https acquisition host")
    return client


def _site_path(fs: Any, url: str) -> str | None:
    """`url` as a path relative to the host's base URL, or None when it is on another server."""
    base = fs.base_url.rstrip("/") + "/"
    if not url.startswith(base):
        return None
    return "/" + unquote(urlsplit(url[len(base) :]).path).lstrip("/")


def _get(fs: Any, path: str, *, collection: bool = False) -> httpx.Response:
    response = _client(fs).get(fs.url(path, collection))
    if response.status_code == 404:
        raise FileNotFoundError(f"{fs.url(path)}: 404 Not Found")
    response.raise_for_status()
    return response


class _Anchors(HTMLParser):
    """(href, the text after the link up to the next tag) of every <a> in a page."""

    def __init__(self) -> None:
        super().__init__()
        self.links: list[tuple[str, list[str]]] = []
        self._after_link = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._after_link = False
        href = dict(attrs).get("href") if tag == "a" else None
        if href:
            self.links.append((href, []))

    def handle_endtag(self, tag: str) -> None:
        self._after_link = tag == "a" and bool(self.links)

    def handle_data(self, data: str) -> None:
        if self._after_link:
            self.links[-1][1].append(data)


def html_index(fs: Any, directory: str) -> Iterator[Entry]:
    """The links of a directory's index page; sizes and times where the index shows them."""
    page_url = fs.url(directory, collection=True)
    parser = _Anchors()
    parser.feed(_get(fs, directory, collection=True).text)
    for href, texts in parser.links:
        after = "".join(texts)
        if href.startswith(("?", "#", "mailto:")) or href in ("../", "./", "/"):
            continue
        url = urljoin(page_url, href)
        path = _site_path(fs, url)
        if path is None or not path.startswith("/" + directory.strip("/")) or url.rstrip("/") == page_url.rstrip("/"):
            continue  # another server, or outside (above) the listed directory
        is_directory = href.endswith("/")
        size = modified = None
        details = _INDEX_DETAILS.search(after)
        if details:
            modified = datetime.strptime(details.group(1)[:17], "%d-%b-%Y %H:%M").replace(tzinfo=UTC)
            # A rounded size is no size: as an exact one it would fail every retrieval ("changed
            # while it was read") and mislead size filters; unknown, the retrieval takes what comes.
            shown = details.group(2)
            size = int(shown) if shown.isdigit() else None
        path = path.rstrip("/")
        yield Entry(path, posixpath.basename(path), None if is_directory else size, modified, is_directory)


def _entry_from_record(fs: Any, document_url: str, record: dict[str, Any]) -> Entry | None:
    href = record.get("href") or record.get("url") or record.get("path") or record.get("name")
    if not href:
        return None
    path = _site_path(fs, urljoin(document_url, str(href)))
    if path is None:
        return None
    size = record.get("size") or record.get("length")
    modified = record.get("modified") or record.get("mtime") or record.get("last_modified")
    known = size is not None and size != ""
    return Entry(
        path, posixpath.basename(path), int(size) if size is not None and known else None, _utc(modified), False
    )


def json_listing(fs: Any, document: str) -> Iterator[Entry]:
    """A JSON list of files, or an object with a "files" list; each file has href (or url, path,
    name) and optionally size (or length) and modified (ISO 8601 or epoch seconds)."""
    url = fs.url(document)
    body = json.loads(_get(fs, document).content)
    records = body.get("files", []) if isinstance(body, dict) else body
    for record in records:
        if isinstance(record, str):
            record = {"href": record}
        entry = _entry_from_record(fs, url, record) if isinstance(record, dict) else None
        if entry is not None:
            yield entry


def csv_listing(fs: Any, document: str) -> Iterator[Entry]:
    """A CSV file list with a header row naming the columns (href/url/path/name, size, modified),
    read a line at a time."""
    url = fs.url(document)
    with _client(fs).stream("GET", url) as response:
        if response.status_code == 404:
            raise FileNotFoundError(f"{url}: 404 Not Found")
        response.raise_for_status()
        for record in csv.DictReader(response.iter_lines()):
            entry = _entry_from_record(fs, url, {k.strip().lower(): (v or "").strip() for k, v in record.items() if k})
            if entry is not None:
                yield entry


class _HostStacIO(DefaultStacIO):
    """pystac's reads through the host's HTTP client (its credentials, its TLS settings)."""

    def __init__(self, client: httpx.Client) -> None:
        super().__init__()
        self.client = client

    def read_text_from_href(self, href: str) -> str:
        response = self.client.get(href)
        if response.status_code == 404:
            raise FileNotFoundError(f"{href}: 404 Not Found")
        response.raise_for_status()
        return response.text


#: Links the STAC API writes itself for every item it serves (not kept from the provider's item).
_OWN_LINKS = ("self", "parent", "collection", "root")


def stac_meta(item: dict[str, Any], asset: str, collection: dict[str, Any] | None) -> dict[str, Any]:
    """A data file's metadata when it is an asset of a provider's STAC item: the item (hrefs
    absolute), which of its assets the file is, and the item's collection (without its links)."""
    kept = {k: v for k, v in item.items() if k != "links"}
    kept["links"] = [link for link in item.get("links") or [] if link.get("rel") not in _OWN_LINKS]
    stac: dict[str, Any] = {"item": kept, "asset": asset}
    if collection is not None:
        stac["collection"] = {k: v for k, v in collection.items() if k != "links"}
    return {"stac": stac}


def _absolute(item: dict[str, Any], item_url: str) -> dict[str, Any]:
    """The item with its asset and link hrefs made absolute (relative to `item_url`)."""
    item = dict(item)
    item["assets"] = {
        key: {**asset, "href": urljoin(item_url, str(asset.get("href", "")))}
        for key, asset in (item.get("assets") or {}).items()
    }
    item["links"] = [
        {**link, "href": urljoin(item_url, str(link.get("href", "")))}
        for link in item.get("links") or []
        if isinstance(link, dict)
    ]
    return item


def _item_entries(fs: Any, item: dict[str, Any], collection: dict[str, Any] | None) -> Iterator[Entry]:
    """An entry per asset of an item (hrefs absolute) that lies on the host, carrying the item."""
    properties = item.get("properties") or {}
    modified = _utc(properties.get("updated") or properties.get("datetime") or properties.get("end_datetime"))
    for key, asset in (item.get("assets") or {}).items():
        path = _site_path(fs, str(asset.get("href", "")))
        if path is None:
            continue
        size = asset.get("file:size")
        meta = stac_meta(item, key, collection)
        yield Entry(path, posixpath.basename(path), int(size) if size is not None else None, modified, False, meta)


def stac_catalog(fs: Any, document: str) -> Iterator[Entry]:
    """Every asset of every item of a static STAC catalog (or collection), walked lazily; each entry
    carries its item (geometry, time, properties, assets, links) and its collection's metadata."""
    catalog = pystac.Catalog.from_file(fs.url(document), stac_io=_HostStacIO(_client(fs)))
    collections: dict[str, dict[str, Any] | None] = {}
    for item in catalog.get_items(recursive=True):
        parent = item.get_collection()
        if parent is not None and parent.id not in collections:
            collections[parent.id] = parent.to_dict(include_self_link=False, transform_hrefs=False)
        body = item.to_dict(include_self_link=False, transform_hrefs=False)
        item_url = item.get_self_href() or fs.url(document)
        body["links"] = [
            link.to_dict(transform_href=False) | {"href": link.get_absolute_href() or link.get_href()}
            for link in item.links
            if link.rel not in _OWN_LINKS
        ]
        yield from _item_entries(fs, _absolute(body, item_url), collections.get(parent.id) if parent else None)


def _collection_of(fs: Any, item: dict[str, Any], cache: dict[str, dict[str, Any] | None]) -> dict[str, Any] | None:
    """The collection an API's item links to, read once per pass (None when it is on another server)."""
    href = next((str(link["href"]) for link in item.get("links") or [] if link.get("rel") == "collection"), None)
    if href is None or _site_path(fs, href) is None:
        return None
    if href not in cache:
        try:
            response = _client(fs).get(href)
            cache[href] = response.json() if response.status_code == 200 else None
        except (httpx.HTTPError, ValueError):
            cache[href] = None
    return cache[href]


def _stac_api_io(fs: Any) -> StacApiIO:
    """pystac-client's HTTP session with the host's headers, credentials and TLS settings."""
    client = _client(fs)

    headers = {k: v for k, v in client.headers.items() if k.lower() not in ("user-agent", "accept-encoding")}
    if client.auth is not None:
        # The host's httpx authentication (Basic: a fixed header) applied once, carried over to requests.
        signed = next(client.auth.auth_flow(httpx.Request("GET", fs.base_url)))
        if "authorization" in signed.headers:
            headers["Authorization"] = signed.headers["authorization"]
    io = StacApiIO(headers=headers, timeout=getattr(fs, "timeout", None), max_retries=2)
    io.session.verify = fs.verify if isinstance(getattr(fs, "verify", True), bool | str) else True
    return io


def stac_api_search(fs: Any, document: str) -> Iterator[Entry]:
    """Every asset of every item a STAC API search returns, page by page (pystac-client)."""
    endpoint, arguments = search_request(document)
    url = fs.url(endpoint)
    try:
        search = ItemSearch(url, stac_io=_stac_api_io(fs), **arguments)
        collections: dict[str, dict[str, Any] | None] = {}
        for item in search.items_as_dicts():
            self_href = next((str(k["href"]) for k in item.get("links") or [] if k.get("rel") == "self"), url)
            item = _absolute(item, urljoin(url, self_href))
            yield from _item_entries(fs, item, _collection_of(fs, item, collections))
    except APIError as exc:
        if exc.status_code == 404:
            raise FileNotFoundError(f"{url}: 404 Not Found") from None
        raise ValueError(f"STAC API search at {url} failed: {exc.status_code} {str(exc)[:300]}") from None


def document_entries(fs: Any, path: str, listing_format: str) -> Iterator[Entry]:
    if listing_format == "html":
        return html_index(fs, path)
    if listing_format == "json":
        return json_listing(fs, path)
    if listing_format == "csv":
        return csv_listing(fs, path)
    if listing_format == "stac":
        return stac_catalog(fs, path)
    if listing_format == "stac-api":
        return stac_api_search(fs, path)
    raise ValueError(f"unknown listing format {listing_format!r}; known: {', '.join(FORMATS)}")
