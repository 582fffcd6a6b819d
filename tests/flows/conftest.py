from __future__ import annotations

import pytest

from catalog.database import migrate
from tasks import runtime as runtime_module
from tests.conftest import database_url


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def rt(request, prefect_server, tmp_path, monkeypatch):
    """The process-wide runtime the flows use, on a fresh database (SQLite and PostgreSQL) and store,
    with a real Prefect server."""
    monkeypatch.setenv("PDS_DATA_DIR", str(tmp_path / "data"))
    if request.param == "postgres":
        monkeypatch.setenv("PDS_DATABASE_URL", database_url(request, tmp_path, "postgres"))
    monkeypatch.setenv("PDS_MOVER_POLL_SECONDS", "0.05")
    runtime_module.runtime.cache_clear()
    rt = runtime_module.runtime()
    migrate(rt.engine)
    yield rt
    runtime_module.runtime.cache_clear()
