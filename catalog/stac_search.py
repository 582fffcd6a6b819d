"""STAC item search: the request (GET parameters or a POST body) checked, translated into SQL, paged by key.

Pages are keyset pages: the rows are ordered by the sort keys plus (collection, id), which is unique,
and the `next` token carries the last row's key values. A later page starts strictly after that key,
so items inserted while a client pages never shift it (no duplicates, no gaps) and page 1,000 costs
what page 1 costs; there is no offset and no cap on depth.

Geometry is filtered in two steps: the item's bounding-box columns in SQL (an index prefilter that
may let through items whose box touches the query but whose shape does not), then the exact test with
shapely on those rows. CQL2 (text and JSON) is parsed by pygeofilter and translated here into
SQLAlchemy expressions, so it runs unchanged on SQLite and PostgreSQL.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import shapely
import shapely.geometry
import sqlalchemy as sa
from sqlmodel import Session, col, select

from catalog.cql2 import Filter, parse_filter
from catalog.errors import InvalidInput
from catalog.inventory import COLUMNS, StacCollection, StacItem, bbox_overlaps

DEFAULT_LIMIT = 10
MAX_LIMIT = 10_000
"""Larger limits are clamped to this (the API says so in its conformance of the limit parameter)."""

SORTABLE = ("id", "collection", "datetime", "start_datetime", "end_datetime")


# --- Parsing the parameters ---------------------------------------------------------------------


RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")


def parse_instant(value: Any, what: str) -> datetime | None:
    """An RFC 3339 date-time with a zone; `..` or empty means open."""
    if value is None or value in ("", ".."):
        return None
    if not isinstance(value, str) or not RFC3339.match(value.strip()):
        raise InvalidInput(f"{what}: {value!r} is not an RFC 3339 date-time (e.g. 2026-11-23T12:00:00Z)")
    try:
        parsed = datetime.fromisoformat(value.strip().replace("z", "Z"))
    except ValueError:
        raise InvalidInput(f"{what}: {value!r} is not an RFC 3339 date-time (e.g. 2026-11-23T12:00:00Z)") from None
    if parsed.tzinfo is None:
        raise InvalidInput(f"{what}: {value!r} has no time zone (RFC 3339 needs Z or an offset)")
    return parsed


def parse_datetime(value: Any) -> tuple[datetime | None, datetime | None] | None:
    """`instant`, `start/end`, `../end`, `start/..` (open ends may also be empty)."""
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise InvalidInput(f"datetime must be a string, not {value!r}")
    if "/" not in value:
        instant = parse_instant(value, "datetime")
        if instant is None:
            raise InvalidInput("datetime: '..' alone is not an interval")
        return instant, instant
    start_text, _, end_text = value.partition("/")
    start, end = parse_instant(start_text, "datetime start"), parse_instant(end_text, "datetime end")
    if start is None and end is None:
        raise InvalidInput("datetime: an interval needs at least one closed end")
    if start and end and start > end:
        raise InvalidInput(f"datetime: the interval starts after it ends ({value})")
    return start, end


def parse_bbox(value: Any) -> tuple[float, float, float, float] | None:
    """4 numbers (or 6, with heights, which are ignored), as a list or comma-separated."""
    if value is None or value == "" or value == []:
        return None
    parts = value.split(",") if isinstance(value, str) else value
    if not isinstance(parts, list | tuple) or len(parts) not in (4, 6):
        raise InvalidInput(f"bbox must have 4 (or 6) numbers: minx,miny,maxx,maxy — not {value!r}")
    try:
        numbers = [float(p) for p in parts]
    except (TypeError, ValueError):
        raise InvalidInput(f"bbox must be numbers, not {value!r}") from None
    minx, miny, maxx, maxy = numbers[:2] + numbers[3:5] if len(numbers) == 6 else numbers
    if not (-90 <= miny <= maxy <= 90):
        raise InvalidInput(f"bbox latitudes must be within -90..90 with south <= north, not {value!r}")
    if not (-180 <= minx <= 180 and -180 <= maxx <= 180):
        raise InvalidInput(f"bbox longitudes must be within -180..180, not {value!r}")
    if minx > maxx:
        raise InvalidInput(f"bbox crossing the antimeridian (minx > maxx) is not supported: {value!r}")
    return minx, miny, maxx, maxy


def parse_geometry(value: Any, what: str = "intersects") -> shapely.Geometry:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            raise InvalidInput(f"{what} must be a GeoJSON geometry") from None
    if not isinstance(value, dict) or "type" not in value:
        raise InvalidInput(f"{what} must be a GeoJSON geometry object")
    try:
        geometry = shapely.geometry.shape(value)
    except Exception as exc:  # shapely raises several kinds for malformed GeoJSON
        raise InvalidInput(f"{what} is not a valid GeoJSON geometry: {exc}") from exc
    if geometry.is_empty:
        raise InvalidInput(f"{what} is an empty geometry")
    return geometry


def geometry_bounds(geojson: dict[str, Any]) -> tuple[float, float, float, float]:
    minx, miny, maxx, maxy = parse_geometry(geojson, "geometry").bounds
    return float(minx), float(miny), float(maxx), float(maxy)


def parse_limit(value: Any) -> int:
    if value is None or value == "":
        return DEFAULT_LIMIT
    try:
        limit = int(value)
    except (TypeError, ValueError):
        raise InvalidInput(f"limit must be a positive integer, not {value!r}") from None
    if limit <= 0:
        raise InvalidInput(f"limit must be a positive integer, not {limit}")
    return min(limit, MAX_LIMIT)


def _strings(value: Any, what: str) -> list[str]:
    if value is None or value == "":
        return []
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
        raise InvalidInput(f"{what} must be a list of strings")
    return [i.strip() for i in items if i.strip()]


def parse_sortby(value: Any) -> list[tuple[str, bool]]:
    """`-datetime,+id` (GET) or `[{"field": ..., "direction": "asc"|"desc"}]` (POST) → [(field, descending)]."""
    if value is None or value == "" or value == []:
        return []
    if isinstance(value, str):
        terms = [(t.strip().lstrip("+"), t.strip().startswith("-")) for t in value.split(",") if t.strip()]
        terms = [(name.lstrip("-"), desc) for name, desc in terms]
    elif isinstance(value, list):
        terms = []
        for term in value:
            if not isinstance(term, dict) or "field" not in term:
                raise InvalidInput('sortby must be a list of {"field": ..., "direction": "asc" | "desc"}')
            direction = str(term.get("direction", "asc")).lower()
            if direction not in ("asc", "desc"):
                raise InvalidInput(f"sortby direction must be asc or desc, not {direction!r}")
            terms.append((str(term["field"]), direction == "desc"))
    else:
        raise InvalidInput("sortby must be a string (GET) or a list (POST)")
    result = []
    for name, desc in terms:
        short = name.removeprefix("properties.")
        if short not in SORTABLE:
            raise InvalidInput(f"cannot sort by {name!r}: sortable fields are {', '.join(SORTABLE)}")
        result.append((short, desc))
    return result


@dataclass
class Fields:
    """The fields extension: dotted paths to include and exclude (exclude wins for the same path)."""

    include: list[str] | None = None
    """None: not given (the whole item minus `exclude`); a list (even empty): the default fields plus these."""
    exclude: list[str] = field(default_factory=list)


def parse_fields(value: Any) -> Fields | None:
    if value is None:
        return None
    if isinstance(value, str):
        include: list[str] = []
        exclude: list[str] = []
        for term in (t.strip() for t in value.split(",")):
            if term.startswith("-"):
                exclude.append(term[1:])
            elif term:
                include.append(term.lstrip("+"))
        return Fields(include if include or not exclude else None, exclude)
    if isinstance(value, dict):
        include_given = "include" in value
        return Fields(
            _strings(value.get("include"), "fields.include") if include_given else None,
            _strings(value.get("exclude"), "fields.exclude"),
        )
    raise InvalidInput('fields must be a string (GET) or {"include": [...], "exclude": [...]} (POST)')


# --- The request --------------------------------------------------------------------------------


@dataclass
class SearchRequest:
    collections: list[str] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)
    bbox: tuple[float, float, float, float] | None = None
    intersects: shapely.Geometry | None = None
    time_range: tuple[datetime | None, datetime | None] | None = None
    filter: Filter | None = None
    sortby: list[tuple[str, bool]] = field(default_factory=list)
    fields: Fields | None = None
    limit: int = DEFAULT_LIMIT
    token: list[Any] | None = None

    @classmethod
    def parse(cls, params: dict[str, Any], *, get: bool) -> SearchRequest:
        """From GET query parameters (strings) or a POST body (JSON); raises InvalidInput with the reason."""
        if params.get("bbox") not in (None, "", []) and params.get("intersects") not in (None, ""):
            raise InvalidInput("bbox and intersects cannot be used together")
        if not get:
            if isinstance(params.get("bbox"), str):
                raise InvalidInput("bbox must be a JSON array of numbers in a POST search, not a string")
            if "fields" in params and not isinstance(params["fields"], dict):
                raise InvalidInput('fields must be {"include": [...], "exclude": [...]} in a POST search')
        filter_lang = params.get("filter-lang") or params.get("filter_lang")
        return cls(
            collections=_strings(params.get("collections"), "collections"),
            ids=_strings(params.get("ids"), "ids"),
            bbox=parse_bbox(params.get("bbox")),
            intersects=parse_geometry(params["intersects"]) if params.get("intersects") not in (None, "") else None,
            time_range=parse_datetime(params.get("datetime")),
            filter=parse_filter(params.get("filter"), filter_lang),
            sortby=parse_sortby(params.get("sortby")),
            fields=parse_fields(params.get("fields")),
            limit=parse_limit(params.get("limit")),
            token=decode_token(params.get("token")),
        )


def encode_token(values: list[Any]) -> str:
    plain = json.dumps([v.isoformat() if isinstance(v, datetime) else v for v in values])
    return base64.urlsafe_b64encode(plain.encode()).decode().rstrip("=")


def decode_token(token: Any) -> list[Any] | None:
    if token is None or token == "":
        return None
    try:
        text = base64.urlsafe_b64decode(str(token) + "=" * (-len(str(token)) % 4)).decode()
        values = json.loads(text)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise InvalidInput("token is not one this API wrote (take it from a next link)") from None
    if not isinstance(values, list):
        raise InvalidInput("token is not one this API wrote (take it from a next link)")
    return values


def _order(request: SearchRequest) -> list[tuple[Any, bool]]:
    """The sort keys, then (collection, id) so the order is total and a key names one row.

    The tie-breakers follow the first key's direction: with one direction throughout, the keyset index
    (datetime, collection_id, id) serves the order read forwards or backwards, and the page boundary is
    one row-value comparison the database can seek to.
    """
    keys = request.sortby or [("datetime", True)]
    names = [name for name, _ in keys]
    keys = keys + [(name, keys[0][1]) for name in ("collection", "id") if name not in names]
    return [(COLUMNS[name], desc) for name, desc in keys]


def _after(order: list[tuple[Any, bool]], token: list[Any]) -> Any:
    """Rows strictly after the token's key in this order: (a > x) or (a = x and (b > y or …))."""
    if len(token) != len(order):
        raise InvalidInput("token does not match this search's sortby (take it from a next link)")
    values = []
    for (column, _), value in zip(order, token, strict=True):
        if column.key in ("datetime", "start_at", "end_at"):
            value = parse_instant(value, "token")
        values.append(value)
    directions = {desc for _, desc in order}
    if len(directions) == 1:
        columns = sa.tuple_(*[column for column, _ in order])
        bound = sa.tuple_(*[sa.literal(v, type_=column.type) for (column, _), v in zip(order, values, strict=True)])
        return columns < bound if directions.pop() else columns > bound
    condition: Any = None
    for (column, desc), value in reversed(list(zip(order, values, strict=True))):
        beyond = column < value if desc else column > value
        condition = beyond if condition is None else sa.or_(beyond, sa.and_(column == value, condition))
    return condition


