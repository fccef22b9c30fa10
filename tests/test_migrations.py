"""The Alembic chain builds exactly the schema the models describe, on both databases."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from ivr.db import Database
from ivr.models import Base


def test_migrations_match_models(database_url: str) -> None:
    database = Database(database_url)
    try:
        database.upgrade()
        database.upgrade()  # idempotent
        with database.engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            diff = compare_metadata(context, Base.metadata)
        assert diff == []
    finally:
        database.dispose()
