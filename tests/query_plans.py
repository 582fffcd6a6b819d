"""What SQLite's planner does with a query pds runs: to check a hot query reads through its index."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import sqlalchemy as sa


def sqlite_plan(engine: sa.Engine, run: Callable[[], Any], *, marker: str) -> list[str]:
    """The steps of `EXPLAIN QUERY PLAN` for the first statement `run()` executes that contains
    `marker`, with the parameters it was executed with."""
    statements: list[tuple[str, Any]] = []

    def record(connection, cursor, statement, parameters, context, executemany):
        statements.append((statement, parameters))

    sa.event.listen(engine, "before_cursor_execute", record)
    try:
        run()
    finally:
        sa.event.remove(engine, "before_cursor_execute", record)
    query, parameters = next((q, p) for q, p in statements if marker in q)
    with engine.connect() as connection:
        return [row[-1] for row in connection.exec_driver_sql(f"EXPLAIN QUERY PLAN {query}", parameters)]
