"""The account cache: lookups and the verification lockout."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from ivr.db_driver import DriverStatement, ReadAhead
from ivr.db_rows import MappedRow
from ivr.db_webhook import DbHandle, session_of
from ivr.models import Account, AccountPhone, CallSession, VerificationFailure
from ivr.prompts.settings import VerificationSettings

log = logging.getLogger(__name__)


def find_by_number(db: Session, account_number: str) -> Account | None:
    """The account with exactly this number."""
    return db.scalar(select(Account).where(Account.account_number == account_number))


# The lookups every call makes, built once and run on the driver (ivr.db_driver): a
# webhook's statements cost no building, and no ORM loading.
ACCOUNT_ROW = MappedRow(Account)
_BY_PHONE = DriverStatement(
    select(*ACCOUNT_ROW.columns).join(AccountPhone, AccountPhone.account_id == Account.id)
    .where(AccountPhone.phone == bindparam("phone"))
    .order_by(Account.account_number, Account.id).limit(bindparam("limit")))


def _recent_failures(account_id: Any) -> DriverStatement:
    return DriverStatement(
        select(VerificationFailure.failed_at, VerificationFailure.caller)
        .where(VerificationFailure.account_id == account_id,
               VerificationFailure.failed_at >= bindparam("horizon"))
        .order_by(VerificationFailure.failed_at))


_RECENT_FAILURES = _recent_failures(bindparam("account_id"))
# The same, for the account of the call (read ahead with the call's load, ivr.calls.ahead).
_RECENT_FAILURES_OF_CALL = _recent_failures(
    select(CallSession.account_id).where(CallSession.call_sid == bindparam("call_sid"))
    .scalar_subquery())
# How many accounts the caller-ID lookup asks for: one is a match, two is not.
PHONE_MATCHES = 2


def find_by_phone(db: DbHandle, phone_e164: str, limit: int = PHONE_MATCHES) -> list[Account]:
    """Accounts that list this phone number (E.164), at most ``limit``, by account number."""
    # Webhooks never change phone numbers: nothing pending to flush first.
    rows = _BY_PHONE.all_in(db, {"phone": phone_e164, "limit": limit})
    return [ACCOUNT_ROW.held(db, row) for row in rows]


def phone_ahead(phone_e164: str) -> ReadAhead:
    """The caller-ID lookup, read ahead (the first webhook of a call asks it)."""
    return ReadAhead.same(_BY_PHONE, {"phone": phone_e164, "limit": PHONE_MATCHES})


def lockout_ahead(call_sid: str, now: datetime, policy: VerificationSettings) -> ReadAhead:
    """The call's account's recent failures, read ahead (``locked_until`` asks them)."""
    return ReadAhead.of_the_account(_RECENT_FAILURES_OF_CALL, call_sid, _RECENT_FAILURES,
                                    "account_id", horizon=_horizon(now, policy))


def _horizon(now: datetime, policy: VerificationSettings) -> datetime:
    """How far back failures can still lock a caller out."""
    return now - policy.lockout_window - policy.lockout_duration


def record_verification_failure(db: Session, account_id: int, call_sid: str,
                                now: datetime, caller: str = "") -> None:
    """Remember a failed ZIP/PIN check (and from which number) for the cross-call lockout."""
    db.add(VerificationFailure(account_id=account_id, call_sid=call_sid, failed_at=now,
                               caller=caller[:40]))
    db.flush()


def locked_until(db: DbHandle, account_id: int, now: datetime, caller: str,
                 policy: VerificationSettings) -> datetime | None:
    """When ``caller`` may try the account again, if failures locked them out; else None.

    A calling number is locked by its own failures. Every number not on file for the account
    is also locked by their failures together, so guessing from many phones is bounded too;
    a number on file is exempt from that, so a stranger cannot lock the owner out. Each
    lock runs from the failure that reached the limit, so it expires by itself.
    """
    # Failures are flushed as they are recorded: no flush of the call's row first, and
    # plain rows straight from the session's connection (or read ahead, after the lock).
    rows = _RECENT_FAILURES.all_in(db, {"account_id": account_id,
                                        "horizon": _horizon(now, policy)})
    if not rows:
        return None  # the common case: no failures, no lock, no need for the phones on file
    on_file = set(session_of(db).scalars(select(AccountPhone.phone)
                             .where(AccountPhone.account_id == account_id)))
    ends = [_lock_end([at for at, who in rows if who == caller], policy,
                      policy.lockout_failures)]
    if caller not in on_file:
        strangers = [at for at, who in rows if who not in on_file]
        ends.append(_lock_end(strangers, policy, policy.lockout_failures_all_callers))
    until = max((end for end in ends if end is not None), default=None)
    return until if until is not None and until > now else None


def _lock_end(times: list[datetime], policy: VerificationSettings,
              limit: int) -> datetime | None:
    """The end of the latest lock ``times`` earned: ``limit`` failures within the window."""
    end = None
    for i in range(limit - 1, len(times)):
        if times[i] - times[i - limit + 1] <= policy.lockout_window:
            end = times[i] + policy.lockout_duration
    return end
