"""`ivr returns`: bank returns files and notices of change (docs/returns.md)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from ivr.cli.base import load_app
from ivr.web.app import get_config, get_database


@click.group()
def returns() -> None:
    """Bank returns and notices of change."""


@returns.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--layout", default="default", show_default=True,
              help="Layout name: default (docs/returns.md) or a [returns.NAME] table of the "
                   "IVR_SYNC_LAYOUTS file.")
def returns_import(file: Path, layout: str) -> None:
    """Apply a bank returns file, all or nothing, once; exit 1 when it is refused."""
    from ivr.accounts.sync import SyncConfig, SyncError
    from ivr.money.returns import apply_returns_file
    from ivr.prompts.catalog import load_catalog

    app = load_app()
    config = get_config(app)
    try:
        found = SyncConfig.from_settings({**config.sync_settings,
                                          "IVR_SYNC_RETURNS_LAYOUT": layout})
    except SyncError as exc:
        raise click.ClickException(f"unknown layout {layout!r}: {exc}") from None
    settings = load_catalog(config.prompts_dir).settings.returns
    report = apply_returns_file(get_database(app), file.read_bytes(), str(file), settings,
                                found.returns_layout)
    for line in report.lines():
        click.echo(line)
    if not report.applied:
        sys.exit(1)
