"""`ivr call` and `ivr demo`: simulated calls, in process or against a running line."""

from __future__ import annotations

import secrets
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
from flask import Flask

from connectors.amounts import cents_to_text
from ivr.cli.base import load_app, safe_url
from ivr.security import parse_shared_keys
from ivr.simulator.connector import DEFAULT_BANK_ACCOUNT, DEFAULT_CARD
from ivr.web.app import get_config, get_database


@click.command()
@click.option("--url", help="Base URL of a running line (default: in-process).")
@click.option("--token", envvar="IVR_TWILIO_AUTH_TOKEN",
              help="Auth token to sign with (default: IVR_TWILIO_AUTH_TOKEN).")
@click.option("--key", "shared_key", metavar="SID:SECRET",
              help="With --url: sign as a Twilio Webhook Rule does, with this webhook shared "
                   "key (HMAC-SHA256), instead of the auth token.")
@click.option("--from", "from_number", default="+15555550123", show_default=True)
@click.option("--to", "to_number", default="+15555550100", show_default=True)
@click.option("--press", help='Keys for each prompt, space-separated: "1 60614 1 1". '
                              '"-" is silence, "hangup" hangs up.')
@click.option("--card", "cards", multiple=True,
              help="Card number for each card <Pay>, in order (test numbers only; "
                   f"default {DEFAULT_CARD}).")
@click.option("--bank", "banks", multiple=True,
              help=f"Bank account number for each bank <Pay> (default {DEFAULT_BANK_ACCOUNT}).")
@click.option("--json", "as_json", is_flag=True, help="Print the transcript as JSON.")
@click.option("--post", is_flag=True,
              help="In process, treat the simulated payment as real: post it to "
                   "IVR_ACCOUNTING and include it in confirmation files. Without it the "
                   "payment is marked test and never reaches the biller's books.")
def call(url: str | None, token: str | None, shared_key: str | None, from_number: str,
         to_number: str,
         press: str | None, cards: tuple[str, ...], banks: tuple[str, ...],
         as_json: bool, post: bool) -> None:
    """Place a simulated call, interactive unless --press is given."""
    from ivr.simulator import FlaskTransport, HttpTransport, Transport

    transport: Transport
    if url:
        key = None
        if shared_key:
            try:
                [(sid, secret)] = parse_shared_keys(shared_key).items()
            except ValueError:
                raise click.ClickException("--key must be one SID:secret") from None
            key = (sid, secret)
        elif not token:
            raise click.ClickException("--token or IVR_TWILIO_AUTH_TOKEN is needed to sign")
        transport = HttpTransport(token or "", shared_key=key)
        base_url = url.rstrip("/")
    else:
        # In process the simulator and app share a throwaway token: requests are still signed.
        token = secrets.token_hex(16)
        overrides: dict[str, Any] = {"twilio_auth_token": token, "allow_unsigned": False,
                                     "log_level": "WARNING"}
        if not post:
            overrides["accounting"] = "none"
            overrides["simulated"] = True
        app = load_app(**overrides)
        get_database(app).upgrade()
        base_url = get_config(app).base_url or "http://localhost"
        transport = FlaskTransport(app, token, base_url=base_url)
    _run(transport, base_url, from_number, to_number, press, cards, banks, as_json)


def _run(transport: Any, base_url: str, from_number: str, to_number: str,
         press: str | None, cards: tuple[str, ...], banks: tuple[str, ...],
         as_json: bool) -> None:
    from ivr.simulator import InteractiveCaller, ScriptedCaller, format_event, run_call

    caller: Any
    if press is not None:
        try:
            caller = ScriptedCaller(press.split(), cards=cards or (DEFAULT_CARD,),
                                    bank_accounts=banks or (DEFAULT_BANK_ACCOUNT,))
        except ValueError as exc:
            raise click.ClickException(str(exc)) from None
    else:
        caller = InteractiveCaller()
    result = run_call(transport, caller, base_url=base_url, from_number=from_number,
                      to_number=to_number)
    if as_json:
        click.echo(result.to_json())
    elif press is not None:
        for event in result.events:
            line = format_event(event)
            if line:
                click.echo(line)
    if result.ended_by == "error":
        sys.exit(2)


@click.command()
@click.option("--press", help="Keys for a scripted call instead of the default paid call.")
@click.option("--json", "as_json", is_flag=True, help="Print the transcript as JSON.")
@click.option("--interactive/--scripted", default=None,
              help="Default: interactive at a terminal, scripted otherwise.")
@click.option("--database", help="SQLAlchemy URL for the demo "
                                 "(default: instance/demo.sqlite3, never IVR_DATABASE_URL).")
def demo(press: str | None, as_json: bool, interactive: bool | None,
         database: str | None) -> None:
    """Seed demo accounts and walk a simulated call, with no setup.

    The demo keeps to a database of its own and posts nowhere, so trying it can never put
    demo accounts or test payments into a real line's data.
    """
    from ivr.simulator import FlaskTransport
    from ivr.simulator.demo import (
        DEMO_CALLER,
        DEMO_LINE,
        DEMO_PRESSES,
        fresh_database_url,
        seed,
    )

    token = secrets.token_hex(16)
    if database is None:
        # The app's own instance folder, found as the app finds it.
        database = fresh_database_url(Path(Flask("ivr").instance_path))
    app = load_app(twilio_auth_token=token, allow_unsigned=False, log_level="WARNING",
                   database_url=database, accounting="none", simulated=True)
    demo_db = get_database(app)
    demo_db.upgrade()
    config = get_config(app)
    report = seed(demo_db, datetime.now(UTC).date(), config.pin_key)
    if not report.applied:
        raise click.ClickException("; ".join(report.lines()))
    if interactive is None:
        interactive = sys.stdin.isatty() and press is None and not as_json
    if not as_json:
        click.echo(_DEMO_INTRO.format(db=safe_url(config.database_url)))
    base_url = config.base_url or "http://localhost"
    transport = FlaskTransport(app, token, base_url=base_url)
    keys = None if interactive else (press or " ".join(DEMO_PRESSES))
    _run(transport, base_url, DEMO_CALLER, DEMO_LINE, keys, (), (), as_json)
    if not as_json:
        click.echo("\nPayments so far in the demo database:")
        with demo_db.session() as session:
            from ivr.money.payments import payments_for_listing

            for p in payments_for_listing(session, 5):
                click.echo(f"  {p.paid_at:%Y-%m-%d %H:%M}Z  account ...{p.account_number[-4:]}  "
                           f"${cents_to_text(p.amount_cents)}  {p.method} ...{p.card_last4 or ''}  "
                           f"confirmation {p.confirmation_code}  {p.posting_status}")


_DEMO_INTRO = """\
Demo line ready (database: {db}).
Demo accounts: 4401001234 (ZIP 60614, calls from +15555550123), 4401005678 (ZIP 60615,
disconnection pending), 4401009012 (ZIP 60616, in credit), 4401003456 (ZIP 60617, Spanish).
Test cards: 4111111111111111 succeeds, 4000000000000002 is declined.
"""
