"""Data files as STAC Items: the item id template, the extractors of geometry and time, and harvesting.

A destination is published by a `StacPublication` row (collection, item id template, extractor). Each
data file stored for it becomes one item of that collection: properties from the data file's metadata,
geometry, bbox and datetime from the extractor, one asset `data` whose href is the proxy's URL
(`{public_url}/proxy/{collection}/{item}/data`) with the upstream href kept as its `alternate`
(alternate-assets extension). A data file whose content is not in the Data Store yet (registered
without retrieval) is published with `order:status` `orderable`; a stored one with `succeeded`.

A data file registered from a provider's STAC (a `stac` or `stac-api` listing, a STAC Item message)
carries the provider's item and collection in its metadata: it is published as that item, as the
provider wrote it, every asset's href rewritten to the proxy (`provider_item`); the collection keeps
the provider's metadata (`adopt_collection_metadata`). Items declare the extensions whose fields pds
writes (`declare_extensions`).

Extractors are a registry, name → function(data file, local path or None) → `Extracted`; a new one is
one function and one `register_extractor` call.
"""

from __future__ import annotations

import logging
import mimetypes
import posixpath
import string
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import pystac
from sqlmodel import Session, select

from catalog.errors import InvalidInput, NotFound
from catalog.inventory import StacItem, StacPublication, ensure_collection, item_row, put_item
from catalog.models import DataFile, DataTransfer, Destination, utcnow
from catalog.proxy import register_asset, register_stored_asset
from catalog.store import DataStore

log = logging.getLogger(__name__)

ALTERNATE_ASSETS = "https://stac-extensions.github.io/alternate-assets/v1.2.0/schema.json"
ORDER = "https://stac-extensions.github.io/order/v1.1.0/schema.json"
PROJECTION = "https://stac-extensions.github.io/projection/v1.2.0/schema.json"
FILE = "https://stac-extensions.github.io/file/v2.1.0/schema.json"
ASSET_KEY = "data"

#: The extensions whose fields pds writes, by field prefix: an item carrying one declares its schema.
EXTENSIONS = {"alternate": ALTERNATE_ASSETS, "order": ORDER, "proj": PROJECTION, "file": FILE}


def declare_extensions(body: dict[str, Any]) -> dict[str, Any]:
    """The item with the schema of every extension in `EXTENSIONS` whose fields it carries (in its
    properties or its assets) in `stac_extensions`, unless some version of it is declared already."""
    used: set[str] = set()
    for fields in [body.get("properties") or {}, *(body.get("assets") or {}).values()]:
        for key in fields if isinstance(fields, dict) else ():
            used.add(key.split(":", 1)[0] if ":" in key else key)
    declared = list(body.get("stac_extensions") or [])
    for prefix, schema in EXTENSIONS.items():
        family = schema.rsplit("/v", 1)[0] + "/"
        if prefix in used and not any(str(url).startswith(family) for url in declared):
            declared.append(schema)
    return body | {"stac_extensions": declared}


# --- Extractors ---------------------------------------------------------------------------------


@dataclass
class Extracted:
    """What an extractor found; None fields fall back to the data file's metadata, then its arrival."""

    geometry: dict[str, Any] | None = None
    datetime: datetime | None = None
    properties: dict[str, Any] | None = None


Extractor = Callable[[DataFile, str | None], Extracted]
EXTRACTORS: dict[str, tuple[Extractor, bool]] = {}
"""name → (function, whether it reads the file itself)."""


def register_extractor(name: str, function: Extractor, *, reads_file: bool) -> None:
    EXTRACTORS[name] = (function, reads_file)


def _from_metadata(data_file: DataFile, _path: str | None) -> Extracted:
    """`geometry` (GeoJSON) or `bbox` (minx,miny,maxx,maxy) and `datetime` in the data file's metadata."""
    from catalog.stac_search import parse_bbox, parse_instant

    meta = data_file.meta or {}
    geometry = meta.get("geometry")
    if isinstance(geometry, str):
        import json

        geometry = json.loads(geometry)
    if geometry is None and meta.get("bbox"):
        minx, miny, maxx, maxy = parse_bbox(meta["bbox"]) or (0.0, 0.0, 0.0, 0.0)
        geometry = {
            "type": "Polygon",
            "coordinates": [[[minx, miny], [maxx, miny], [maxx, maxy], [minx, maxy], [minx, miny]]],
        }
    when = parse_instant(meta.get("datetime"), "metadata datetime") if meta.get("datetime") else None
    return Extracted(geometry=geometry, datetime=when)


