"""Alembic environment: migrations run on the engine `catalog.database.migrate` hands over."""

from __future__ import annotations

from alembic import context
from sqlmodel import SQLModel

# Importing the modules registers their tables on SQLModel.metadata.
import catalog.acquisition  # noqa: F401
import catalog.continental  # noqa: F401
import catalog.inventory  # noqa: F401
import catalog.models  # noqa: F401
import catalog.outbox  # noqa: F401
import catalog.portal_models  # noqa: F401
import catalog.products  # noqa: F401
import catalog.proxy  # noqa: F401
import catalog.replication  # noqa: F401
import catalog.shared_state  # noqa: F401

target_metadata = SQLModel.metadata
engine = context.config.attributes["engine"]

with engine.connect() as connection:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        # SQLite cannot ALTER most things; batch mode rebuilds the table instead.
        render_as_batch=engine.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()
    connection.commit()
