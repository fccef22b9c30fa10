"""Limits on what callers may try across calls: card testing and account enumeration.

A per-call limit alone is no limit: an attacker simply calls again, from another number. So
what the limits count (a declined ``<Pay>`` session, an account number that matched nothing)
is kept as rows in the database and counted over sliding windows per account, per calling
number and for the whole line. That holds across gunicorn workers and machines on one
database. The checks that must not race (two calls on one account at once) take the
account's row lock first (see ``lock_account``).
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta
from typing import Final

from sqlalchemy import BigInteger, Select, bindparam, delete, func, select
from sqlalchemy.orm import Session

from connectors.phones import normalize_e164
from ivr.db_driver import DriverStatement, ReadAhead
from ivr.db_webhook import DbHandle
from ivr.models import Account, CallSession, GuardEvent
from ivr.prompts.settings import LimitSettings

# What the limits count, and what a refused caller leaves behind (for /metrics and the
# console). Never digits: only which account, the calling number and the line.
PAY_DECLINED: Final = "pay_declined"
PAY_BLOCKED: Final = "pay_blocked"
ACCOUNT_MISS: Final = "account_miss"
LOOKUP_BLOCKED: Final = "lookup_blocked"
VERIFY_LOCKED: Final = "verify_locked"
KINDS: Final = frozenset({PAY_DECLINED, PAY_BLOCKED, ACCOUNT_MISS, LOOKUP_BLOCKED,
                          VERIFY_LOCKED})

# A <Pay> session handed to Twilio whose result has not come back (the call is still on,
# waiting in <Pay>) counts against the account and the caller as if declined: calls placed
# side by side cannot run more sessions than the limit allows. A call older than this is
# taken to be over even if its status callback never came.
_IN_FLIGHT = timedelta(hours=1)
_PAYING = "paying"
# Events are kept this long for the console's history (the limits look back a week at most).
KEEP = timedelta(days=90)


def caller_key(from_number: str) -> str:
    """The calling number as limits count it: E.164 when it is one, else as sent.

    Withheld numbers ("anonymous", "") share one key, so they share one allowance.
    """
    phone = normalize_e164(from_number)
    if phone is not None:
        return phone
    return "".join(ch for ch in from_number.strip() if ch.isprintable())[:40]


def _line(call: CallSession) -> str:
    """The line's own number, the one the caller dialled (what per-line limits count)."""
    return call.to_number[:40]


def lock_account(db: DbHandle, account_id: int) -> None:
    """Take the account's row lock until the transaction ends (PostgreSQL).

    SQLite needs nothing: every webhook's transaction already holds the database's write
    lock (BEGIN IMMEDIATE, see ivr.db). On the connection: a webhook needs no session.
    """
    if db.connection().dialect.name == "postgresql":
        _LOCK_ACCOUNT.execute_in(db, {"id": account_id})


def account_lock_ahead(call_sid: str) -> ReadAhead:
    """The lock of the call's account, taken ahead with the call's load (PostgreSQL)."""
    return ReadAhead.of_the_account(_LOCK_ACCOUNT_OF_CALL, call_sid, _LOCK_ACCOUNT, "id")


def lock_caller(db: DbHandle, caller: str) -> None:
    """Serialise one calling number's lookups until the transaction ends (PostgreSQL
    advisory lock; SQLite's write lock already does it)."""
    connection = db.connection()
    if connection.dialect.name == "postgresql":
        digest = hashlib.sha256(f"ivr.caller:{caller}".encode()).digest()
        key = int.from_bytes(digest[:8], "big", signed=True)
        _LOCK_CALLER.execute(connection, {"key": key})


# On the driver (ivr.db_driver): verification locks an account on every call.
_LOCK_ACCOUNT = DriverStatement(
    select(Account.id).where(Account.id == bindparam("id")).with_for_update())
