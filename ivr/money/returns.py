"""Applying a bank returns file: every row matched to its payment, all or nothing, once.

A row's confirmation number names the payment (never guessed: a number no payment of ours
carries is listed as not ours and skipped; one that several payments carry refuses the
file). Any refused row (an unknown code, a date that is not a date, an amount other than
the payment's, a return of a card payment) refuses the whole file with a report, and
nothing changes. Otherwise, in one transaction, each return is recorded through
ivr/money/reversals.py and each notice of change is stored for ops; the file's content
(SHA-256) is recorded with them, so the same file arriving again, under any name, changes
nothing, and a process killed mid-way leaves nothing half-applied.
"""

from __future__ import annotations

import hashlib
import io
from collections import Counter
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from connectors.amounts import cents_to_text
from connectors.files.returns_file import (
    DEFAULT_RETURNS_LAYOUT,
    ReturnRow,
    ReturnsFileError,
    ReturnsLayout,
    RowProblem,
    read_returns_file,
)
from ivr.db import Database
from ivr.models import ChangeNotice, Payment, ReturnsFile, Reversal
from ivr.money.reversals import ReversalError, Reverse, record_reversal
from ivr.prompts.settings import ReturnsSettings
from ivr.statuses import PostingStatus, ReversalKind

# Problems kept in full for the report.
MAX_REPORTED = 1000


@dataclass
class ReturnsReport:
    """What applying a returns file did, for the operator."""

    source: str
    applied: bool = False  # applied now, or before (already_applied)
    already_applied: bool = False  # the same content was applied before: nothing changed
    returns: int = 0
    notices: int = 0
    already_returned: int = 0  # rows for payments an earlier file returned: skipped
    not_ours: list[str] = field(default_factory=list)  # confirmation numbers, skipped
    problems: list[RowProblem] = field(default_factory=list)
    error: str | None = None
    file_id: int | None = None

    @property
    def records(self) -> int:
        """Rows applied: returns and notices of change."""
        return self.returns + self.notices

    @property
    def rejected(self) -> int:
        """Rows refused."""
        return len(self.problems)

    @property
    def run_id(self) -> int | None:
        """No account import run: a returns file is recorded in ``returns_files``."""
        return None

    def lines(self) -> list[str]:
        """The report as text lines."""
        if self.already_applied:
            return [f"{self.source}: already applied (same content): nothing changed"]
        state = "applied" if self.applied else "REFUSED, nothing changed"
        out = [f"{self.source}: {state}; {self.returns} returns, {self.notices} notices of "
               f"change, {len(self.not_ours)} not ours, {self.already_returned} already "
               f"returned, {len(self.problems)} refused rows"]
        if self.error:
            out.append(f"file error: {self.error}")
        out += [f"line {p.line}: {p.reason}" for p in self.problems[:MAX_REPORTED]]
        out += [f"not ours (no payment on this line has it): {conf}" for conf in self.not_ours]
        return out

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready (stored with the applied file)."""
        return {"source": self.source, "applied": self.applied,
                "already_applied": self.already_applied, "returns": self.returns,
                "notices": self.notices, "already_returned": self.already_returned,
                "not_ours": self.not_ours, "error": self.error,
                "problems": [{"line": p.line, "reason": p.reason}
                             for p in self.problems[:MAX_REPORTED]]}


def apply_returns_file(database: Database, data: bytes, source: str,
                       settings: ReturnsSettings,
                       layout: ReturnsLayout = DEFAULT_RETURNS_LAYOUT) -> ReturnsReport:
    """Read, check and apply a returns file's bytes in one transaction (see module doc)."""
    refused = ReturnsReport(source=source)
    rows: list[ReturnRow] = []
    try:
        for item in read_returns_file(io.BytesIO(data), layout):
            if isinstance(item, RowProblem):
                refused.problems.append(item)
            else:
                rows.append(item)
    except ReturnsFileError as exc:
        refused.error = str(exc)
        return refused
    digest = hashlib.sha256(data).hexdigest()
    try:
        return _apply_once(database, rows, list(refused.problems), digest, source, settings)
    except IntegrityError:
        # Another process applied the same content, or returned one of these payments, at
        # the same moment and committed first: ours rolled back whole. Once more, against
        # what it committed (the file is then already applied, or the payment returned).
        return _apply_once(database, rows, list(refused.problems), digest, source, settings)


