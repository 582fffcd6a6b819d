"""Many rows into one table with one driver-level `executemany`, for registrations of large listings.

SQLAlchemy's Core insert of a list of dicts builds and converts every parameter of every row in
Python (several microseconds a value); a discovery pass that registers 100,000 files writes five
rows for each, so that alone took seconds. Here the statement is compiled once for the connection's
database, a value shared by every row (the registration time, a rule's settings) is converted once
with `convert`, and the rows go to the driver as they are.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.schema import CreateTable

from catalog.models import UTCDateTime


class BulkInsert:
    """`INSERT INTO table (columns...)` for rows given as tuples in the order of `columns`.

    Values must be what the driver takes: pass each one whose column type converts it (times,
    JSON) through `convert`. Columns left out get their scalar default (`start_count` 0, …); a
    left-out column without one is refused here rather than by the database. The statement and
    the converters are worked out once per dialect, table and columns (`_plan`).
    """

    def __init__(self, connection: sa.Connection, table: sa.Table, columns: Sequence[str]) -> None:
        self._connection = connection
        plan = _plan(connection.dialect, table, tuple(columns))
        self._sql, self._positional, self._names = plan.sql, plan.positional, plan.names
        self._processors, self._tail, self._pick = plan.processors, plan.tail, plan.pick
        self._in_order = plan.positional and not plan.tail and plan.names == list(columns)

    def convert(self, column: str, value: Any) -> Any:
        """`value` as the driver takes it for `column` (a time as SQLite text, a dict as JSON)."""
        process = self._processors[column]
        return value if process is None or value is None else process(value)

    def run(self, rows: Iterable[tuple[Any, ...]]) -> None:
        pick, tail, names = self._pick, self._tail, self._names
        params: list[Any]
        if self._in_order:  # the rows already are the statement's parameters
            params = rows if isinstance(rows, list) else list(rows)
        else:
            params = [pick(row + tail) for row in rows]
        if not self._positional:
            params = [dict(zip(names, values, strict=True)) for values in params]
        if params:
            self._connection.exec_driver_sql(self._sql, params)


@dataclass(frozen=True)
class _Plan:
    sql: str
    positional: bool
    names: list[str]
    processors: dict[str, Callable[[Any], Any] | None]
    tail: tuple[Any, ...]
    pick: Callable[[tuple[Any, ...]], Any]


@functools.lru_cache(maxsize=64)
def _plan(dialect: sa.Dialect, table: sa.Table, columns: tuple[str, ...]) -> _Plan:
    """The compiled statement, converters and row order for `columns` of `table` (compiling costs
    more than a page of a thousand rows takes to insert)."""
    compiled = sa.insert(table).compile(dialect=dialect, column_keys=list(columns))
    names = list(compiled.positiontup or []) if compiled.positional else list(compiled.bind_names.values())
    defaults: dict[str, Any] = {}
    for name in names:
        if name in columns:
            continue
        default = table.c[name].default
        if default is None or not getattr(default, "is_scalar", False):
            raise ValueError(f"{table.name}.{name} has no scalar default: give it in the columns")
        defaults[name] = default.arg  # type: ignore[attr-defined]
    processors = {name: _processor(table.c[name].type, dialect) for name in names}
    # Each row, with the defaults appended, is put in the statement's order by one itemgetter.
    missing = [name for name in names if name not in columns]
    tail = tuple(
        defaults[name] if processors[name] is None or defaults[name] is None else processors[name](defaults[name])  # type: ignore[misc]
        for name in missing
    )
    where = {name: i for i, name in enumerate([*columns, *missing])}
    picker = operator.itemgetter(*(where[name] for name in names))
    # itemgetter of one index gives the value itself, not a 1-tuple
    pick: Callable[[tuple[Any, ...]], Any] = picker if len(names) > 1 else lambda row: (picker(row),)
    return _Plan(compiled.string, bool(compiled.positional), names, processors, tail, pick)


def _processor(column_type: Any, dialect: sa.Dialect) -> Callable[[Any], Any] | None:
    """How a value of `column_type` goes to the driver. SQLite's DATETIME is text
    `YYYY-MM-DD HH:MM:SS.ffffff`; SQLAlchemy writes it field by field (about 2 µs), while
    `isoformat` writes the same text at a fifth of the cost — a registration converts one time
    per listed file, for its source row and its dedupe key."""
    if dialect.name == "sqlite" and isinstance(column_type, UTCDateTime):
        return _sqlite_utc_text
    processor: Callable[[Any], Any] | None = column_type.dialect_impl(dialect).bind_processor(dialect)
    return processor


def _sqlite_utc_text(value: datetime) -> str:
    if value.tzinfo is None:
        raise ValueError("naive datetime given to the database; use timezone-aware UTC times")
    return value.astimezone(UTC).isoformat(" ", "microseconds")[:26]  # without the "+00:00"


class StagedRows:
    """Rows given once, to fill several tables from.

    They go into a temporary table (`staging`, a `TEMPORARY` table of its own metadata) with one
    `executemany`, and each table is then filled from it by one INSERT … SELECT, which copies inside
    the database: no value of any row passes through Python or the driver again. On SQLite that
    costs about half an `executemany` per table. The temporary table belongs to the connection; it is
    made the first time and emptied each time rows are staged.
    """

    def __init__(self, connection: sa.Connection, staging: sa.Table) -> None:
        self._connection, self.staging = connection, staging
        connection.execute(CreateTable(staging, if_not_exists=True))
        connection.execute(staging.delete())

    def convert(self, column: str, value: Any) -> Any:
        """`value` as the driver takes it for the staging table's `column` (see `BulkInsert.convert`)."""
        process = _plan(self._connection.dialect, self.staging, (column,)).processors[column]
        return value if process is None or value is None else process(value)

    def converter(self, column: str) -> Callable[[Any], Any]:
        """`convert` for many values of `column`, each distinct value converted once: the times of
        a listing repeat (SFTP gives whole seconds; files are written in bursts)."""
        process = _plan(self._connection.dialect, self.staging, (column,)).processors[column]
        if process is None:
            return lambda value: value
        done: dict[Any, Any] = {None: None}

        def convert(value: Any) -> Any:
            converted = done.get(value, done)
            if converted is done:
                converted = done[value] = process(value)
            return converted

        return convert

    def load(self, columns: Sequence[str], rows: Iterable[tuple[Any, ...]]) -> None:
        """Stage rows (tuples in the order of `columns`, values as the driver takes them: see
        `BulkInsert.convert`)."""
        BulkInsert(self._connection, self.staging, columns).run(rows)

    def copy_into(self, table: sa.Table, values: dict[str, Any], where: Any = None) -> None:
        """INSERT INTO `table` one row per staged row (those matching `where`): each value is a
        column of the staging table or a constant (converted by `table`'s column type); columns left
        out get their defaults."""
        selected = [
            value if isinstance(value, sa.ColumnElement) else sa.literal(value, table.c[name].type)
            for name, value in values.items()
        ]
        rows = sa.select(*selected).select_from(self.staging)
        statement = table.insert().from_select(list(values), rows if where is None else rows.where(where))
        self._connection.execute(statement)
