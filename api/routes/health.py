"""Liveness and readiness: no credentials needed."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from litestar import get
from litestar.datastructures import State

from catalog.access import Permission
from catalog.database import read_scope


@get("/health", sync_to_thread=True, tags=["health"], permission=Permission.PUBLIC)
def health(state: State) -> dict[str, Any]:
    """`ok` when the API answers and its database does; under `pds up`, also the instance it belongs to
    (its readiness check must not be answered by another stack's API)."""
    with read_scope(state.engine) as session:  # a writer holding the database does not make it unready
        session.execute(sa.text("SELECT 1"))
    answer = {"status": "ok", "database": "ok"}
    if state.settings.instance_id:
        answer["instance"] = state.settings.instance_id
    return answer
