"""The `ivr` command: database, accounts, payments, prompts, serving and simulated calls."""

from __future__ import annotations

import json
import secrets
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
from flask import Flask

from connectors.amounts import cents_to_text
from ivr.config import ConfigError
from ivr.web.app import create_app, get_config, get_database


def _app(**overrides: Any) -> Flask:
    try:
        return create_app(overrides or None)
    except ConfigError as exc:
        raise click.ClickException(f"configuration: {exc}") from None


@click.group()
def main() -> None:
    """Pay-by-phone line for billers."""


@main.group()
def db() -> None:
    """Database schema."""


@db.command("upgrade")
def db_upgrade() -> None:
    """Create or migrate the schema to the newest version."""
    app = _app()
    get_database(app).upgrade()
    click.echo(f"database is up to date: {_safe_url(get_config(app).database_url)}")


def _safe_url(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


@main.group()
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
    from datetime import UTC, datetime

    from connectors.files.account_file import FileSummary
    from connectors.files.layouts import DEFAULT_ACCOUNT_LAYOUT, AccountLayout, iter_layout_file
    from ivr.accounts.importer import apply_account_records

    app = _app()
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
    summary = FileSummary(records=0, rejected=0, balance_sum_cents=0, trailer=None)
    with file.open("rb") as stream:
        report = apply_account_records(
            get_database(app), iter_layout_file(stream, chosen, summary), str(file),
            partial=partial, pin_key=get_config(app).pin_key, summary=summary, as_of=as_of)
    for line in report.lines():
        click.echo(line)
    if not report.applied:
        sys.exit(1)


@main.group()
def payments() -> None:
    """Payments taken on the line."""


@payments.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--limit", default=100, show_default=True)
def payments_list(as_json: bool, limit: int) -> None:
    """List payments, newest first (masked: last 4 digits only)."""
    from ivr.money.payments import payments_for_listing
    from ivr.security import mask_account

    app = _app()
    with get_database(app).session() as session:
        rows = [{
            "paid_at": p.paid_at.isoformat(), "account": mask_account(p.account_number),
            "amount": cents_to_text(p.amount_cents),
            "fee": cents_to_text(p.fee_cents), "method": p.method,
            "card_brand": p.card_brand, "last4": p.card_last4 or p.bank_last,
            "confirmation": p.confirmation_code, "posting": p.posting_status,
            "call_sid": p.call_sid,
        } for p in payments_for_listing(session, limit)]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo("no payments")
    for r in rows:
        click.echo(f"{r['paid_at']}  {r['account']:>14}  ${r['amount']:>10}  fee ${r['fee']}  "
                   f"{r['method']:<4} {r['card_brand'] or '':<10} ...{r['last4'] or '':<4}  "
                   f"{r['confirmation']}  {r['posting']}")




@main.group()
def prompts() -> None:
    """The prompt catalog."""


@prompts.command("check")
@click.option("--dir", "directory", type=click.Path(file_okay=False, path_type=Path),
              help="Prompts directory (default: IVR_PROMPTS_DIR or the repo's prompts/).")
def prompts_check(directory: Path | None) -> None:
    """Validate wording and settings: ids, placeholders, keys, SSML, audio files."""
    from ivr.config import load_config
    from ivr.prompts.catalog import check_catalog
    from ivr.prompts.ids import PROMPT_PARAMS

    try:
        target = directory or load_config().prompts_dir
    except ConfigError as exc:
        raise click.ClickException(f"configuration: {exc}") from None
    problems = check_catalog(target, PROMPT_PARAMS)
    for problem in problems:
        click.echo(problem, err=True)
    if problems:
        raise click.ClickException(f"{len(problems)} problem(s) in {target}")
    click.echo(f"prompts OK: {target}")


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
@click.option("--workers", default=2, show_default=True, type=int)
@click.option("--threads", default=8, show_default=True, type=click.IntRange(1, 64),
              help="Request threads per worker.")
def serve(host: str, port: int, workers: int, threads: int) -> None:
    """Serve the webhook app with gunicorn."""
    from ivr.web.server import run_gunicorn

    # With the served app's database timeouts: a database that does not answer must not
    # hang the start either.
    app = _app(serve_threads=threads)
    config = get_config(app)
    if not config.twilio_auth_token and not config.allow_unsigned:
        raise click.ClickException(
            "IVR_TWILIO_AUTH_TOKEN is required to serve calls "
            "(or IVR_ALLOW_UNSIGNED=1 for a local demo only)")
    if config.allow_unsigned:
        if host not in {"127.0.0.1", "localhost", "::1"}:
            raise click.ClickException(
                f"IVR_ALLOW_UNSIGNED=1 accepts forged webhooks: serve it on 127.0.0.1 only, "
                f"not {host}")
        click.secho("WARNING: IVR_ALLOW_UNSIGNED=1 -- webhooks are NOT authenticated. "
                    "Local demos only.", fg="red", bold=True, err=True)
    if not config.public_base_url.startswith("https://"):
        # <Pay> needs absolute https action URLs, and Twilio signs the public URL.
        click.secho("WARNING: IVR_PUBLIC_BASE_URL is not an https:// URL: <Pay> will not work "
                    "with real calls, and signatures behind a proxy will not validate.",
                    fg="yellow", err=True)
    from ivr.prompts.catalog import CatalogError, PromptStore

    store: PromptStore = app.extensions["ivr.prompts.catalog"]
    try:
        catalog = store.get()  # fail now, not on the first caller
    except CatalogError as exc:
        raise click.ClickException(f"prompts in {config.prompts_dir}: {exc}") from None
    store.wait_until_kept(timeout=5)  # the first good version is shared before serving
    if store.problems:
        click.secho(f"WARNING: prompts in {config.prompts_dir} are broken; serving the last good "
                    f"version {catalog.version} until they are fixed (ivr prompts check):\n  "
                    + "\n  ".join(store.problems), fg="red", bold=True, err=True)
    run_gunicorn(host, port, workers, threads)


@main.command()
@click.option("--url", help="Base URL of a running line (default: in-process).")
@click.option("--token", envvar="IVR_TWILIO_AUTH_TOKEN",
              help="Auth token to sign with (default: IVR_TWILIO_AUTH_TOKEN).")
@click.option("--from", "from_number", default="+15555550123", show_default=True)
@click.option("--to", "to_number", default="+15555550100", show_default=True)
@click.option("--press", help='Keys for each prompt, space-separated: "1 1 60614 1 1". '
                              '"-" is silence, "hangup" hangs up.')
@click.option("--card", "cards", multiple=True,
              help="Card number for each card <Pay>, in order (test numbers only; "
                   "default 4111111111111111).")
@click.option("--bank", "banks", multiple=True,
              help="Bank account number for each bank <Pay> (default 123456789).")
@click.option("--json", "as_json", is_flag=True, help="Print the transcript as JSON.")
@click.option("--post", is_flag=True,
              help="In process, treat the simulated payment as real: post it to "
                   "IVR_ACCOUNTING and include it in confirmation files. Without it the "
                   "payment is marked test and never reaches the biller's books.")
def call(url: str | None, token: str | None, from_number: str, to_number: str,
         press: str | None, cards: tuple[str, ...], banks: tuple[str, ...],
         as_json: bool, post: bool) -> None:
    """Place a simulated call, interactive unless --press is given."""
    from ivr.simulator import FlaskTransport, HttpTransport, Transport

    transport: Transport
    if url:
        if not token:
            raise click.ClickException("--token or IVR_TWILIO_AUTH_TOKEN is needed to sign")
        transport = HttpTransport(token)
        base_url = url.rstrip("/")
    else:
        # In process the simulator and app share a throwaway token: requests are still signed.
        token = secrets.token_hex(16)
        overrides: dict[str, Any] = {"twilio_auth_token": token, "allow_unsigned": False,
                                     "log_level": "WARNING"}
        if not post:
            overrides["accounting"] = "none"
            overrides["simulated"] = True
        app = _app(**overrides)
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
            caller = ScriptedCaller(press.split(), cards=cards or ("4111111111111111",),
                                    bank_accounts=banks or ("123456789",))
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


@main.command()
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
    from ivr.demo import DEMO_CALLER, DEMO_LINE, DEMO_PRESSES, seed
    from ivr.simulator import FlaskTransport
    from ivr.web.app import default_database_url

    token = secrets.token_hex(16)
    if database is None:
        probe = Flask("ivr")  # only for its instance folder
        demo_file = Path(probe.instance_path) / "demo.sqlite3"
        # A fresh demo every time: the scripted call expects the accounts as seeded.
        for leftover in (demo_file, demo_file.with_name("demo.sqlite3-wal"),
                         demo_file.with_name("demo.sqlite3-shm")):
            leftover.unlink(missing_ok=True)
        database = default_database_url(probe.instance_path).replace("ivr.sqlite3",
                                                                       "demo.sqlite3")
    app = _app(twilio_auth_token=token, allow_unsigned=False, log_level="WARNING",
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
        click.echo(_DEMO_INTRO.format(db=_safe_url(config.database_url)))
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


def _accounting_or_fail(app: Flask) -> Any:
    accounting = app.extensions.get("ivr.money.accounting")
    if accounting is None:
        raise click.ClickException(
            "IVR_ACCOUNTING is 'none': set it to tryton, hledger or webhook "
            "(see docs/connectors.md)")
    return accounting


@main.command()
@click.option("--once", is_flag=True, help="Drain what is due, then exit.")
@click.option("--idle", default=1.0, show_default=True, help="Seconds to sleep when idle.")
def worker(once: bool, idle: float) -> None:
    """Post queued payments to the accounting system (safe to run as several processes)."""
    import signal

    from ivr.money.posting import run_worker

    app = _app()
    accounting = _accounting_or_fail(app)
    stop = {"now": False}

    def _stop(_signum: int, _frame: object) -> None:
        stop["now"] = True  # finish the current post, then leave

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    stats = run_worker(get_database(app), accounting.connector, get_config(app), once=once,
                       idle_sleep=idle, should_stop=lambda: stop["now"])
    click.echo(f"posted {stats.posted}, retried {stats.retried}, dead {stats.dead}")


@main.group()
def outbox() -> None:
    """Payments waiting to be posted, and dead letters."""


@outbox.command("list")
@click.option("--status", type=click.Choice(["pending", "posted", "dead"]))
@click.option("--json", "as_json", is_flag=True)
def outbox_list(status: str | None, as_json: bool) -> None:
    """List outbox rows (newest first)."""
    from sqlalchemy import select

    from ivr.models import OutboxEntry
    from ivr.security import mask_account

    app = _app()
    with get_database(app).session() as session:
        stmt = select(OutboxEntry).order_by(OutboxEntry.id.desc()).limit(200)
        if status:
            stmt = stmt.where(OutboxEntry.status == status)
        rows: list[dict[str, Any]] = [{
            "id": e.id, "status": e.status, "attempts": e.attempts,
            "account": mask_account(e.payment.account_number),
            "amount": cents_to_text(e.payment.amount_cents),
            "confirmation": e.payment.confirmation_code, "receipt_id": e.receipt_id,
            "next_attempt_at": e.next_attempt_at.isoformat(), "last_error": e.last_error,
        } for e in session.scalars(stmt)]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for r in rows:
        click.echo(f"{r['id']:>6} {r['status']:<8} {r['attempts']:>3} tries  {r['account']:>14} "
                   f"${r['amount']:>10}  {r['confirmation']}  {r['receipt_id'] or ''}  "
                   f"{(r['last_error'] or '')[:80]}")


@outbox.command("retry")
@click.argument("outbox_id", type=int)
def outbox_retry(outbox_id: int) -> None:
    """Queue a dead-lettered payment again (after fixing what the system refused)."""
    from ivr.models import utcnow
    from ivr.money.posting import retry_dead

    app = _app()
    with get_database(app).session() as session:
        if not retry_dead(session, outbox_id, utcnow()):
            raise click.ClickException(f"outbox row {outbox_id} is not dead-lettered")
    click.echo(f"outbox row {outbox_id} queued again")


@main.command()
@click.option("--date", "day", required=True, help="Local date, YYYY-MM-DD.")
@click.option("--json", "as_json", is_flag=True)
def reconcile(day: str, as_json: bool) -> None:
    """Payments captured, posted, queued and dead-lettered on a day; exit 1 if unexplained."""
    from ivr.money.reconcile import parse_day
    from ivr.money.reconcile import reconcile as run
    from ivr.prompts.catalog import load_catalog

    try:
        when = parse_day(day)
    except ValueError as exc:
        raise click.ClickException(f"--date: {exc}") from None
    app = _app()
    zone = load_catalog(get_config(app).prompts_dir).settings.transfer.timezone
    with get_database(app).session() as session:
        report = run(session, when, zone)
    if as_json:
        click.echo(json.dumps(report.as_dict(), indent=2))
    else:
        click.echo(f"{report.day} ({report.timezone}): captured {report.captured} "
                   f"(${cents_to_text(report.captured_cents)}), posted {report.posted} "
                   f"(${cents_to_text(report.posted_cents)}), queued {report.queued} "
                   f"(${cents_to_text(report.queued_cents)}), dead {report.dead} "
                   f"(${cents_to_text(report.dead_cents)})")
        for line in report.differences:
            click.echo(f"  {line.status:<7} #{line.payment_id} {line.account} "
                       f"${cents_to_text(line.amount_cents)} {line.confirmation}: {line.detail}")
        for line in report.unexplained:
            click.echo(f"  UNEXPLAINED #{line.payment_id} {line.account} "
                       f"${cents_to_text(line.amount_cents)} {line.confirmation}: {line.detail}")
    if not report.ok:
        sys.exit(1)


@main.group()
def sync() -> None:
    """Scheduled file exchange with the biller (SFTP or a folder)."""


def _sync_setup() -> tuple[Flask, Any]:
    from ivr.accounts.sync import SyncConfig, SyncError

    app = _app()
    try:
        return app, SyncConfig.from_settings(get_config(app).sync_settings)
    except SyncError as exc:
        raise click.ClickException(str(exc)) from None


@sync.command("pull")
def sync_pull() -> None:
    """Fetch new account files from IVR_SYNC_INBOX_URL and apply each all-or-nothing."""
    from connectors.files.transport import TransferError
    from ivr.accounts.sync import SyncError, pull

    app, config = _sync_setup()
    try:
        results = pull(get_database(app), config, pin_key=get_config(app).pin_key)
    except (SyncError, TransferError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    for result in results:
        line = f"{result.name}: {result.outcome}"
        if result.report:
            line += f" ({result.report.records} accounts, {result.report.rejected} rejected)"
        click.echo(line)
    if not results:
        click.echo("no files in the inbox")


@sync.command("push")
@click.option("--interval", help="Push this interval again (YYYY-MM-DD, or YYYY-MM-DDTHH:MM "
                                 "for intervals shorter than a day). Default: every closed "
                                 "interval since the last push.")
def sync_push(interval: str | None) -> None:
    """Send payment confirmation files to IVR_SYNC_OUTBOX_URL, one per interval."""
    from connectors.files.transport import TransferError
    from ivr.accounts.sync import SyncError, parse_interval, push
    from ivr.prompts.catalog import load_catalog

    app, config = _sync_setup()
    zone = load_catalog(get_config(app).prompts_dir).settings.transfer.timezone
    try:
        chosen = parse_interval(interval, config.interval_minutes, zone) if interval else None
        files = push(get_database(app), config, zone, interval=chosen)
    except (SyncError, TransferError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    for sent in files:
        click.echo(f"{sent.name}: {sent.count} payments, ${cents_to_text(sent.sum_cents)}")
    if not files:
        click.echo("nothing due: the current interval has not closed yet")


@sync.command("runs")
@click.option("--limit", default=20, show_default=True)
@click.option("--json", "as_json", is_flag=True)
def sync_runs(limit: int, as_json: bool) -> None:
    """Recent pulls and pushes."""
    from sqlalchemy import select

    from ivr.models import SyncRun

    app = _app()
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


@main.group()
def ops() -> None:
    """Ops console users (see docs/ops-console.md)."""


def _new_password(password_stdin: bool) -> str:
    if password_stdin:
        # One line: the password, without its line ending (scripts: printf '%s\n' "$pw" | ...).
        return sys.stdin.readline().rstrip("\r\n")
    password: str = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    return password


@ops.command("add-user")
@click.argument("username")
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input.")
@click.option("--reset", is_flag=True,
              help="Set a new password for an existing user and enable them again.")
def ops_add_user(username: str, password_stdin: bool, reset: bool) -> None:
    """Create a console user; the password is asked twice (or read with --password-stdin)."""
    from ivr.models import utcnow
    from ivr.ops.auth import UserError, add_user

    app = _app()
    password = _new_password(password_stdin)
    try:
        with get_database(app).session() as session:
            user = add_user(session, username, password, utcnow(), reset=reset)
            name = user.username
    except UserError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"{'password set for' if reset else 'created'} ops user {name!r}")


@ops.command("disable-user")
@click.argument("username")
def ops_disable_user(username: str) -> None:
    """Stop a user from signing in (their open sessions end at their next click)."""
    from ivr.ops.auth import disable_user

    app = _app()
    with get_database(app).session() as session:
        if not disable_user(session, username):
            raise click.ClickException(f"no ops user {username!r}")
    click.echo(f"disabled ops user {username!r}")


@accounts.command("unlock")
@click.argument("account_number")
def accounts_unlock(account_number: str) -> None:
    """Clear the phone lockout of an account after failed ZIP/PIN checks (e.g. after a
    representative has verified the caller)."""
    from sqlalchemy import delete

    from ivr.accounts.cache import find_by_number
    from ivr.models import VerificationFailure
    from ivr.security import mask_account

    app = _app()
    with get_database(app).session() as session:
        account = find_by_number(session, account_number)
        if account is None:
            raise click.ClickException("no such account")
        result = session.execute(delete(VerificationFailure).where(
            VerificationFailure.account_id == account.id))
        removed = int(getattr(result, "rowcount", 0))
    click.echo(f"account {mask_account(account_number)}: {removed} failed check(s) cleared")
