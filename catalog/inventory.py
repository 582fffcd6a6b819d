"""The STAC inventory: collections and items as rows, and what the proxy asks of them.

An item is stored whole as JSON (geometry, properties, assets, links) plus a few columns that searches
need without parsing JSON: its sort time and time range (keyset pagination, datetime filters) and its
bounding box (an indexed prefilter; the exact geometry test runs on the rows that pass it, so no
spatial database extension is needed — SQLite and PostgreSQL behave the same).

A collection's extent grows as items are written (`extend_extent`): it covers every item.

`resolve_asset(session, collection_id, item_id, asset_key)` is the proxy's entry point: it turns the
path of an asset href (`/proxy/{collection}/{item}/{asset}`) into the upstream href, media type and
data file id.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlmodel import JSON, Column, Field, Session, SQLModel, select

from catalog.errors import Conflict, InvalidInput, NotFound
from catalog.models import NAME_PATTERN, UTCDateTime, utcnow


def _time_column(*, nullable: bool = False) -> Any:
    return Field(default=None, sa_column=Column(UTCDateTime(), nullable=nullable))


class StacCollection(SQLModel, table=True):
    """A STAC Collection (one per dataset); `body` is the collection's JSON without its links."""

    __tablename__ = "stac_collection"
    id: str = Field(primary_key=True, max_length=128)
    body: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    updated_at: dt.datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))


class StacItem(SQLModel, table=True):
    """A STAC Item of a collection.

    `datetime` is the item's `datetime` (or `start_datetime` when it has a range only) and orders
    searches together with (collection_id, id), a unique key, so a page boundary is a value, not an
    offset. `start_at`/`end_at` is the time the item covers (both `datetime` for an instant).
    """

    __tablename__ = "stac_item"
    __table_args__ = (
        sa.Index("ix_stac_item_keyset", "datetime", "collection_id", "id"),
        sa.Index("ix_stac_item_collection_keyset", "collection_id", "datetime", "id"),
        sa.Index("ix_stac_item_bbox", "minx", "maxx", "miny", "maxy"),
        # Items that cover a time range (not one instant) are rare; searches ask whether there are any.
        sa.Index("ix_stac_item_ranged", "ranged", "collection_id"),
    )
    collection_id: str = Field(foreign_key="stac_collection.id", primary_key=True, ondelete="CASCADE")
    id: str = Field(primary_key=True, max_length=256)
    datetime: dt.datetime = _time_column()
    start_at: dt.datetime = _time_column()
    end_at: dt.datetime = _time_column()
    ranged: bool = False
    """True unless datetime, start_at and end_at are one instant."""
    minx: float | None = None
    miny: float | None = None
    maxx: float | None = None
    maxy: float | None = None
    geometry: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    properties: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    assets: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    links: list[dict[str, Any]] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    """Links other than the ones the API writes itself (self, parent, collection, root)."""
    stac_extensions: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    data_file_id: int | None = Field(default=None, foreign_key="data_file.id", index=True, ondelete="SET NULL")
    """The data file this item was harvested from (None for items created through the API)."""
    updated_at: dt.datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))


class StacPublication(SQLModel, table=True):
    """How a destination's data files become items: the collection, the item id template, the extractor."""

    __tablename__ = "stac_publication"
    destination_name: str = Field(foreign_key="destination.name", primary_key=True, ondelete="CASCADE")
    collection_id: str = Field(max_length=128)
    item_id_template: str = "$stem"
    """`string.Template` over the data file: `$stem`, `$name`, `$data_file_id`, `$destination`,
    `$stream`, `$data_type`, `$time_base`, `$time_step` and every metadata key as `$meta_<key>`."""
    extractor: str = "metadata"
    """Where geometry and time come from: `metadata` (the data file's metadata) or `geotiff` (the file)."""
    enabled: bool = True