_LOCK_ACCOUNT_OF_CALL = DriverStatement(
    select(Account.id).where(Account.id == select(CallSession.account_id).where(
        CallSession.call_sid == bindparam("call_sid")).scalar_subquery()).with_for_update())
_LOCK_CALLER = DriverStatement(
    select(func.pg_advisory_xact_lock(bindparam("key", type_=BigInteger))))


def record(db: Session, kind: str, call: CallSession, now: datetime,
           account_id: int | None = None) -> None:
    """Remember one event a limit counts (and forget that kind's events past ``KEEP``)."""
    db.execute(delete(GuardEvent).where(GuardEvent.kind == kind, GuardEvent.at < now - KEEP))
    db.add(GuardEvent(kind=kind, at=now, account_id=account_id,
                      caller=caller_key(call.from_number), line=_line(call),
                      call_sid=call.call_sid))
    db.flush()


def _count(db: Session, kind: str, since: datetime, **match: object) -> int:
    stmt = select(func.count()).select_from(GuardEvent).where(
        GuardEvent.kind == kind, GuardEvent.at > since,
        *(getattr(GuardEvent, column) == value for column, value in match.items()))
    return int(db.scalar(stmt) or 0)


def waiting_in_pay(call_sid: str, now: datetime) -> Select[int | None, str]:
    """(account, number) of the calls other than ``call_sid`` waiting on <Pay> right now (a
    handful): read among the calls still live (their own index, ix_call_sessions_live)."""
    return select(CallSession.account_id, CallSession.from_number).where(
        CallSession.state == _PAYING, CallSession.call_sid != call_sid,
        CallSession.ended_at.is_(None), CallSession.started_at > now - _IN_FLIGHT)


def _in_flight(db: Session, call: CallSession, now: datetime) -> list[tuple[int | None, str]]:
    """(account, caller) of the other calls waiting on <Pay> right now."""
    rows = db.execute(waiting_in_pay(call.call_sid, now))
    return [(account_id, caller_key(number)) for account_id, number in rows]


def pay_limit(db: Session, call: CallSession, account_id: int, now: datetime,
              limits: LimitSettings) -> str | None:
    """Which card-testing limit stops another <Pay> session ("account", "caller", "line"),
    or None. Call with the account's row lock held (``lock_account``)."""
    since = now - limits.pay_decline_window
    caller = caller_key(call.from_number)
    waiting = _in_flight(db, call, now)
    if (_count(db, PAY_DECLINED, since, account_id=account_id)
            + sum(1 for other, _ in waiting if other == account_id)
            >= limits.pay_declines_per_account):
        return "account"
    if (_count(db, PAY_DECLINED, since, caller=caller)
            + sum(1 for _, other in waiting if other == caller)
            >= limits.pay_declines_per_caller):
        return "caller"
    if (_count(db, PAY_DECLINED, now - limits.line_window, line=_line(call))
            >= limits.pay_declines_per_line):
        return "line"
    return None


def lookup_limit(db: Session, call: CallSession, now: datetime,
                 limits: LimitSettings) -> str | None:
    """Which enumeration limit stops another account-number lookup ("caller", "line"),
    or None."""
    if (_count(db, ACCOUNT_MISS, now - limits.account_miss_window,
               caller=caller_key(call.from_number)) >= limits.account_misses_per_caller):
        return "caller"
    if (_count(db, ACCOUNT_MISS, now - limits.line_window, line=_line(call))
            >= limits.account_misses_per_line):
        return "line"
    return None


def counts_since(db: Session, since: datetime) -> dict[str, int]:
    """Events per kind since a moment (every kind present, zero when none)."""
    counts = dict.fromkeys(sorted(KINDS), 0)
    for kind, count in db.execute(select(GuardEvent.kind, func.count())
                                  .where(GuardEvent.at > since).group_by(GuardEvent.kind)):
        if kind in counts:
            counts[str(kind)] = int(count)
    return counts