def _from_geotiff(data_file: DataFile, path: str | None) -> Extracted:
    """A GeoTIFF's footprint in EPSG:4326 and its TIFFTAG_DATETIME (`YYYY:MM:DD HH:MM:SS`, taken as UTC)."""
    from datetime import UTC

    import rasterio
    from rasterio.warp import transform_geom

    if path is None:
        return _from_metadata(data_file, None)
    with rasterio.open(path) as dataset:
        left, bottom, right, top = dataset.bounds
        footprint = {
            "type": "Polygon",
            "coordinates": [[[left, bottom], [right, bottom], [right, top], [left, top], [left, bottom]]],
        }
        geometry = transform_geom(dataset.crs, "EPSG:4326", footprint) if dataset.crs else None
        stamp = dataset.tags().get("TIFFTAG_DATETIME")
        properties = {"proj:epsg": dataset.crs.to_epsg() if dataset.crs else None}
    when = None
    if stamp:
        try:
            when = datetime.strptime(stamp.strip(), "%Y:%m:%d %H:%M:%S").replace(tzinfo=UTC)
        except ValueError:
            log.warning("data file %s: TIFFTAG_DATETIME %r is not YYYY:MM:DD HH:MM:SS", data_file.id, stamp)
    fallback = _from_metadata(data_file, None)
    return Extracted(
        geometry=dict(geometry) if geometry else fallback.geometry,
        datetime=when or fallback.datetime,
        properties={k: v for k, v in properties.items() if v is not None},
    )


register_extractor("metadata", _from_metadata, reads_file=False)
register_extractor("geotiff", _from_geotiff, reads_file=True)


# --- The mapping --------------------------------------------------------------------------------


def item_id(template: str, data_file: DataFile, destination: str) -> str:
    stem = posixpath.splitext(data_file.name)[0]
    values = {
        "stem": stem,
        "name": data_file.name,
        "data_file_id": str(data_file.id),
        "destination": destination,
        "stream": data_file.stream or "",
        "data_type": data_file.data_type or "",
        "time_base": data_file.time_base or "",
        "time_step": data_file.time_step or "",
    } | {f"meta_{k}": str(v) for k, v in (data_file.meta or {}).items()}
    try:
        return string.Template(template).substitute(values)
    except (KeyError, ValueError) as exc:
        raise InvalidInput(
            f"item id template {template!r} cannot be filled for data file {data_file.id}: {exc}"
        ) from exc


def check_template(template: str) -> str:
    try:
        item_id(template, DataFile(id=1, name="example.tif"), "destination")
    except InvalidInput as exc:
        if "meta_" not in str(exc):
            raise
    return template


def media_type(name: str) -> str | None:
    lower = name.lower()
    if lower.endswith((".tif", ".tiff")):
        return str(pystac.MediaType.GEOTIFF)
    if lower.endswith((".grib", ".grib2", ".grb", ".grb2")):
        return "application/x-grib"
    if lower.endswith(".nc"):
        return "application/x-netcdf"
    return mimetypes.guess_type(name)[0]


def data_file_item(
    data_file: DataFile,
    publication: StacPublication,
    *,
    public_url: str,
    upstream_href: str | None,
    extracted: Extracted,
) -> dict[str, Any]:
    """The STAC Item (JSON) of one data file, built with pystac."""
    from datetime import UTC

    identifier = item_id(publication.item_id_template, data_file, publication.destination_name)
    meta = {k: v for k, v in (data_file.meta or {}).items() if k not in ("geometry", "bbox", "datetime", "href")}
    properties: dict[str, Any] = {
        "pds:data_file_id": data_file.id,
        "pds:name": data_file.name,
        "order:status": "succeeded" if data_file.store_key else "orderable",
    }
    for key in ("stream", "data_type", "time_base", "time_step"):
        if getattr(data_file, key):
            properties[f"pds:{key}"] = getattr(data_file, key)
    properties |= meta | (extracted.properties or {})
    when = extracted.datetime or data_file.arrived_at or data_file.created_at or datetime.now(UTC)
    geometry = extracted.geometry
    bbox = None
    if geometry is not None:
        from catalog.stac_search import geometry_bounds

        bbox = list(geometry_bounds(geometry))
    item = pystac.Item(
        id=identifier,
        geometry=geometry,
        bbox=bbox,
        datetime=when,
        properties=properties,
        collection=publication.collection_id,
        stac_extensions=[],
    )
    asset = pystac.Asset(
        href=f"{public_url.rstrip('/')}/proxy/{publication.collection_id}/{identifier}/{ASSET_KEY}",
        media_type=media_type(data_file.name),
        roles=["data"],
        extra_fields={"file:size": data_file.size} if data_file.size is not None else {},
    )
    if upstream_href:
        asset.extra_fields["alternate"] = {"upstream": {"href": upstream_href, "title": "the upstream copy"}}
    item.add_asset(ASSET_KEY, asset)
    body = item.to_dict(include_self_link=False, transform_hrefs=False)
    body["links"] = []
    return declare_extensions(body)


