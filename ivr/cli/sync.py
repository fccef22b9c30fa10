"""`ivr sync`: the scheduled file exchange with the biller."""

from __future__ import annotations

import json
from typing import Any

import click
from flask import Flask

from connectors.amounts import cents_to_text
from ivr.cli.base import load_app, require_shared_keys, yield_cpu_to_calls
from ivr.web.app import get_config, get_database


@click.group()
def sync() -> None:
    """Scheduled file exchange with the biller (SFTP or a folder)."""


def _sync_setup() -> tuple[Flask, Any]:
    from ivr.accounts.sync import SyncConfig, SyncError

    app = load_app()
    try:
        return app, SyncConfig.from_settings(get_config(app).sync_settings)
    except SyncError as exc:
        raise click.ClickException(str(exc)) from None


@sync.command("pull")
def sync_pull() -> None:
    """Fetch new account files from IVR_SYNC_INBOX_URL and apply each all-or-nothing."""
    from connectors.files.transport import TransferError
    from ivr.accounts.importer import ImportReport
    from ivr.accounts.sync import SyncError, pull
    from ivr.cli.progress import terminal_progress
    from ivr.prompts.catalog import load_catalog

    app, config = _sync_setup()
    # PINs in the file are hashed with IVR_PIN_KEY: every node must check them alike.
    require_shared_keys(app, ("IVR_PIN_KEY",))
    catalog = load_catalog(get_config(app).prompts_dir)
    zone = catalog.settings.transfer.timezone
    yield_cpu_to_calls()
    try:
        with terminal_progress("sync pull") as progress:
            results = pull(get_database(app), config, pin_key=get_config(app).pin_key,
                           zone=zone, progress=progress, returns=catalog.settings.returns)
    except (SyncError, TransferError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    for result in results:
        line = f"{result.name}: {result.outcome}"
        if result.report:
            # Account files' lines read as they always did; returns files count returns.
            noun = "accounts" if isinstance(result.report, ImportReport) else "returns rows"
            line += f" ({result.report.records} {noun}, {result.report.rejected} rejected)"
        click.echo(line)
    if not results:
        click.echo("no files in the inbox")


@sync.command("push")
@click.option("--interval", help="Push this interval again (YYYY-MM-DD, or YYYY-MM-DDTHH:MM "
                                 "for intervals shorter than a day). Default: every closed "
                                 "interval since the last push.")
def sync_push(interval: str | None) -> None:
    """Send payment confirmation files to IVR_SYNC_OUTBOX_URL, one per interval, with the
    interval's arrangement confirmation file (docs/sync.md)."""
    from connectors.files.transport import TransferError
    from ivr.accounts.sync import SyncError, parse_interval, push
    from ivr.cli.progress import terminal_progress
    from ivr.prompts.catalog import load_catalog

    app, config = _sync_setup()
    zone = load_catalog(get_config(app).prompts_dir).settings.transfer.timezone
    try:
        chosen = parse_interval(interval, config.interval_minutes, zone) if interval else None
        with terminal_progress("sync push") as progress:
            files = push(get_database(app), config, zone, interval=chosen, progress=progress)
    except (SyncError, TransferError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    for sent in files:
        click.echo(f"{sent.name}: {sent.count} payments, ${cents_to_text(sent.sum_cents)}")
        if sent.arrangements is not None:
            made = sent.arrangements
            click.echo(f"{made.name}: {made.arrangements} arrangements, {made.rows} "
                       f"instalments, ${cents_to_text(made.sum_cents)}")
    if not files:
        click.echo("nothing due: the current interval has not closed yet")


@sync.command("runs")
@click.option("--limit", default=20, show_default=True)
@click.option("--json", "as_json", is_flag=True)
def sync_runs(limit: int, as_json: bool) -> None:
    """Recent pulls and pushes."""
    from sqlalchemy import select

    from ivr.models import SyncRun

    app = load_app()
    with get_database(app).session() as session:
        rows: list[dict[str, Any]] = [{"id": r.id, "kind": r.kind, "status": r.status,
                 "started_at": r.started_at.isoformat(),
                 "finished_at": r.finished_at.isoformat() if r.finished_at else None,
                 "files": r.files, "records": r.records, "rejected": r.rejected,
                 "detail": r.detail}
                for r in session.scalars(select(SyncRun).order_by(SyncRun.id.desc())
                                         .limit(limit))]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for r in rows:
        names = ", ".join(f["name"] for f in r["files"] if isinstance(f, dict))
        click.echo(f"{r['id']:>5} {r['kind']:<4} {r['status']:<7} {r['started_at'][:19]}  "
                   f"{r['records']:>8} records  {names}  {r['detail'][:80]}")
