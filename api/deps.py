"""Shared by route handlers: a database session per call, opened inside sync handlers (in threads)."""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Annotated

from litestar.datastructures import State
from litestar.params import Parameter
from sqlmodel import Session

from catalog import submission
from catalog.database import read_scope, session_scope


def database(state: State) -> AbstractContextManager[Session]:
    """A session committed when the block ends normally, rolled back when it raises."""
    return session_scope(state.engine)


def reading(state: State) -> AbstractContextManager[Session]:
    """A session for a handler that only reads: it does not wait behind a writer, and cannot write."""
    return read_scope(state.engine)


MAX_ID = 2**63 - 1
"""The largest id a database row can have (a signed 64-bit integer): larger ones are refused (400)."""

MAX_SECONDS = submission.MAX_SECONDS
"""The longest delay, lifetime or extension a request may ask for."""

Id = Annotated[int, Parameter(ge=1, le=MAX_ID)]
"""An id in a path or query: a positive 64-bit integer."""
OptionalId = Annotated[int | None, Parameter(ge=1, le=MAX_ID)]

MAX_SIZE = 2**63 - 1
"""The largest size in bytes a request may state."""
