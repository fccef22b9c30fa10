"""`ivr accounts`: the account cache (file imports, phone lockouts)."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path

import click

from ivr.cli.base import load_app, require_shared_keys, yield_cpu_to_calls
from ivr.web.app import get_config, get_database


@click.group()
def accounts() -> None:
    """The account cache."""


@accounts.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--layout", default="default", show_default=True,
              help="Layout name: default (docs/files.md) or an [account.NAME] table of the "
                   "IVR_SYNC_LAYOUTS file (docs/layouts.md).")
@click.option("--partial", is_flag=True,
              help="Apply good rows even when some rows are rejected.")
def accounts_import(file: Path, layout: str, partial: bool) -> None:
    """Load an account file into the cache, all-or-nothing, with a report of rejected lines."""
    from connectors.files.layouts import DEFAULT_ACCOUNT_LAYOUT, AccountLayout
    from ivr.accounts.importer import import_account_file
    from ivr.cli.progress import terminal_progress
    from ivr.prompts.catalog import load_catalog

    app = load_app()
    # PINs in the file are hashed with IVR_PIN_KEY: every node must check them alike.
    require_shared_keys(app, ("IVR_PIN_KEY",))
    zone = load_catalog(get_config(app).prompts_dir).settings.transfer.timezone
    chosen: AccountLayout = DEFAULT_ACCOUNT_LAYOUT
    if layout != "default":
        from ivr.accounts.sync import SyncConfig, SyncError

        try:
            found = SyncConfig.from_settings(
                {**get_config(app).sync_settings, "IVR_SYNC_ACCOUNT_LAYOUT": layout})
        except SyncError as exc:
            raise click.ClickException(f"unknown layout {layout!r}: {exc}") from None
        chosen = found.account_layout
    as_of = datetime.fromtimestamp(file.stat().st_mtime, UTC)
    yield_cpu_to_calls()
    with file.open("rb") as stream, terminal_progress(f"import {file.name}") as progress:
        report = import_account_file(get_database(app), stream, chosen, str(file),
                                     partial=partial, pin_key=get_config(app).pin_key,
                                     as_of=as_of, zone=zone, progress=progress)
    for line in report.lines():
        click.echo(line)
    if not report.applied:
        sys.exit(1)


@accounts.command("unlock")
@click.argument("account_number")
def accounts_unlock(account_number: str) -> None:
    """Clear the phone lockout of an account after failed ZIP/PIN checks (e.g. after a
    representative has verified the caller)."""
    from sqlalchemy import delete

    from ivr.accounts.cache import find_by_number
    from ivr.models import VerificationFailure
    from ivr.security import mask_account

    app = load_app()
    with get_database(app).session() as session:
        account = find_by_number(session, account_number)
        if account is None:
            raise click.ClickException("no such account")
        result = session.execute(delete(VerificationFailure).where(
            VerificationFailure.account_id == account.id))
        removed = int(getattr(result, "rowcount", 0))
    click.echo(f"account {mask_account(account_number)}: {removed} failed check(s) cleared")