def _all_instants(session: Session, collections: list[str]) -> bool:
    """Whether every item searched is one instant (datetime = start = end): an index lookup."""
    table = StacItem.__table__.c  # type: ignore[attr-defined]
    ranged = sa.select(sa.literal(1)).select_from(StacItem.__table__)  # type: ignore[attr-defined]
    ranged = ranged.where(table.ranged == sa.true())
    if collections:
        ranged = ranged.where(table.collection_id.in_(collections))
    return session.execute(ranged.limit(1)).first() is None


def _where(request: SearchRequest, *, all_instants: bool = False) -> list[Any]:
    """The search's conditions. When every item is an instant, the datetime interval also bounds the
    sort column itself, so the keyset index is read from the interval's end instead of from the newest
    item (without it, page 1 of a search in the past reads every newer item first)."""
    clauses: list[Any] = []
    if request.collections:
        clauses.append(StacItem.collection_id.in_(request.collections))  # type: ignore[attr-defined]
    if request.ids:
        clauses.append(StacItem.id.in_(request.ids))  # type: ignore[attr-defined]
    if request.time_range:
        start, end = request.time_range
        if end is not None:
            clauses.append(StacItem.start_at <= end)
            if all_instants:
                clauses.append(StacItem.datetime <= end)
        if start is not None:
            clauses.append(StacItem.end_at >= start)
            if all_instants:
                clauses.append(StacItem.datetime >= start)
    shape = request.intersects
    if request.bbox is not None:
        clauses.append(bbox_overlaps(request.bbox))
    elif shape is not None:
        clauses.append(bbox_overlaps(shape.bounds))
    if request.filter is not None:
        clauses.append(request.filter.sql)
    return clauses


