"""Reconciliation: for one day, payments captured against what the accounting system has,
and money taken back (bank returns, refunds, voids) against the reversals posted."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Final
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.orm import Session

from ivr.models import OutboxEntry, Payment, Reversal
from ivr.security import mask_account
from ivr.statuses import OutboxStatus, PostingStatus


@dataclass
class Line:
    """One payment's standing."""

    payment_id: int
    account: str
    amount_cents: int
    confirmation: str
    paid_at: str
    status: str  # posted | queued | dead | missing
    detail: str = ""


@dataclass
class Report:
    """Totals per status and every payment that is not simply posted."""

    day: str
    timezone: str
    captured: int = 0
    captured_cents: int = 0
    posted: int = 0
    posted_cents: int = 0
    queued: int = 0
    queued_cents: int = 0
    dead: int = 0
    dead_cents: int = 0
    # Reversals recorded on the day (returns, refunds, voids), and those of them posted.
    reversed: int = 0
    reversed_cents: int = 0
    reversals_posted: int = 0
    reversals_posted_cents: int = 0
    differences: list[Line] = field(default_factory=list)
    unexplained: list[Line] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Nothing unexplained: every payment and reversal is posted, queued or dead-lettered
    with a reason."""
        return not self.unexplained

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        data = asdict(self)
        data["ok"] = self.ok
        return data


# The days reports and the console accept: wide enough for any line's records, narrow enough
# that a day's bounds exist in every time zone and database (date.min and date.max do not:
# their neighbouring instants overflow).
FIRST_DAY: Final = date(2000, 1, 1)
LAST_DAY: Final = date(2999, 12, 31)


def parse_day(text: str) -> date:
    """A local calendar day written like 2026-12-01, between FIRST_DAY and LAST_DAY.

    Raises ValueError with a message for the user.
    """
    try:
        day = date.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{text[:20]!r} is not a date like 2026-12-01") from None
    if not FIRST_DAY <= day <= LAST_DAY:
        raise ValueError(f"{text[:20]!r} is outside the supported dates, "
                         f"{FIRST_DAY.isoformat()} to {LAST_DAY.isoformat()}")
    return day


def day_bounds(day: date, zone: ZoneInfo) -> tuple[datetime, datetime]:
    """The UTC start and end of a local calendar day."""
    start = datetime.combine(day, time(0), tzinfo=zone).astimezone(UTC)
    end = datetime.combine(day + timedelta(days=1), time(0), tzinfo=zone).astimezone(UTC)
    return start, end


def reconcile(db: Session, day: date, zone: ZoneInfo) -> Report:
    """Compare the day's payments with their posting records."""
    start, end = day_bounds(day, zone)
    report = Report(day=day.isoformat(), timezone=str(zone))
    rows = db.execute(
        select(Payment, OutboxEntry)
        .outerjoin(OutboxEntry, OutboxEntry.payment_id == Payment.id)
        .where(Payment.paid_at >= start, Payment.paid_at < end,
               Payment.posting_status != PostingStatus.TEST)
        .order_by(Payment.paid_at, Payment.id)
    ).all()
    _reversals(db, start, end, report)
    for payment, entry in rows:
        report.captured += 1
        report.captured_cents += payment.amount_cents
        line = Line(payment_id=payment.id, account=mask_account(payment.account_number),
                    amount_cents=payment.amount_cents, confirmation=payment.confirmation_code,
                    paid_at=payment.paid_at.isoformat(), status="missing")
        if entry is None:
            line.detail = "no outbox row: this payment would never be posted"
            report.unexplained.append(line)
            continue
        # Said as the payment's own status is: "queued" while the outbox has it pending.
        line.status = (PostingStatus.QUEUED if entry.status == OutboxStatus.PENDING
                       else entry.status)
        if entry.status == OutboxStatus.POSTED:
            report.posted += 1
            report.posted_cents += payment.amount_cents
            if not entry.receipt_id:
                line.detail = "posted without a receipt id from the accounting system"
                report.unexplained.append(line)
            elif payment.posting_status != PostingStatus.POSTED:
                line.detail = f"outbox posted but payment marked {payment.posting_status}"
                report.unexplained.append(line)
            continue
        if entry.status == OutboxStatus.PENDING:
            report.queued += 1
            report.queued_cents += payment.amount_cents
            error = f"; last error: {entry.last_error[:200]}" if entry.last_error else ""
            line.detail = (f"{entry.attempts} attempt(s); "
                           f"next {entry.next_attempt_at.isoformat()}{error}")
            report.differences.append(line)
        elif entry.status == OutboxStatus.DEAD:
            report.dead += 1
            report.dead_cents += payment.amount_cents
            line.detail = f"dead-lettered: {(entry.last_error or 'no reason recorded')[:300]}"
            (report.differences if entry.last_error else report.unexplained).append(line)
        else:
            line.detail = f"unknown outbox status {entry.status!r}"
            report.unexplained.append(line)
    return report


def _reversals(db: Session, start: datetime, end: datetime, report: Report) -> None:
    """The day's reversals against their posting records (a line names the payment)."""
    rows = db.execute(
        select(Reversal, Payment, OutboxEntry)
        .join(Payment, Payment.id == Reversal.payment_id)
        .outerjoin(OutboxEntry, OutboxEntry.reversal_id == Reversal.id)
        .where(Reversal.created_at >= start, Reversal.created_at < end)
        .order_by(Reversal.created_at, Reversal.id)).all()
    for reversal, payment, entry in rows:
        report.reversed += 1
        report.reversed_cents += reversal.amount_cents
        what = f"{reversal.kind} {reversal.code}" if reversal.code else str(reversal.kind)
        line = Line(payment_id=payment.id, account=mask_account(payment.account_number),
                    amount_cents=-reversal.amount_cents,
                    confirmation=payment.confirmation_code,
                    paid_at=reversal.created_at.isoformat(), status=f"{what}: missing")
        if entry is None:
            line.detail = "no outbox row: this reversal would never be posted"
            report.unexplained.append(line)
            continue
        line.status = f"{what}: " + (PostingStatus.QUEUED if entry.status == OutboxStatus.PENDING
                                     else entry.status)
        if entry.status == OutboxStatus.POSTED:
            report.reversals_posted += 1
            report.reversals_posted_cents += reversal.amount_cents
            if not entry.receipt_id:
                line.detail = "reversal posted without a receipt id from the accounting system"
                report.unexplained.append(line)
        elif entry.status == OutboxStatus.PENDING:
            line.detail = f"reversal not posted yet: {entry.attempts} attempt(s)"
            report.differences.append(line)
        elif entry.status == OutboxStatus.DEAD and entry.last_error:
            line.detail = f"reversal dead-lettered: {entry.last_error[:300]}"
            report.differences.append(line)
        else:
            line.detail = f"reversal {entry.status} with no reason recorded"
            report.unexplained.append(line)
