"""`ivr arrangements`: the payment arrangements callers made."""

from __future__ import annotations

import json

import click

from ivr.cli.base import load_app
from ivr.statuses import ArrangementStatus
from ivr.web.app import get_database


@click.group()
def arrangements() -> None:
    """Payment arrangements made on the line."""


@arrangements.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--status", type=click.Choice([s.value for s in ArrangementStatus]),
              help="Only arrangements with this status.")
@click.option("--limit", default=200, show_default=True)
def arrangements_list(as_json: bool, status: str | None, limit: int) -> None:
    """List arrangements, newest first: account (masked), terms, status, confirmation."""
    from ivr.arrangements.listing import arrangements_for_listing, listing_row, terms_text

    app = load_app()
    chosen = ArrangementStatus(status) if status else None
    with get_database(app).session() as session:
        found = arrangements_for_listing(session, status=chosen, limit=limit)
        rows = [listing_row(a) for a in found]
        terms = [terms_text(a) for a in found]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo("no arrangements")
    for r, said in zip(rows, terms, strict=True):
        line = (f"{r['created_at']}  {r['account']:>14}  {r['kind']:<11} {r['status']:<6}  "
                f"{r['confirmation']}  ${r['balance']}: {said}  {r['posting']}")
        if r["end_reason"]:
            line += f"  ({r['end_reason']})"
        click.echo(line)
