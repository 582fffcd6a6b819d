"""The process-wide handles tasks and flows share: settings, database engine, Data Store."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import sqlalchemy as sa

from catalog.database import make_engine
from catalog.proxy import delete_stale_copies_on_commit
from catalog.settings import Settings
from catalog.store import DataStore


@dataclass(frozen=True)
class Runtime:
    settings: Settings
    engine: sa.Engine
    store: DataStore


@lru_cache(maxsize=1)
def runtime() -> Runtime:
    """Built once per process from `PDS_*` settings (a mover process lives for hours)."""
    settings = Settings()
    store = DataStore.from_settings(settings)
    engine = make_engine(settings.resolved_database_url())
    delete_stale_copies_on_commit(engine, settings.resolved_proxy_cache_dir())
    return Runtime(settings=settings, engine=engine, store=store)
