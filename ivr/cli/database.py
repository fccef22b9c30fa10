"""`ivr db`: the database schema."""

from __future__ import annotations

import click

from ivr.cli.base import load_app, safe_url
from ivr.web.app import get_config, get_database


@click.group()
def db() -> None:
    """Database schema."""


@db.command("upgrade")
def db_upgrade() -> None:
    """Create or migrate the schema to the newest version."""
    app = load_app()
    get_database(app).upgrade()
    click.echo(f"database is up to date: {safe_url(get_config(app).database_url)}")