#: Fields that map to columns: these can be sorted on and are compared without reading JSON.
COLUMNS: dict[str, Any] = {
    "id": StacItem.id,
    "collection": StacItem.collection_id,
    "datetime": StacItem.datetime,
    "start_datetime": StacItem.start_at,
    "end_datetime": StacItem.end_at,
}


def bbox_overlaps(bbox: tuple[float, float, float, float]) -> Any:
    """Items whose bounding box touches `bbox` (the indexed prefilter of every spatial test)."""
    minx, miny, maxx, maxy = bbox
    table = StacItem.__table__.c  # type: ignore[attr-defined]
    return sa.and_(table.minx <= maxx, table.maxx >= minx, table.miny <= maxy, table.maxy >= miny)


# --- Collections and items ----------------------------------------------------------------------


def check_id(value: Any, what: str) -> str:
    """Collection and item ids appear in URL paths: the portal's name rules, a little longer."""
    import re

    if not isinstance(value, str) or not re.match(NAME_PATTERN.replace("{0,63}", "{0,255}"), value):
        raise InvalidInput(f"{what} id must be letters, digits, '_', '.' or '-' (not starting with one), not {value!r}")
    return value


def get_collection(session: Session, collection_id: str) -> StacCollection:
    collection = session.get(StacCollection, collection_id)
    if collection is None:
        raise NotFound(f"no collection {collection_id!r}")
    return collection


def put_collection(session: Session, body: dict[str, Any], *, create: bool) -> StacCollection:
    """Create (Conflict if it exists) or replace (NotFound if it does not) a collection from its JSON."""
    import pystac

    collection_id = check_id(body.get("id"), "collection")
    body = {k: v for k, v in body.items() if k != "links"}
    body.setdefault("type", "Collection")
    body.setdefault("stac_version", pystac.get_stac_version())
    body.setdefault("description", collection_id)
    body.setdefault("license", "other")
    body.setdefault("extent", {"spatial": {"bbox": [[-180, -90, 180, 90]]}, "temporal": {"interval": [[None, None]]}})
    try:
        pystac.Collection.from_dict({**body, "links": []}, migrate=False)
    except Exception as exc:  # pystac raises many kinds for a malformed collection
        raise InvalidInput(f"not a valid STAC collection: {exc}") from exc
    existing = session.get(StacCollection, collection_id)
    if create and existing is not None:
        raise Conflict(f"collection {collection_id!r} already exists")
    if not create and existing is None:
        raise NotFound(f"no collection {collection_id!r}")
    collection = existing or StacCollection(id=collection_id)
    collection.body, collection.updated_at = body, utcnow()
    session.add(collection)
    session.flush()
    return collection


def ensure_collection(session: Session, collection_id: str, description: str = "") -> StacCollection:
    existing = session.get(StacCollection, collection_id)
    if existing is not None:
        return existing
    return put_collection(session, {"id": collection_id, "description": description or collection_id}, create=True)


def delete_collection(session: Session, collection_id: str) -> None:
    collection = get_collection(session, collection_id)
    session.execute(sa.delete(StacItem).where(StacItem.collection_id == collection_id))  # type: ignore[arg-type]
    session.delete(collection)


