"""Liveness and readiness: no credentials needed."""

from __future__ import annotations

import sqlalchemy as sa
from litestar import get
from litestar.datastructures import State

from catalog.access import Permission


@get("/health", sync_to_thread=True, tags=["health"], permission=Permission.PUBLIC)
def health(state: State) -> dict[str, str]:
    """`ok` when the API answers and its database does."""
    with state.engine.connect() as connection:
        connection.execute(sa.text("SELECT 1"))
    return {"status": "ok", "database": "ok"}
