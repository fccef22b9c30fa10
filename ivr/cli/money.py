"""`ivr payments`, `worker`, `outbox`, `reconcile`: payments taken, posted and accounted for."""

from __future__ import annotations

import json
import sys
from typing import Any

import click
from flask import Flask

from connectors.amounts import cents_to_text
from ivr.cli.base import load_app, require_current_schema, require_shared_keys
from ivr.statuses import OutboxStatus
from ivr.web.app import get_config, get_database


@click.group()
def payments() -> None:
    """Payments taken on the line."""


@payments.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--limit", default=100, show_default=True)
def payments_list(as_json: bool, limit: int) -> None:
    """List payments, newest first (masked: last 4 digits only)."""
    from ivr.money.payments import payments_for_listing
    from ivr.money.reversals import Taken, taken_back
    from ivr.security import mask_account

    app = load_app()
    with get_database(app).session() as session:
        listed = payments_for_listing(session, limit)
        taken = taken_back(session, [p.id for p in listed])
        none = Taken(0, None, None)
        rows = [{
            "paid_at": p.paid_at.isoformat(), "account": mask_account(p.account_number),
            "amount": cents_to_text(p.amount_cents),
            "fee": cents_to_text(p.fee_cents), "method": p.method,
            "card_brand": p.card_brand, "last4": p.card_last4 or p.bank_last,
            "confirmation": p.confirmation_code, "posting": p.posting_status,
            "call_sid": p.call_sid, "channel": p.channel, "agent": p.agent_username,
            "status": p.status,
            "reversed": cents_to_text(taken.get(p.id, none).cents),
            "return_code": taken.get(p.id, none).return_code,
            "return_date": _iso(taken.get(p.id, none).return_date),
        } for p in listed]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo("no payments")
    for r in rows:
        click.echo(f"{r['paid_at']}  {r['account']:>14}  ${r['amount']:>10}  fee ${r['fee']}  "
                   f"{r['method']:<4} {r['card_brand'] or '':<10} ...{r['last4'] or '':<4}  "
                   f"{r['confirmation']}  {r['posting']}{_standing(r)}"
                   + (f"  agent {r['agent']}" if r["channel"] == "agent" else ""))


def _reversed(report: Any) -> str:
    """The day's reversals, when there were any (a day without keeps its line as it was)."""
    if not report.reversed:
        return ""
    return (f"; reversed {report.reversed} (${cents_to_text(report.reversed_cents)}), "
            f"{report.reversals_posted} posted "
            f"(${cents_to_text(report.reversals_posted_cents)})")


def _iso(day: Any) -> str | None:
    return None if day is None else str(day.isoformat())


def _standing(row: dict[str, Any]) -> str:
    """A listed payment's line ends as before unless money was taken back."""
    if row["status"] == "paid" and row["reversed"] == "0.00":
        return ""
    code = f" {row['return_code']} {row['return_date']}" if row["return_code"] else ""
    return f"  {row['status']}{code} (${row['reversed']} reversed)"


def _accounting_or_fail(app: Flask) -> Any:
    accounting = app.extensions.get("ivr.money.accounting")
    if accounting is None:
        raise click.ClickException(
            "IVR_ACCOUNTING is 'none': set it to tryton, hledger or webhook "
            "(see docs/connectors.md)")
    return accounting


@click.command()
@click.option("--once", is_flag=True, help="Drain what is due, then exit.")
@click.option("--idle", default=1.0, show_default=True, help="Seconds to sleep when idle.")
def worker(once: bool, idle: float) -> None:
    """Post queued payments to the accounting system (safe to run as several processes)."""
    import signal

    from ivr.money.posting import run_worker

    app = load_app()
    require_shared_keys(app)
    require_current_schema(app)
    accounting = _accounting_or_fail(app)
    stop = {"now": False}

    def _stop(_signum: int, _frame: object) -> None:
        stop["now"] = True  # finish the current post, then leave

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    try:
        stats = run_worker(get_database(app), accounting.connector, get_config(app),
                           once=once, idle_sleep=idle, should_stop=lambda: stop["now"])
    finally:
        accounting.close()  # the connector's last duties (hledger: a journal stamp due)
    click.echo(f"posted {stats.posted}, retried {stats.retried}, dead {stats.dead}")


@click.group()
def outbox() -> None:
    """Payments and arrangements waiting to be posted, and dead letters."""


