"""Recording an arrangement the caller agreed to: its rows, its outbox row, its number.

One transaction with whatever else the call does at that moment (the down payment, when
there is one): the arrangement, its instalments and an outbox row for the biller. The
confirmation code is short enough to read out ("A" and seven digits) and unique; the
idempotency key is fixed at birth from the call and that code, never the clock.
"""

from __future__ import annotations

import secrets
import uuid
from datetime import date, datetime
from typing import Any

from sqlalchemy import bindparam, event, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, SessionTransaction

from ivr.arrangements.terms import Offer
from ivr.db_driver import DriverStatement, ReadAhead
from ivr.db_webhook import DbHandle, session_of
from ivr.models import Account, Arrangement, ArrangementInstalment, CallSession, OutboxEntry
from ivr.statuses import ArrangementStatus, OutboxStatus, PostingStatus

_KEY_NAMESPACE = uuid.UUID("0b8f6a4e-3c1d-4e7a-9d52-7a1e6c2f8b90")
_CODE_TRIES = 8


class AlreadyActive(Exception):
    """The account has an active arrangement already (one at a time, on every node)."""


def idempotency_key(call_sid: str, confirmation_code: str) -> str:
    """A key fixed at birth from the call and the arrangement's confirmation code."""
    return str(uuid.uuid5(_KEY_NAMESPACE, f"arrangement:{call_sid}:{confirmation_code}"))


def new_code() -> str:
    """A code a caller can write down: "A" and seven digits."""
    return f"A{secrets.randbelow(10**7):07d}"


# Built once and run on the driver (ivr.db_driver): every verified call asks it for the
# balance summary and the menu, and nearly every answer is "none".
def _active(account_id: Any) -> DriverStatement:
    return DriverStatement(select(Arrangement.id).where(
        Arrangement.account_id == account_id, Arrangement.status == ArrangementStatus.ACTIVE))


_ACTIVE = _active(bindparam("account_id"))
# The same, for the account of the call (read ahead with the call's load, ivr.calls.ahead).
_ACTIVE_OF_CALL = _active(select(CallSession.account_id).where(
    CallSession.call_sid == bindparam("call_sid")).scalar_subquery())


def arrangement_ahead(call_sid: str) -> ReadAhead:
    """The call's account's active arrangement, read ahead (the balance summary asks)."""
    return ReadAhead.of_the_account(_ACTIVE_OF_CALL, call_sid, _ACTIVE, "account_id")


# Per session (a webhook asks for the summary and again for the menu): account id -> answer.
# Recording an arrangement forgets it; nothing else in a session makes one active.
_ACTIVE_READ = "ivr.active_arrangement"


@event.listens_for(Session, "after_transaction_end")
def _forget_active(db: Session, _transaction: SessionTransaction) -> None:
    db.info.pop(_ACTIVE_READ, None)  # a later transaction reads afresh


def active_arrangement(db: DbHandle, account_id: int) -> Arrangement | None:
    """The account's active arrangement, if it has one."""
    known: dict[int, Arrangement | None] = db.info.setdefault(_ACTIVE_READ, {})
    if account_id not in known:
        # Arrangements are flushed as soon as they are recorded, so nothing pending can
        # change the answer: no flush first. Its id, then the object only when there is one.
        found = _ACTIVE.scalar_in(db, {"account_id": account_id})
        if found is None:
            known[account_id] = None
        else:
            session = session_of(db)
            with session.no_autoflush:
                known[account_id] = session.get(Arrangement, found)
    return known[account_id]


def next_instalment(arrangement: Arrangement, today: date) -> ArrangementInstalment:
    """The first instalment due today or later (the last one once every date has passed).

    The line does not track which instalments were paid: the biller's account file does, and
    an arrangement with an amount unpaid past its date is marked broken on import.
    """
    for instalment in arrangement.instalments:
        if instalment.due_date >= today:
            return instalment
    return arrangement.instalments[-1]


def record_arrangement(db: Session, *, call_sid: str, account: Account, offer: Offer,
                       language: str, now: datetime, simulated: bool,
                       down_payment_id: int | None = None) -> Arrangement:
    """Store the arrangement exactly as offered, with its outbox row; AlreadyActive when the
    account has one running (the partial unique index decides, whatever the race)."""
    for _ in range(_CODE_TRIES):
        code = new_code()
        if db.scalar(select(Arrangement.id).where(Arrangement.confirmation_code == code)):
            continue
        arrangement = Arrangement(
            confirmation_code=code, idempotency_key=idempotency_key(call_sid, code),
            call_sid=call_sid, account_id=account.id, account_number=account.account_number,
            # A simulated call's arrangement must not change what real callers hear or may
            # do (as its payments leave balances alone): it is never active.
            kind=offer.kind,
            status=ArrangementStatus.TEST if simulated else ArrangementStatus.ACTIVE,
            balance_cents=offer.balance_cents, down_payment_cents=offer.down_cents,
            down_payment_id=down_payment_id, language=language,
            posting_status=PostingStatus.TEST if simulated else PostingStatus.QUEUED,
            created_at=now,
            instalments=[ArrangementInstalment(seq=n, due_date=i.due, amount_cents=i.cents)
                         for n, i in enumerate(offer.instalments, start=1)])
        savepoint = db.begin_nested()
        try:
            db.add(arrangement)
            db.flush()
        except IntegrityError:
            savepoint.rollback()
            db.info.pop(_ACTIVE_READ, None)  # another call's may have just become active
            if active_arrangement(db, account.id) is not None:
                raise AlreadyActive(account.account_number[-4:]) from None
            continue  # another call took the same code a moment ago: draw again
        savepoint.commit()
        # A simulated call's arrangement keeps its outbox row, marked "test": never posted.
        db.add(OutboxEntry(arrangement_id=arrangement.id, next_attempt_at=now,
                           status=OutboxStatus.TEST if simulated else OutboxStatus.PENDING))
        db.flush()
        db.info.pop(_ACTIVE_READ, None)
        return arrangement
    raise RuntimeError("no unused arrangement confirmation code after several draws")