def item_row(body: dict[str, Any], collection_id: str, *, data_file_id: int | None = None) -> StacItem:
    """Check an item's JSON and turn it into a row (columns derived from geometry and properties)."""
    import pystac

    from catalog.stac_search import geometry_bounds, parse_instant

    item_id = check_id(body.get("id"), "item")
    if body.get("collection", collection_id) != collection_id:
        raise InvalidInput(f"item says collection {body.get('collection')!r} but was sent to {collection_id!r}")
    properties = dict(body.get("properties") or {})
    geometry = body.get("geometry")
    try:
        pystac.Item.from_dict({**body, "links": [], "collection": collection_id}, migrate=False)
        bounds = geometry_bounds(geometry) if geometry else None
        bounds = _declared_bbox(body.get("bbox"), bounds)
        start = parse_instant(properties.get("start_datetime") or properties.get("datetime"), "datetime")
        end = parse_instant(properties.get("end_datetime") or properties.get("datetime"), "datetime")
        when = parse_instant(properties.get("datetime") or properties.get("start_datetime"), "datetime")
    except InvalidInput:
        raise
    except Exception as exc:  # pystac and shapely raise many kinds for malformed JSON
        raise InvalidInput(f"not a valid STAC item: {exc}") from exc
    if when is None or start is None or end is None:
        raise InvalidInput("an item needs properties.datetime, or start_datetime and end_datetime")
    links = [
        link for link in body.get("links") or [] if link.get("rel") not in ("self", "parent", "collection", "root")
    ]
    minx, miny, maxx, maxy = bounds if bounds else (None, None, None, None)
    return StacItem(
        collection_id=collection_id,
        id=item_id,
        datetime=when,
        start_at=start,
        end_at=end,
        ranged=not (when == start == end),
        minx=minx,
        miny=miny,
        maxx=maxx,
        maxy=maxy,
        geometry=geometry,
        properties=properties,
        assets=dict(body.get("assets") or {}),
        links=links,
        stac_extensions=list(body.get("stac_extensions") or []),
        data_file_id=data_file_id,
        updated_at=utcnow(),
    )


def _declared_bbox(bbox: Any, bounds: tuple[float, float, float, float] | None) -> Any:
    """The item's own 2D bbox (of a 2D or 3D `bbox`) when it holds the geometry's bounds, else those
    bounds: a provider's bbox is kept as published, and it still prefilters every spatial test."""
    if bounds is None or not isinstance(bbox, list) or len(bbox) not in (4, 6):
        return bounds
    if not all(isinstance(v, int | float) for v in bbox):
        return bounds
    minx, miny, maxx, maxy = (bbox[0], bbox[1], bbox[3], bbox[4]) if len(bbox) == 6 else bbox
    inside = minx <= bounds[0] and miny <= bounds[1] and maxx >= bounds[2] and maxy >= bounds[3]
    return (float(minx), float(miny), float(maxx), float(maxy)) if inside else bounds


WORLD = [[-180, -90, 180, 90]]
OPEN = [[None, None]]
"""The extent of a collection created without one, until its first item gives it a real one."""


def extent_instant(value: Any) -> dt.datetime | None:
    from catalog.stac_search import parse_instant

    try:
        return parse_instant(value, "extent") if isinstance(value, str) else None
    except InvalidInput:
        return None