# --- Items as the provider published them --------------------------------------------------------


def provider_stac(data_file: DataFile) -> dict[str, Any] | None:
    """The provider's STAC item (and collection) a STAC listing recorded on the data file, or None."""
    stac = (data_file.meta or {}).get("stac")
    if isinstance(stac, dict) and isinstance(stac.get("item"), dict):
        return stac
    return None


def proxiable(key: str, href: str) -> bool:
    """Whether the proxy can serve the asset: a key fit for a URL path, an upstream it can fetch."""
    return bool(key) and "/" not in key and key not in (".", "..") and href.startswith(("http://", "https://", "s3://"))


def with_upstream(asset: dict[str, Any], proxy_href: str, upstream: str) -> dict[str, Any]:
    """The asset served by the proxy at `proxy_href`, its upstream kept as the alternate `upstream`
    (alternate-assets extension) beside any other alternates it has."""
    alternates = dict(asset.get("alternate") or {})
    alternates["upstream"] = {**(alternates.get("upstream") or {}), "href": upstream}
    return asset | {"href": proxy_href, "alternate": alternates}


def provider_item(
    data_file: DataFile, publication: StacPublication, *, public_url: str
) -> tuple[dict[str, Any], dict[str, str]]:
    """The provider's item as published in the collection, and {asset key: upstream href} of the
    assets rewritten to the proxy.

    Everything the provider wrote is kept (geometry, bbox, datetime or start/end, properties, links,
    `stac_extensions`, each asset's roles, type, size, checksum, …); each asset the proxy can fetch
    points to the proxy, its upstream kept as the alternate `upstream` (alternate-assets extension).
    """
    import copy

    from catalog.inventory import check_id

    source = copy.deepcopy(provider_stac(data_file)["item"])  # type: ignore[index]
    identifier = check_id(source.get("id"), "item")
    base = f"{public_url.rstrip('/')}/proxy/{publication.collection_id}/{identifier}"
    upstreams: dict[str, str] = {}
    assets: dict[str, Any] = {}
    for key, asset in (source.get("assets") or {}).items():
        href = str(asset.get("href", ""))
        if proxiable(key, href):
            asset = with_upstream(asset, f"{base}/{key}", href)
            upstreams[key] = href
        assets[key] = asset
    body = source | {"collection": publication.collection_id, "assets": assets, "links": source.get("links") or []}
    return declare_extensions(body), upstreams


def _upstream_version(session: Session, data_file: DataFile, asset: dict[str, Any], *, own: bool) -> str | None:
    """What says an upstream changed: the asset's checksum, else (the data file's own asset) its MD5
    once stored, else its size and modification time as the listing gave them."""
    checksum = asset.get("file:checksum")
    if checksum:
        return str(checksum)
    if not own:
        return None
    if data_file.md5:
        return data_file.md5
    from catalog.acquisition import SourceFile

    source = session.get(SourceFile, data_file.id) if data_file.id is not None else None
    if source is None or source.modified is None:
        return None
    return f"{source.size if source.size is not None else ''}-{int(source.modified.timestamp()):x}"


