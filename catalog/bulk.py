"""Many rows into one table with one driver-level `executemany`, for registrations of large listings.

SQLAlchemy's Core insert of a list of dicts builds and converts every parameter of every row in
Python (several microseconds a value); a discovery pass that registers 100,000 files writes five
rows for each, so that alone took seconds. Here the statement is compiled once for the connection's
database, a value shared by every row (the registration time, a rule's settings) is converted once
with `convert`, and the rows go to the driver as they are.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import sqlalchemy as sa


class BulkInsert:
    """`INSERT INTO table (columns...)` for rows given as tuples in the order of `columns`.

    Values must be what the driver takes: pass each one whose column type converts it (times,
    JSON) through `convert`. Columns left out get their scalar default (`start_count` 0, …); a
    left-out column without one is refused here rather than by the database.
    """

    def __init__(self, connection: sa.Connection, table: sa.Table, columns: Sequence[str]) -> None:
        self._connection = connection
        dialect = connection.dialect
        compiled = sa.insert(table).compile(dialect=dialect, column_keys=list(columns))
        self._sql = compiled.string
        names = list(compiled.positiontup or []) if compiled.positional else list(compiled.bind_names.values())
        self._positional = compiled.positional
        self._names = names
        defaults: dict[str, Any] = {}
        for name in names:
            if name in columns:
                continue
            default = table.c[name].default
            if default is None or not getattr(default, "is_scalar", False):
                raise ValueError(f"{table.name}.{name} has no scalar default: give it in the columns")
            defaults[name] = default.arg  # type: ignore[attr-defined]
        self._processors: dict[str, Callable[[Any], Any] | None] = {
            name: table.c[name].type.dialect_impl(dialect).bind_processor(dialect) for name in names
        }
        # Each row, with the defaults appended, is put in the statement's order by one itemgetter.
        missing = [name for name in names if name not in columns]
        self._tail = tuple(self.convert(name, defaults[name]) for name in missing)
        where = {name: i for i, name in enumerate([*columns, *missing])}
        picker = operator.itemgetter(*(where[name] for name in names))
        # itemgetter of one index gives the value itself, not a 1-tuple
        self._pick: Callable[[tuple[Any, ...]], Any] = picker if len(names) > 1 else lambda row: (picker(row),)

    def convert(self, column: str, value: Any) -> Any:
        """`value` as the driver takes it for `column` (a time as SQLite text, a dict as JSON)."""
        process = self._processors[column]
        return value if process is None or value is None else process(value)

    def run(self, rows: Iterable[tuple[Any, ...]]) -> None:
        pick, tail, names = self._pick, self._tail, self._names
        params: list[Any] = [pick(row + tail) for row in rows]
        if not self._positional:
            params = [dict(zip(names, values, strict=True)) for values in params]
        if params:
            self._connection.exec_driver_sql(self._sql, params)