def _stamp(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def extend_extent(
    body: dict[str, Any],
    bbox: tuple[float, float, float, float] | None,
    start: dt.datetime | None,
    end: dt.datetime | None,
    *,
    replace_unset: bool,
) -> dict[str, Any]:
    """The collection's JSON with its overall extent (the first bbox and interval) grown to cover
    `bbox` and `start`…`end`. `replace_unset`: a whole-world bbox and an open interval (what a
    collection created without an extent has) are replaced rather than grown."""
    extent = dict(body.get("extent") or {})
    spatial = dict(extent.get("spatial") or {})
    temporal = dict(extent.get("temporal") or {})
    boxes = [list(b) for b in spatial.get("bbox") or []]
    intervals = [list(i) for i in temporal.get("interval") or []]
    if bbox is not None:
        if not boxes or (replace_unset and boxes == WORLD) or len(boxes[0]) != 4:
            boxes[:1] = [list(bbox)]
        else:
            first = boxes[0]
            boxes[0] = [min(first[0], bbox[0]), min(first[1], bbox[1]), max(first[2], bbox[2]), max(first[3], bbox[3])]
    if start is not None or end is not None:
        if not intervals or (replace_unset and intervals == OPEN):
            intervals[:1] = [[_stamp(start) if start else None, _stamp(end) if end else None]]
        else:
            low, high = (intervals[0] + [None, None])[:2]
            first_low, first_high = extent_instant(low), extent_instant(high)
            if low is not None and start is not None and (first_low is None or start < first_low):
                low = _stamp(start)
            if high is not None and end is not None and (first_high is None or end > first_high):
                high = _stamp(end)
            intervals[0] = [low, high]
    spatial["bbox"], temporal["interval"] = boxes, intervals
    return body | {"extent": extent | {"spatial": spatial, "temporal": temporal}}


def _cover_item(session: Session, row: StacItem) -> None:
    """Grow the item's collection extent to cover it (a collection's extent never shrinks)."""
    collection = session.get(StacCollection, row.collection_id)
    if collection is None:
        return
    bbox = None if row.minx is None else (row.minx, row.miny, row.maxx, row.maxy)
    body = collection.body
    replace = False
    extent = body.get("extent") or {}
    if (extent.get("spatial") or {}).get("bbox") == WORLD or (extent.get("temporal") or {}).get("interval") == OPEN:
        others = select(StacItem.id).where(StacItem.collection_id == row.collection_id, StacItem.id != row.id)
        replace = session.exec(others.limit(1)).first() is None
    grown = extend_extent(body, bbox, row.start_at, row.end_at, replace_unset=replace)  # type: ignore[arg-type]
    if grown != body:
        collection.body, collection.updated_at = grown, utcnow()
        session.add(collection)


def get_item(session: Session, collection_id: str, item_id: str) -> StacItem:
    get_collection(session, collection_id)
    item = session.get(StacItem, (collection_id, item_id))
    if item is None:
        raise NotFound(f"no item {item_id!r} in collection {collection_id!r}")
    return item


def put_item(session: Session, row: StacItem, *, mode: str) -> StacItem:
    """`mode`: `create` (Conflict if it exists), `replace` (NotFound if it does not) or `upsert`."""
    get_collection(session, row.collection_id)
    existing = session.get(StacItem, (row.collection_id, row.id))
    if mode == "create" and existing is not None:
        raise Conflict(f"item {row.id!r} already exists in collection {row.collection_id!r}")
    if mode == "replace" and existing is None:
        raise NotFound(f"no item {row.id!r} in collection {row.collection_id!r}")
    if existing is not None:
        for column in StacItem.__table__.columns:  # type: ignore[attr-defined]
            if column.key == "data_file_id" and row.data_file_id is None:
                continue  # an edit through the API keeps the link to the harvested data file
            setattr(existing, column.key, getattr(row, column.key))
        row = existing
    session.add(row)
    _cover_item(session, row)
    session.flush()
    return row


def delete_item(session: Session, collection_id: str, item_id: str) -> None:
    session.delete(get_item(session, collection_id, item_id))


# --- What the proxy asks ------------------------------------------------------------------------


@dataclass(frozen=True)
class ResolvedAsset:
    """Where the bytes of one asset come from.

    href: the upstream href (the `alternate` entry of the asset, else the asset's own href);
    media_type: the asset's `type`, or None;
    data_file_id: the data file the item was harvested from (its content may be in the Data Store),
    or None for items created through the API.
    """

    href: str
    media_type: str | None
    data_file_id: int | None


def resolve_asset(session: Session, collection_id: str, item_id: str, asset_key: str) -> ResolvedAsset | None:
    """The upstream of `/proxy/{collection_id}/{item_id}/{asset_key}`; None when there is no such asset."""
    item = session.exec(select(StacItem).where(StacItem.collection_id == collection_id, StacItem.id == item_id)).first()
    if item is None or asset_key not in item.assets:
        return None
    asset = item.assets[asset_key]
    alternates = asset.get("alternate") or {}
    upstream = next((a.get("href") for a in alternates.values() if isinstance(a, dict) and a.get("href")), None)
    return ResolvedAsset(
        href=upstream or asset.get("href", ""), media_type=asset.get("type"), data_file_id=item.data_file_id
    )
