"""Shared by route handlers: a database session per call, opened inside sync handlers (in threads)."""

from __future__ import annotations

from contextlib import AbstractContextManager

from litestar.datastructures import State
from sqlmodel import Session

from catalog.database import session_scope


def database(state: State) -> AbstractContextManager[Session]:
    """A session committed when the block ends normally, rolled back when it raises."""
    return session_scope(state.engine)
