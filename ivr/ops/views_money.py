"""Payments and their postings, dead-letter retries, reconciliation, and file runs."""

from __future__ import annotations

from datetime import date
from typing import Any

from flask import abort, flash, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue
from sqlalchemy import func, select

from ivr.models import (
    ImportRun,
    IngestedFile,
    OutboxEntry,
    Payment,
    PostingAttempt,
    SyncRun,
)
from ivr.money.posting import retry_dead
from ivr.money.reconcile import day_bounds, parse_day
from ivr.money.reconcile import reconcile as reconcile_day
from ivr.money.reversals import after_the_call
from ivr.ops.base import bp, database, line_zone, now, today
from ivr.ops.present import dollars, scrub
from ivr.statuses import PostingStatus

# The filters offered: every payment, or one status (test payments are left out).
POSTING_STATUSES = ("", PostingStatus.POSTED, PostingStatus.QUEUED, PostingStatus.DEAD)


@bp.get("/payments")
def payments() -> tuple[str, int]:
    """Payments, newest first, with their posting status (masked: brand and last 4 only)."""
    status = request.args.get("status", "")
    errors = []
    if status not in POSTING_STATUSES:
        errors.append(f"Unknown status {status[:20]!r}; showing every payment.")
        status = ""
    day_text = request.args.get("date", "").strip()
    day: date | None = None
    if day_text:
        try:
            day = parse_day(day_text)
        except ValueError as exc:
            errors.append(f"{exc}; showing all days.")
    stmt = (select(Payment, OutboxEntry)
            .outerjoin(OutboxEntry, OutboxEntry.payment_id == Payment.id)
            .order_by(Payment.paid_at.desc(), Payment.id.desc()).limit(200))
    if status:
        stmt = stmt.where(Payment.posting_status == status)
    if day is not None:
        start, end = day_bounds(day, line_zone())
        stmt = stmt.where(Payment.paid_at >= start, Payment.paid_at < end)
    with database().session() as db:
        rows = db.execute(stmt).all()
        counts = {str(status): int(count) for status, count in db.execute(
            select(Payment.posting_status, func.count()).group_by(Payment.posting_status))}
    return render_template("ops/payments.html", title="Payments", rows=rows, status=status,
                           statuses=POSTING_STATUSES, counts=counts, day=day_text,
                           errors=errors), 400 if errors else 200


@bp.get("/payments/<row_id:payment_id>")
def payment(payment_id: int) -> str:
    """One payment and every try at posting it."""
    with database().session() as db:
        found = db.get(Payment, payment_id)
        if found is None:
            abort(404)
        entry = db.scalar(select(OutboxEntry).where(OutboxEntry.payment_id == payment_id))
        attempts = list(db.scalars(select(PostingAttempt)
                                   .where(PostingAttempt.outbox_id == entry.id)
                                   .order_by(PostingAttempt.at, PostingAttempt.id))) \
            if entry else []
        after = after_the_call(db, found)
    return render_template("ops/payment.html", title=f"Payment {payment_id}", payment=found,
                           entry=entry, attempts=attempts, after=after)


@bp.post("/outbox/<row_id:outbox_id>/retry")
def outbox_retry(outbox_id: int) -> ResponseReturnValue:
    """Queue a dead-lettered posting again (after the cause was fixed)."""
    with database().session() as db:
        ok = retry_dead(db, outbox_id, now())
    if ok:
        flash(f"Posting {outbox_id} is queued again; the worker posts it on its next pass.",
              "success")
    else:
        flash(f"Posting {outbox_id} is not dead-lettered (already retried or posted?); "
              "nothing changed.", "error")
    back = request.form.get("back", "")
    if not back.startswith("/ops/") or "//" in back:
        back = url_for("ops.payments", status=PostingStatus.DEAD)
    return redirect(back)


@bp.get("/reconcile")
def reconcile() -> tuple[str, int]:
    """A day's payments captured against posted, queued and dead-lettered."""
    day_text = request.args.get("date", "").strip()
    error = ""
    day = today()
    if day_text:
        try:
            day = parse_day(day_text)
        except ValueError as exc:
            error = f"{exc}; showing today."
    with database().session() as db:
        report = reconcile_day(db, day, line_zone())
    return render_template("ops/reconcile.html", title="Reconciliation", report=report,
                           day=day, error=error), 400 if error else 200


def file_entries(files: Any) -> list[str]:
    """A sync run's list of files as lines (whatever shape the runner stored)."""
    lines = []
    for item in files if isinstance(files, list) else []:
        if isinstance(item, dict):
            parts = [f"{key}: {_value(key, value)}" for key, value in item.items()
                     if key != "sha256"]
            lines.append(scrub(", ".join(parts), 500))
        else:
            lines.append(scrub(str(item), 500))
    return lines


def _value(key: str, value: Any) -> str:
    if key.endswith("_cents") and isinstance(value, int):
        return dollars(value)
    return str(value)


@bp.get("/files")
def files() -> str:
    """File runs: pulls and pushes, the files seen, and account imports with their rejects."""
    with database().session() as db:
        runs = list(db.scalars(select(SyncRun).order_by(SyncRun.started_at.desc(),
                                                        SyncRun.id.desc()).limit(50)))
        ingested = list(db.scalars(select(IngestedFile).order_by(IngestedFile.seen_at.desc(),
                                                                 IngestedFile.id.desc())
                                   .limit(100)))
        imports = list(db.scalars(select(ImportRun).order_by(ImportRun.started_at.desc(),
                                                             ImportRun.id.desc()).limit(50)))
    return render_template("ops/files.html", title="File runs", runs=runs, ingested=ingested,
                           imports=imports, file_entries=file_entries)


@bp.get("/files/runs/<row_id:run_id>")
def sync_run(run_id: int) -> str:
    """One pull or push: its files and what went wrong, if anything."""
    with database().session() as db:
        run = db.get(SyncRun, run_id)
        if run is None:
            abort(404)
        ingested = list(db.scalars(select(IngestedFile).where(IngestedFile.run_id == run_id)
                                   .order_by(IngestedFile.id)))
    return render_template("ops/sync_run.html", title=f"{run.kind.title()} run {run_id}",
                           run=run, ingested=ingested, file_entries=file_entries)


@bp.get("/files/imports/<row_id:import_id>")
def import_run(import_id: int) -> str:
    """An account import's report: every rejected line and why (numbers masked)."""
    with database().session() as db:
        run = db.get(ImportRun, import_id)
        if run is None:
            abort(404)
    report = run.report if isinstance(run.report, dict) else {}
    lines = [scrub(str(line), 1000) for line in report.get("lines", [])][:2000]
    return render_template("ops/import_run.html", title=f"Import {import_id}", run=run,
                           lines=lines)
