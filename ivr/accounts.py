"""The account cache: lookups and the verification lockout."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from ivr.models import Account, AccountPhone, VerificationFailure

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