def _register_provider_assets(
    session: Session, data_file: DataFile, collection: str, body: dict[str, Any], upstreams: dict[str, str]
) -> None:
    """Make every rewritten href of the item resolve: the data file's own asset from the Data Store
    once retrieved, else (and every other asset) from its upstream on first request."""
    from catalog.proxy import STORE_SCHEME, get_asset

    own = provider_stac(data_file)["asset"]  # type: ignore[index]
    on_host = _source_host(session, data_file)
    for key, upstream in upstreams.items():
        asset = body["assets"][key]
        kind = asset.get("type") or media_type(upstream.rsplit("/", 1)[-1]) or "application/octet-stream"
        size = asset.get("file:size") if isinstance(asset.get("file:size"), int) else None
        if key == own and data_file.store_key:
            register_stored_asset(
                session,
                collection,
                body["id"],
                key,
                data_file.store_key,
                media_type=kind,
                size=data_file.size,
                etag=data_file.md5,
            )
            continue
        existing = get_asset(session, collection, body["id"], key)
        if key != own and existing is not None and existing.upstream_href.startswith(STORE_SCHEME):
            continue  # another data file of the item, retrieved: its stored copy is served
        if key == own and size is None:
            size = data_file.size
        version = _upstream_version(session, data_file, asset, own=key == own)
        host, path = on_host(upstream)
        register_asset(
            session, collection, body["id"], key, path, upstream_host=host, media_type=kind, size=size, etag=version
        )


def _source_host(session: Session, data_file: DataFile) -> Callable[[str], tuple[str | None, str]]:
    """href → (host, path) the proxy fetches it by: an href on the HTTP(S) host the data file was
    discovered on is fetched through that host (its credentials); any other as a plain URL."""
    from urllib.parse import unquote, urlsplit

    from catalog.acquisition import SourceFile
    from catalog.models import Host

    source = session.get(SourceFile, data_file.id) if data_file.id is not None else None
    host = session.get(Host, source.host_name) if source is not None else None
    base = _http_base(host) + "/" if host is not None and host.protocol in ("http", "https") else None

    def where(href: str) -> tuple[str | None, str]:
        if host is None or base is None or not href.startswith(base):
            return None, href
        return host.name, "/" + unquote(urlsplit(href[len(base) :]).path).lstrip("/")

    return where


#: Collection fields a provider's collection gives when the published collection does not set them.
PROVIDER_COLLECTION_FIELDS = ("title", "description", "license", "providers", "keywords", "summaries")


def adopt_collection_metadata(session: Session, collection_id: str, source: dict[str, Any]) -> None:
    """Keep the provider's collection metadata (title, description, license, providers, keywords,
    summaries) where the published collection has none of its own (or pds's defaults), and grow its
    extent to cover the provider's."""
    from catalog.inventory import OPEN, WORLD, StacCollection, StacItem, extend_extent, extent_instant

    collection = session.get(StacCollection, collection_id)
    if collection is None:
        return
    body = dict(collection.body)
    defaults = {"license": {"other"}, "description": {collection_id, f"data files of destination {collection_id}"}}
    defaults["description"] |= {
        f"data files of destination {p.destination_name}"
        for p in session.exec(select(StacPublication).where(StacPublication.collection_id == collection_id))
    }
    for key in PROVIDER_COLLECTION_FIELDS:
        if key in source and (key not in body or body[key] in defaults.get(key, ())):
            body[key] = source[key]
    extent = source.get("extent") or {}
    boxes = (extent.get("spatial") or {}).get("bbox") or []
    intervals = (extent.get("temporal") or {}).get("interval") or []
    empty = session.exec(select(StacItem.id).where(StacItem.collection_id == collection_id).limit(1)).first() is None
    if boxes and isinstance(boxes[0], list) and len(boxes[0]) == 4 and boxes != WORLD:
        body = extend_extent(body, tuple(boxes[0]), None, None, replace_unset=empty)
    if intervals and isinstance(intervals[0], list) and intervals != OPEN:
        low, high = (list(intervals[0]) + [None, None])[:2]
        body = extend_extent(body, None, extent_instant(low), extent_instant(high), replace_unset=empty)
    if body != collection.body:
        collection.body, collection.updated_at = body, utcnow()
        session.add(collection)
        session.flush()


# --- Harvesting ---------------------------------------------------------------------------------


def get_publication(session: Session, destination: str) -> StacPublication | None:
    return session.get(StacPublication, destination)


