"""CQL2 filters (text and JSON) as SQL: parsed by pygeofilter, translated here into SQLAlchemy.

pygeofilter's own SQLAlchemy backend needs a spatial database (GeoAlchemy2); pds runs on plain SQLite
and PostgreSQL, so the translation is ours and small: comparisons, BETWEEN, LIKE, IN, IS NULL, AND,
OR, NOT and S_INTERSECTS. Properties that are columns (id, collection, datetime, start_datetime,
end_datetime) are compared as columns; any other is read from the item's JSON properties, typed after
the literal it is compared with. S_INTERSECTS becomes a bounding-box test in SQL and an exact shapely
test on the rows that pass it (`Filter.exact`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

import shapely
import shapely.geometry
import sqlalchemy as sa
from pygeofilter import ast as cql
from pygeofilter import values as cql_values
from pygeofilter.parsers.cql2_json import parse as parse_cql2_json
from pygeofilter.parsers.cql2_text import parse as parse_cql2_text

from catalog.errors import InvalidInput
from catalog.inventory import COLUMNS, StacItem, bbox_overlaps


@dataclass
class Filter:
    """A parsed CQL2 filter: its SQL (with spatial tests as box prefilters) and the exact check, if any."""

    sql: Any
    exact: Callable[[StacItem], bool] | None


def parse_filter(value: Any, lang: str | None) -> Filter | None:
    if value is None or value == "":
        return None
    if lang is None:
        lang = "cql2-text" if isinstance(value, str) else "cql2-json"
    try:
        if lang == "cql2-text":
            if not isinstance(value, str):
                raise InvalidInput("filter-lang cql2-text needs the filter as a string")
            node = parse_cql2_text(value)
        elif lang == "cql2-json":
            node = parse_cql2_json(json.loads(value) if isinstance(value, str) else value)
        else:
            raise InvalidInput(f"filter-lang must be cql2-text or cql2-json, not {lang!r}")
    except InvalidInput:
        raise
    except Exception as exc:  # lark and pygeofilter raise many kinds on bad input
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InvalidInput(f"filter is not valid {lang}: {reason}") from exc
    translator = _CqlToSql()
    sql = translator.translate(node, positive=True)
    return Filter(sql=sql, exact=_exact_check(node) if translator.spatial else None)


def _attribute(name: str) -> str:
    return name.removeprefix("properties.")


def _literal(value: Any) -> Any:
    """Times in UTC (the columns are), dates as their midnight in UTC."""
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise InvalidInput(f"filter: the time {value.isoformat()} has no time zone")
        return value.astimezone(UTC)
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=UTC)
    return value


class _CqlToSql:
    """CQL2 AST → SQLAlchemy. Properties not mapped to a column are read from the JSON properties,
    typed after the literal they are compared with (number, string, boolean, time)."""

    def __init__(self) -> None:
        self.spatial = False

    def translate(self, node: Any, *, positive: bool) -> Any:
        if isinstance(node, cql.And):
            return sa.and_(self.translate(node.lhs, positive=positive), self.translate(node.rhs, positive=positive))
        if isinstance(node, cql.Or):
            return sa.or_(self.translate(node.lhs, positive=positive), self.translate(node.rhs, positive=positive))
        if isinstance(node, cql.Not):
            return sa.not_(self.translate(node.sub_node, positive=not positive))
        if isinstance(node, cql.Comparison):
            return self._comparison(node)
        if isinstance(node, cql.Between):
            column = self._operand(node.lhs, _literal(node.low))
            expression = column.between(_literal(node.low), _literal(node.high))
            return sa.not_(expression) if node.not_ else expression
        if isinstance(node, cql.Like):
            column = self._operand(node.lhs, "")
            pattern = node.pattern
            expression = column.like(pattern) if not node.nocase else sa.func.lower(column).like(pattern.lower())
            return sa.not_(expression) if node.not_ else expression
        if isinstance(node, cql.In):
            values = [_literal(v) for v in node.sub_nodes]
            column = self._operand(node.lhs, values[0] if values else "")
            expression = column.in_(values)
            return sa.not_(expression) if node.not_ else expression
        if isinstance(node, cql.IsNull):
            column = self._operand(node.lhs, None)
            expression = column.is_(None)
            return sa.not_(expression) if node.not_ else expression
        if isinstance(node, cql.GeometryIntersects):
            return self._intersects(node, positive=positive)
        if isinstance(node, bool):
            return sa.true() if node else sa.false()
        raise InvalidInput(f"filter: {type(node).__name__} is not supported (see /stac/conformance)")

    def _comparison(self, node: Any) -> Any:
        if isinstance(node.lhs, cql.Attribute):
            attribute, value = node.lhs, _literal(node.rhs)
            op = node.op.value
        elif isinstance(node.rhs, cql.Attribute):
            attribute, value = node.rhs, _literal(node.lhs)
            op = {"<": ">", "<=": ">=", ">": "<", ">=": "<="}.get(node.op.value, node.op.value)
        else:
            raise InvalidInput("filter: a comparison needs a property on one side")
        if isinstance(value, cql.Node):
            raise InvalidInput("filter: comparing two properties is not supported")
        column = self._operand(attribute, value)
        operations = {
            "=": column.__eq__,
            "<>": column.__ne__,
            "<": column.__lt__,
            "<=": column.__le__,
            ">": column.__gt__,
            ">=": column.__ge__,
        }
        return operations[op](value)

    def _operand(self, node: Any, example: Any) -> Any:
        if not isinstance(node, cql.Attribute):
            raise InvalidInput("filter: the left side must be a property")
        name = _attribute(node.name)
        if name in COLUMNS:
            return COLUMNS[name]
        if name in ("geometry", "bbox"):
            raise InvalidInput(f"filter: {name} can only be used in S_INTERSECTS")
        element = StacItem.__table__.c.properties[name]  # type: ignore[attr-defined]
        if isinstance(example, bool):
            return element.as_boolean()
        if isinstance(example, int | float):
            return element.as_float()
        if isinstance(example, datetime | date):
            raise InvalidInput(
                f"filter: time comparisons are supported on datetime, start_datetime and end_datetime, not {name!r}"
            )
        return element.as_string()

    def _intersects(self, node: Any, *, positive: bool) -> Any:
        if not isinstance(node.lhs, cql.Attribute) or _attribute(node.lhs.name) != "geometry":
            raise InvalidInput("filter: S_INTERSECTS needs the property geometry as its first argument")
        self.spatial = True
        if not positive:
            # Under an odd number of NOTs the prefilter must be a subset, so that its negation lets
            # through every row that may match; the exact check decides on those rows.
            return sa.false()
        minx, miny, maxx, maxy = _node_geometry(node.rhs).bounds
        return bbox_overlaps((minx, miny, maxx, maxy))


def _node_geometry(value: Any) -> shapely.Geometry:
    if isinstance(value, cql_values.Geometry):
        return shapely.geometry.shape(value.geometry)
    if isinstance(value, cql_values.Envelope):
        return shapely.geometry.box(value.x1, value.y1, value.x2, value.y2)
    raise InvalidInput("filter: S_INTERSECTS needs a geometry literal as its second argument")


def _exact_check(node: Any) -> Callable[[StacItem], bool]:
    """The filter evaluated in Python on one row, with exact geometry tests (run after the SQL prefilter)."""

    def value_of(item: StacItem, attribute: Any) -> Any:
        name = _attribute(attribute.name)
        if name in COLUMNS:
            return getattr(item, COLUMNS[name].key)
        return item.properties.get(name)

    def compare(op: str, left: Any, right: Any) -> bool:
        if left is None:
            return False
        if isinstance(right, datetime) and isinstance(left, datetime):
            pass
        try:
            return bool(
                {
                    "=": lambda: left == right,
                    "<>": lambda: left != right,
                    "<": lambda: left < right,
                    "<=": lambda: left <= right,
                    ">": lambda: left > right,
                    ">=": lambda: left >= right,
                }[op]()
            )
        except TypeError:
            return False

    def check(n: Any, item: StacItem) -> bool:
        if isinstance(n, cql.And):
            return check(n.lhs, item) and check(n.rhs, item)
        if isinstance(n, cql.Or):
            return check(n.lhs, item) or check(n.rhs, item)
        if isinstance(n, cql.Not):
            return not check(n.sub_node, item)
        if isinstance(n, cql.GeometryIntersects):
            return item.geometry is not None and shapely.geometry.shape(item.geometry).intersects(_node_geometry(n.rhs))
        # every other predicate was exact in SQL: evaluate it the same way here
        if isinstance(n, cql.Comparison):
            if isinstance(n.lhs, cql.Attribute):
                return compare(n.op.value, value_of(item, n.lhs), _literal(n.rhs))
            flipped = {"<": ">", "<=": ">=", ">": "<", ">=": "<="}.get(n.op.value, n.op.value)
            return compare(flipped, value_of(item, n.rhs), _literal(n.lhs))
        if isinstance(n, cql.Between):
            v = value_of(item, n.lhs)
            inside = v is not None and compare(">=", v, _literal(n.low)) and compare("<=", v, _literal(n.high))
            return inside != bool(n.not_)
        if isinstance(n, cql.Like):
            v = value_of(item, n.lhs)
            regex = "^" + re.escape(n.pattern).replace("%", ".*").replace("_", ".") + "$"
            found = isinstance(v, str) and re.match(regex, v, re.IGNORECASE if n.nocase else 0) is not None
            return found != bool(n.not_)
        if isinstance(n, cql.In):
            v = value_of(item, n.lhs)
            return (v in [_literal(s) for s in n.sub_nodes]) != bool(n.not_)
        if isinstance(n, cql.IsNull):
            return (value_of(item, n.lhs) is None) != bool(n.not_)
        if isinstance(n, bool):
            return n
        raise InvalidInput(f"filter: {type(n).__name__} is not supported")

    return lambda item: check(node, item)
