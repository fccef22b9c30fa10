"""Alembic environment: runs migrations on the connection `ivr db upgrade` hands over."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from ivr.models import Base

config = context.config
target_metadata = Base.metadata


def run() -> None:
    """Run migrations online, on a given connection or one made from the configured URL."""
    connection = config.attributes.get("connection")
    if connection is not None:
        context.configure(connection=connection, target_metadata=target_metadata,
                          compare_type=True, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = create_engine(config.get_main_option("sqlalchemy.url") or "")
    with engine.connect() as conn:
        context.configure(connection=conn, target_metadata=target_metadata,
                          compare_type=True, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()
        conn.commit()


run()