def _apply_once(database: Database, rows: list[ReturnRow], problems: list[RowProblem],
                digest: str, source: str, settings: ReturnsSettings) -> ReturnsReport:
    """One try at applying the read rows, in one transaction."""
    report = ReturnsReport(source=source, problems=problems)
    with database.session() as db:
        if db.scalar(select(ReturnsFile.id).where(ReturnsFile.sha256 == digest)):
            report.applied = report.already_applied = True
            return report
        matched = _match(db, rows, report)
        if report.problems:
            db.rollback()
            return report
        applied = ReturnsFile(source=source[:500], sha256=digest)
        db.add(applied)
        db.flush()
        _record(db, matched, applied.id, settings, report)
        if report.problems:
            db.rollback()
            return report
        applied.returns, applied.notices = report.returns, report.notices
        applied.not_ours = len(report.not_ours)
        report.applied, report.file_id = True, applied.id
        applied.report = report.as_dict()
    return report


def _match(db: Session, rows: list[ReturnRow], report: ReturnsReport
           ) -> list[tuple[ReturnRow, Payment]]:
    """Each row with its one payment; problems and not-ours rows go to the report."""
    wanted = {row.confirmation_number for row in rows}
    payments: dict[str, list[Payment]] = {}
    if wanted:
        for payment in db.scalars(select(Payment).where(
                Payment.confirmation_code.in_(wanted),
                Payment.posting_status != PostingStatus.TEST)):
            payments.setdefault(payment.confirmation_code, []).append(payment)
    returned = set(db.scalars(select(Reversal.payment_id).where(
        Reversal.kind == ReversalKind.RETURN,
        Reversal.payment_id.in_([p.id for found in payments.values() for p in found]))))
    seen = Counter(row.confirmation_number for row in rows if not row.is_notice)
    matched: list[tuple[ReturnRow, Payment]] = []
    for row in rows:
        found = payments.get(row.confirmation_number, [])
        if not found:
            report.not_ours.append(row.confirmation_number)
            continue
        if len(found) > 1:
            report.problems.append(RowProblem(row.line, f"{row.confirmation_number} names "
                                              f"{len(found)} payments: not guessing which"))
            continue
        payment = found[0]
        problem = _problem(row, payment, seen)
        if problem:
            report.problems.append(RowProblem(row.line, problem))
        elif not row.is_notice and payment.id in returned:
            report.already_returned += 1
        else:
            matched.append((row, payment))
    return matched


def _problem(row: ReturnRow, payment: Payment, seen: Counter[str]) -> str | None:
    if payment.method != "ach":
        return f"{row.confirmation_number} is a {payment.method} payment, not a bank payment"
    if row.amount_cents != payment.amount_cents:
        return (f"amount {cents_to_text(row.amount_cents)} differs from payment "
                f"{row.confirmation_number}'s {cents_to_text(payment.amount_cents)}")
    if not row.is_notice and seen[row.confirmation_number] > 1:
        return f"{row.confirmation_number} is returned more than once in the file"
    # A day's slack: the payment's day is a UTC date, the bank's a local one.
    if row.return_date < payment.paid_at.date() - timedelta(days=1):
        return f"return date {row.return_date} is before the payment was taken"
    return None


def _record(db: Session, matched: list[tuple[ReturnRow, Payment]], file_id: int,
           settings: ReturnsSettings, report: ReturnsReport) -> None:
    for row, payment in matched:
        if row.is_notice:
            db.add(ChangeNotice(payment_id=payment.id, code=row.code,
                                notice_date=row.return_date, detail=row.detail,
                                returns_file_id=file_id))
            report.notices += 1
            continue
        try:
            record_reversal(db, payment, Reverse(
                kind=ReversalKind.RETURN, amount_cents=row.amount_cents,
                effective_date=row.return_date, code=row.code, reason=row.detail,
                trace_number=row.trace_number, recorded_by=f"returns file {file_id}",
                returns_file_id=file_id), settings)
        except ReversalError as exc:
            report.problems.append(RowProblem(row.line, f"{row.confirmation_number}: {exc}"))
            continue
        report.returns += 1