# Plain values: click shows and matches an Enum choice by its member name.
_LISTED = (OutboxStatus.PENDING, OutboxStatus.POSTED, OutboxStatus.DEAD)


def _outbox_row(entry: Any) -> dict[str, Any]:
    """One outbox row for listing: a payment (kind "payment", its amount), an arrangement
    (kind "arrangement", its terms' kind; no amount: it moves no money) or a reversal (kind
    "reversal": return, refund or void, the amount taken back, the payment's confirmation)."""
    from ivr.security import mask_account

    row: dict[str, Any] = {"id": entry.id, "status": entry.status, "attempts": entry.attempts}
    if entry.payment is not None:
        subject = entry.payment
        row.update(kind="payment", amount=cents_to_text(subject.amount_cents))
    elif entry.reversal is not None:
        subject = entry.reversal.payment
        row.update(kind="reversal", reversal=entry.reversal.kind,
                   amount=cents_to_text(entry.reversal.amount_cents))
    else:
        subject = entry.arrangement
        row.update(kind="arrangement", arrangement=subject.kind, amount=None)
    row.update({
        "account": mask_account(subject.account_number),
        "confirmation": subject.confirmation_code, "receipt_id": entry.receipt_id,
        "next_attempt_at": entry.next_attempt_at.isoformat(), "last_error": entry.last_error,
    })
    return row


@outbox.command("list")
@click.option("--status", type=click.Choice([s.value for s in _LISTED]))
@click.option("--json", "as_json", is_flag=True)
def outbox_list(status: str | None, as_json: bool) -> None:
    """List outbox rows, payments and arrangements (newest first)."""
    from sqlalchemy import select

    from ivr.models import OutboxEntry

    app = load_app()
    with get_database(app).session() as session:
        stmt = select(OutboxEntry).order_by(OutboxEntry.id.desc()).limit(200)
        if status:
            stmt = stmt.where(OutboxEntry.status == status)
        rows = [_outbox_row(e) for e in session.scalars(stmt)]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for r in rows:
        # A payment's line is as it always was; an arrangement names its kind instead.
        what = (f"${r['amount']:>10}" if r["kind"] == "payment"
                else f"{r['reversal']} -${r['amount']}" if r["kind"] == "reversal"
                else f"arrangement ({r['arrangement']})")
        click.echo(f"{r['id']:>6} {r['status']:<8} {r['attempts']:>3} tries  {r['account']:>14} "
                   f"{what}  {r['confirmation']}  {r['receipt_id'] or ''}  "
                   f"{(r['last_error'] or '')[:80]}")


@outbox.command("retry")
@click.argument("outbox_id", type=int)
def outbox_retry(outbox_id: int) -> None:
    """Queue a dead-lettered payment or arrangement again (after fixing the cause)."""
    from ivr.models import utcnow
    from ivr.money.posting import retry_dead

    app = load_app()
    with get_database(app).session() as session:
        if not retry_dead(session, outbox_id, utcnow()):
            raise click.ClickException(f"outbox row {outbox_id} is not dead-lettered")
    click.echo(f"outbox row {outbox_id} queued again")


@click.command()
@click.option("--date", "day", required=True, help="Local date, YYYY-MM-DD.")
@click.option("--json", "as_json", is_flag=True)
def reconcile(day: str, as_json: bool) -> None:
    """Payments captured, posted, queued and dead-lettered on a day, and reversals (returns,
    refunds, voids) recorded on it; exit 1 if anything is unexplained."""
    from ivr.money.reconcile import parse_day
    from ivr.money.reconcile import reconcile as run
    from ivr.prompts.catalog import load_catalog

    try:
        when = parse_day(day)
    except ValueError as exc:
        raise click.ClickException(f"--date: {exc}") from None
    app = load_app()
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
                   f"(${cents_to_text(report.dead_cents)}){_reversed(report)}")
        for line in report.differences:
            click.echo(f"  {line.status:<7} #{line.payment_id} {line.account} "
                       f"${cents_to_text(line.amount_cents)} {line.confirmation}: {line.detail}")
        for line in report.unexplained:
            click.echo(f"  UNEXPLAINED #{line.payment_id} {line.account} "
                       f"${cents_to_text(line.amount_cents)} {line.confirmation}: {line.detail}")
    if not report.ok:
        sys.exit(1)