def set_publication(
    session: Session,
    destination: str,
    *,
    collection_id: str,
    item_id_template: str | None = None,
    extractor: str | None = None,
    enabled: bool | None = None,
) -> StacPublication:
    """Publish a destination's data files into a collection (created when missing)."""
    from catalog.inventory import check_id

    if session.get(Destination, destination) is None:
        raise NotFound(f"no destination {destination!r}")
    check_id(collection_id, "collection")
    if extractor is not None and extractor not in EXTRACTORS:
        raise InvalidInput(f"unknown extractor {extractor!r}: one of {', '.join(sorted(EXTRACTORS))}")
    if item_id_template is not None:
        check_template(item_id_template)
    publication = session.get(StacPublication, destination) or StacPublication(
        destination_name=destination, collection_id=collection_id
    )
    publication.collection_id = collection_id
    if item_id_template is not None:
        publication.item_id_template = item_id_template
    if extractor is not None:
        publication.extractor = extractor
    if enabled is not None:
        publication.enabled = enabled
    ensure_collection(session, collection_id, f"data files of destination {destination}")
    session.add(publication)
    session.flush()
    return publication


@contextmanager
def _local_path(store: DataStore | None, data_file: DataFile) -> Iterator[str | None]:
    """A path GDAL can open: the object itself on a local store, else a temporary copy (streamed)."""
    import shutil
    import tempfile

    if store is None or not data_file.store_key:
        yield None
        return
    from fsspec.implementations.local import LocalFileSystem

    if isinstance(store.fs, LocalFileSystem):
        yield f"{store.root}/{data_file.store_key}"
        return
    with tempfile.NamedTemporaryFile(suffix=posixpath.splitext(data_file.name)[1]) as copy:
        with store.open(data_file.store_key) as source:
            shutil.copyfileobj(source, copy, store.chunk_size)
        copy.flush()
        yield copy.name


def harvest_data_file(
    session: Session, store: DataStore | None, data_file: DataFile, destination: str, *, public_url: str
) -> StacItem | None:
    """Publish one data file as an item if its destination is published; the item, or None."""
    publication = session.get(StacPublication, destination)
    if publication is None or not publication.enabled:
        return None
    provided = provider_stac(data_file)
    if provided is not None:
        body, upstreams = provider_item(data_file, publication, public_url=public_url)
        ensure_collection(session, publication.collection_id)
        if isinstance(provided.get("collection"), dict):
            adopt_collection_metadata(session, publication.collection_id, provided["collection"])
        row = put_item(session, item_row(body, publication.collection_id, data_file_id=data_file.id), mode="upsert")
        _register_provider_assets(session, data_file, publication.collection_id, body, upstreams)
        return row
    function, reads_file = EXTRACTORS[publication.extractor]
    if reads_file:
        with _local_path(store, data_file) as path:
            extracted = function(data_file, path)
    else:
        extracted = function(data_file, None)
    upstream = None
    if data_file.store_key and store is not None:
        upstream = store.fs.unstrip_protocol(f"{store.root}/{data_file.store_key}")
    elif (data_file.meta or {}).get("href"):
        upstream = str(data_file.meta["href"])
    discovered = None if data_file.store_key or upstream else _discovered_at(session, data_file)
    if discovered is not None:
        upstream = discovered[2]
    body = data_file_item(data_file, publication, public_url=public_url, upstream_href=upstream, extracted=extracted)
    ensure_collection(session, publication.collection_id)
    row = put_item(session, item_row(body, publication.collection_id, data_file_id=data_file.id), mode="upsert")
    if discovered is not None:  # registered by acquisition, not retrieved: fetched from its source host
        host, path, _ = discovered
        register_asset(
            session,
            publication.collection_id,
            row.id,
            ASSET_KEY,
            path,
            upstream_host=host,
            media_type=media_type(data_file.name) or "application/octet-stream",
            size=data_file.size,
            etag=_upstream_version(session, data_file, {}, own=True),
        )
        return row
    _register_in_proxy(session, data_file, publication.collection_id, row.id, upstream)
    return row


