"""What the commands share: the app they work on, and a database URL fit to print."""

from __future__ import annotations

import contextlib
import os
from typing import Any

import click
from flask import Flask

from ivr.config import ConfigError
from ivr.web.app import create_app


def load_app(**overrides: Any) -> Flask:
    """The app on the configured settings (``overrides`` by field name); a configuration
    error ends the command with its message instead of a traceback."""
    try:
        return create_app(overrides or None)
    except ConfigError as exc:
        raise click.ClickException(f"configuration: {exc}") from None


def require_shared_keys(app: Flask, needed: tuple[str, ...] | None = None) -> None:
    """End a command that serves, posts or hashes PINs when this machine made its own keys
    on a server database (ivr.web.app.shared_keys_refusal); ``needed``: the keys it uses."""
    from ivr.web.app import shared_keys_refusal

    refusal = shared_keys_refusal(app, needed)
    if refusal:
        raise click.ClickException(refusal)


def require_current_schema(app: Flask) -> None:
    """End a command that runs the line (serves, posts) on a schema not yet migrated for
    this version: every call would otherwise end in the apology."""
    from sqlalchemy.exc import SQLAlchemyError

    from ivr.web.app import get_database

    try:
        refusal = get_database(app).schema_refusal()
    except SQLAlchemyError as exc:
        # A database down at start is the outage the line apologises through; it starts
        # as it would had the database gone down a moment later.
        click.secho(f"WARNING: the database schema could not be checked ({type(exc).__name__}"
                    "): starting anyway", fg="yellow", err=True)
        return
    if refusal:
        raise click.ClickException(refusal)


def safe_url(url: str) -> str:
    """A database URL with its password hidden."""
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


# How much an import steps back for the line on a shared machine (nice(1): 0 to 19).
IMPORT_NICENESS = 10


def yield_cpu_to_calls() -> None:
    """Run this command at a lower CPU priority: an import is a background job, and on a
    machine that also serves the webhooks, callers come first."""
    with contextlib.suppress(OSError):  # not allowed here: run at the usual priority
        os.nice(IMPORT_NICENESS)