def _exact(request: SearchRequest) -> Callable[[StacItem], bool] | None:
    shape = shapely.geometry.box(*request.bbox) if request.bbox is not None else request.intersects
    checks: list[Callable[[StacItem], bool]] = []
    if shape is not None:
        shapely.prepare(shape)
        checks.append(
            lambda item: item.geometry is not None and shape.intersects(shapely.geometry.shape(item.geometry))
        )
    if request.filter is not None and request.filter.exact is not None:
        checks.append(request.filter.exact)
    if not checks:
        return None
    return lambda item: all(check(item) for check in checks)


def key_of(item: StacItem, order: list[tuple[Any, bool]]) -> list[Any]:
    return [getattr(item, column.key) for column, _ in order]


def search(
    session: Session, request: SearchRequest, *, hidden: Collection[str] = ()
) -> tuple[list[StacItem], str | None]:
    """One page of items and the token of the next page (None on the last page); items of `hidden`
    collections (which the caller may not read) are never among them."""
    order = _order(request)
    clauses = _where(request, all_instants=bool(request.time_range) and _all_instants(session, request.collections))
    if hidden:
        clauses.append(col(StacItem.collection_id).not_in(sorted(hidden)))
    exact = _exact(request)
    after = request.token
    page: list[StacItem] = []
    # Without an exact check one query of limit + 1 rows answers; with one, rows are read in batches
    # until the page is full, each batch continuing after the last row read.
    batch = request.limit + 1 if exact is None else max(2 * request.limit, 100)
    while True:
        statement = select(StacItem).where(*clauses)
        if after is not None:
            statement = statement.where(_after(order, after))
        statement = statement.order_by(*[c.desc() if desc else c.asc() for c, desc in order]).limit(batch)
        rows = list(session.exec(statement).all())
        for row in rows:
            if exact is None or exact(row):
                if len(page) == request.limit:
                    return page, encode_token(key_of(page[-1], order))
                page.append(row)
        if len(rows) < batch:
            return page, None
        after = key_of(rows[-1], order)


def iter_search(session: Session, request: SearchRequest) -> Iterator[StacItem]:
    """Every item a search matches, page by page (for harvesting checks and exports)."""
    while True:
        page, token = search(session, request)
        yield from page
        if token is None:
            return
        request.token = decode_token(token)


def unknown_collections(session: Session, collection_ids: list[str]) -> list[str]:
    if not collection_ids:
        return []
    known = set(session.exec(select(StacCollection.id).where(StacCollection.id.in_(collection_ids))).all())  # type: ignore[attr-defined]
    return [c for c in collection_ids if c not in known]
