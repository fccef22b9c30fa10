"""The account cache: lookups, verification lockout, and applying account files."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import IO

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from connectors.account_file import (
    AccountFileError,
    AccountRecord,
    FileSummary,
    Rejection,
    iter_account_file,
)
from ivr.models import Account, AccountPhone, ImportRun, VerificationFailure, utcnow
from ivr.security import hash_pin

log = logging.getLogger(__name__)


def find_by_number(db: Session, account_number: str) -> Account | None:
    """The account with exactly this number."""
    return db.scalar(select(Account).where(Account.account_number == account_number))


def find_by_phone(db: Session, phone_e164: str) -> list[Account]:
    """Accounts that list this phone number (E.164)."""
    stmt = (
        select(Account)
        .join(AccountPhone, AccountPhone.account_id == Account.id)
        .where(AccountPhone.phone == phone_e164)
        .order_by(Account.id)
        .limit(2)
    )
    return list(db.scalars(stmt))


def record_verification_failure(db: Session, account_id: int, call_sid: str,
                                now: datetime) -> None:
    """Remember a failed ZIP/PIN check for the cross-call lockout."""
    db.add(VerificationFailure(account_id=account_id, call_sid=call_sid, failed_at=now))
    db.flush()


def locked_until(db: Session, account_id: int, now: datetime, *, failures: int,
                 window_minutes: int, lock_minutes: int) -> datetime | None:
    """When the account unlocks, if ``failures`` checks failed within a window; else None.

    The lock runs from the failure that reached the limit, so it expires by itself.
    """

    horizon = now - timedelta(minutes=window_minutes + lock_minutes)
    times = list(
        db.scalars(
            select(VerificationFailure.failed_at)
            .where(VerificationFailure.account_id == account_id,
                   VerificationFailure.failed_at >= horizon)
            .order_by(VerificationFailure.failed_at)
        )
    )
    window = timedelta(minutes=window_minutes)
    for i in range(failures - 1, len(times)):
        if times[i] - times[i - failures + 1] <= window:
            until = times[i] + timedelta(minutes=lock_minutes)
            if until > now:
                return until
    return None


@dataclass
class ImportReport:
    """What an import did, for the operator: counts and every rejected line with its reason."""

    source: str
    applied: bool = False
    records: int = 0
    rejections: list[Rejection] = field(default_factory=list)
    error: str | None = None

    def lines(self) -> list[str]:
        """The report as text lines."""
        out = [
            f"{self.source}: {'applied' if self.applied else 'REJECTED, cache unchanged'}; "
            f"{self.records} accounts, {len(self.rejections)} rejected lines"
        ]
        if self.error:
            out.append(f"file error: {self.error}")
        out.extend(f"line {r.line}: {r.reason}" for r in self.rejections)
        return out


def _apply_record(db: Session, record: AccountRecord, pin_iterations: int) -> None:
    account = find_by_number(db, record.account_number)
    if account is None:
        account = Account(account_number=record.account_number)
        db.add(account)
    account.customer_name = record.customer_name
    account.service_zip = record.service_zip
    if record.pin:
        account.pin_hash = hash_pin(record.pin, pin_iterations)
    else:
        account.pin_hash = None
    account.balance_due_cents = record.balance_due_cents
    account.past_due_cents = record.past_due_cents
    account.due_date = record.due_date
    account.last_payment_cents = record.last_payment_cents
    account.last_payment_date = record.last_payment_date
    account.status = record.status
    account.disconnect_date = record.disconnect_date
    account.usage_amount = record.usage_amount
    account.usage_unit = record.usage_unit
    account.usage_period_end = record.usage_period_end
    account.language = record.language
    account.payment_allowed = record.payment_allowed
    wanted = set(record.phones)
    account.phones = [p for p in account.phones if p.phone in wanted]
    have = {p.phone for p in account.phones}
    account.phones.extend(AccountPhone(phone=p) for p in record.phones if p not in have)


def import_accounts(db: Session, stream: IO[bytes], source: str, *, pin_iterations: int,
                    partial: bool = False) -> ImportReport:
    """Apply an account file to the cache, all-or-nothing unless ``partial``.

    Runs inside the caller's transaction: when any line is rejected (and not ``partial``) or
    the file itself is bad, everything is rolled back to a savepoint and the cache is unchanged.
    Accounts absent from the file are left as they are (a file may be a partial refresh).
    """
    report = ImportReport(source=source)
    summary = FileSummary(records=0, rejected=0, balance_sum_cents=0, trailer=None)
    savepoint = db.begin_nested()
    try:
        for item in iter_account_file(stream, summary):
            if isinstance(item, Rejection):
                report.rejections.append(item)
                continue
            report.records += 1
            if report.rejections and not partial:
                continue  # the file will be rejected; keep reading to report every bad line
            _apply_record(db, item, pin_iterations)
            if report.records % 500 == 0:
                db.flush()
                db.expunge_all()  # keeps memory flat on large files
    except AccountFileError as exc:
        report.error = str(exc)
    if report.error or (report.rejections and not partial):
        savepoint.rollback()
        report.applied = False
    else:
        savepoint.commit()
        report.applied = True
    db.add(ImportRun(source=source[:500], finished_at=utcnow(),
                     status="applied" if report.applied else "rejected",
                     records=report.records, rejected=len(report.rejections),
                     report={"lines": report.lines()[:1000]}))
    db.flush()
    log.info("account import", extra={"fields": {
        "source": source, "applied": report.applied, "records": report.records,
        "rejected": len(report.rejections)}})
    return report


def account_count(db: Session) -> int:
    """How many accounts the cache holds."""
    return int(db.scalar(select(func.count()).select_from(Account)) or 0)


def delete_accounts(db: Session, numbers: Iterable[str]) -> None:
    """Remove accounts by number (demo reseeding)."""
    db.execute(delete(Account).where(Account.account_number.in_(list(numbers))))