def _discovered_at(session: Session, data_file: DataFile) -> tuple[str, str, str] | None:
    """(host, path on the host's filesystem, URL shown as the upstream) of a data file acquisition
    registered, or None."""
    from catalog.acquisition import SourceFile
    from catalog.models import Host

    source = session.get(SourceFile, data_file.id) if data_file.id is not None else None
    host = session.get(Host, source.host_name) if source is not None else None
    if source is None or host is None:
        return None
    if host.protocol in ("http", "https"):
        shown = _http_base(host) + "/" + source.path.lstrip("/")
    elif host.protocol == "s3":
        shown = "s3://" + source.path.lstrip("/")
    elif host.protocol == "file":
        shown = "file://" + source.path
    else:
        shown = f"{host.protocol}://{host.address.rstrip('/')}/{source.path.lstrip('/')}"
    return host.name, source.path, shown


def _http_base(host: Any) -> str:
    """An HTTP(S) host's base URL, as its block makes it (an address without a scheme takes the protocol's)."""
    address = str(host.address).strip().rstrip("/")
    return address if "://" in address else f"{host.protocol}://{address}"


def _register_in_proxy(session: Session, data_file: DataFile, collection: str, item: str, upstream: str | None) -> None:
    """Make the item's asset href resolve: the proxy serves the stored copy, or fetches the provider's."""
    kind = media_type(data_file.name) or "application/octet-stream"
    if data_file.store_key:
        register_stored_asset(
            session,
            collection,
            item,
            ASSET_KEY,
            data_file.store_key,
            media_type=kind,
            size=data_file.size,
            etag=data_file.md5,
        )
    elif upstream and upstream.startswith(("http://", "https://", "s3://")):
        register_asset(session, collection, item, ASSET_KEY, upstream, media_type=kind, size=data_file.size)


@dataclass
class HarvestResult:
    items: int = 0
    """Items written (created or updated)."""
    failed: dict[int, str] = field(default_factory=dict)
    """Data file id → why it could not be published (e.g. a file the extractor cannot read)."""


def _harvest_one(
    session: Session,
    store: DataStore | None,
    data_file: DataFile,
    destination: str,
    public_url: str,
    result: HarvestResult,
) -> None:
    # A savepoint per data file: one that cannot be published leaves the others (and the push) intact.
    try:
        with session.begin_nested():
            if harvest_data_file(session, store, data_file, destination, public_url=public_url) is not None:
                result.items += 1
    except Exception as exc:  # noqa: BLE001 - an unreadable file or bad metadata: reported, not raised
        log.warning("data file %s: not published in the STAC inventory for %s: %s", data_file.id, destination, exc)
        result.failed[data_file.id or 0] = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def is_published(session: Session, destination: str) -> bool:
    publication = session.get(StacPublication, destination)
    return publication is not None and publication.enabled


def publish_data_files(
    session: Session, store: DataStore | None, destination: str, data_file_ids: list[int], *, public_url: str
) -> HarvestResult:
    """Publish data files just registered (or whose provider item changed) for a published destination."""
    result = HarvestResult()
    for data_file_id in dict.fromkeys(data_file_ids):
        data_file = session.get(DataFile, data_file_id)
        if data_file is not None:
            _harvest_one(session, store, data_file, destination, public_url, result)
    return result


def harvest_destination(
    session: Session, store: DataStore | None, destination: str, *, public_url: str
) -> HarvestResult:
    """Publish every data file ever queued for the destination (existing items are updated)."""
    publication = session.get(StacPublication, destination)
    if publication is None:
        raise NotFound(f"destination {destination!r} is not published (pds stac publish {destination} …)")
    ids = select(DataTransfer.data_file_id).where(DataTransfer.destination_name == destination).distinct()
    statement = select(DataFile).where(DataFile.id.in_(ids)).order_by(DataFile.id)  # type: ignore[union-attr,arg-type]
    result = HarvestResult()
    for data_file in session.exec(statement).all():
        _harvest_one(session, store, data_file, destination, public_url, result)
    return result


def harvest_stored_data_file(
    session: Session, store: DataStore | None, data_file_id: int, *, public_url: str
) -> HarvestResult:
    """After a push: publish the data file for each published destination it was queued to.

    A failure is logged and leaves the push as it is (the item can be harvested again later).
    """
    result = HarvestResult()
    data_file = session.get(DataFile, data_file_id)
    if data_file is None:
        return result
    destinations = session.exec(
        select(DataTransfer.destination_name).where(DataTransfer.data_file_id == data_file_id).distinct()
    ).all()
    for destination in destinations:
        _harvest_one(session, store, data_file, destination, public_url, result)
    return result
