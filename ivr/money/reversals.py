"""Taking a payment's money back: a bank return, a refund or a void, one path for all three.

``record_reversal`` does, in the caller's transaction, everything a reversal means: the
reversal row (with its own idempotency key), the payment's new status, the account's cached
balance back up by the amount, bank payments off for a while after a return that means the
account cannot be debited (``[returns]`` in settings.toml), and the outbox row that carries
the reversal to the accounting system (ivr/money/posting.py). The caller commits once, so
either all of it is there or none of it.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from connectors.files.payment_layout import ReversalRow
from ivr.db import Database
from ivr.models import Account, ChangeNotice, OutboxEntry, Payment, Reversal, utcnow
from ivr.prompts.settings import ReturnsSettings
from ivr.statuses import OutboxStatus, PaymentStatus, PostingStatus, ReversalKind

_KEY_NAMESPACE = uuid.UUID("0b9d5f4e-6a52-4c1e-9a7f-3e2b1d8c4f60")


class ReversalError(ValueError):
    """The reversal cannot be recorded (the message says why, for ops)."""


@dataclass(frozen=True)
class Reverse:
    """What to record: the kind, the amount, the day, and who and why."""

    kind: ReversalKind
    amount_cents: int
    effective_date: date
    recorded_by: str
    code: str | None = None
    reason: str = ""
    trace_number: str | None = None
    returns_file_id: int | None = None


def reversed_cents(db: Session, payment_id: int) -> int:
    """What earlier reversals already took back from the payment."""
    total = db.scalar(select(func.coalesce(func.sum(Reversal.amount_cents), 0))
                      .where(Reversal.payment_id == payment_id))
    return int(total or 0)


def remaining_cents(db: Session, payment: Payment) -> int:
    """What of the payment is still paid: a refund may take back at most this."""
    return payment.amount_cents - reversed_cents(db, payment.id)


def reversal_key(payment: Payment, kind: ReversalKind) -> str:
    """A return's key comes from its payment's (a payment is returned once); a refund's is
    new each time (a payment may be refunded in parts)."""
    if kind == ReversalKind.RETURN:
        return str(uuid.uuid5(_KEY_NAMESPACE, f"return:{payment.idempotency_key}"))
    return str(uuid.uuid4())


def record_reversal(db: Session, payment: Payment, what: Reverse,
                    settings: ReturnsSettings, now: datetime | None = None) -> Reversal:
    """Record ``what`` against ``payment`` in ``db``'s transaction (see the module doc), at
    ``now`` (the caller's clock; the current time by default).

    Raises ReversalError when the payment was never real money (a simulated call's), is
    already wholly taken back, or the amount is not between a cent and what remains.
    """
    if payment.posting_status == PostingStatus.TEST:
        raise ReversalError("a simulated call's test payment took no money")
    if payment.status != PaymentStatus.PAID:
        raise ReversalError(f"the payment is already {payment.status}")
    remaining = remaining_cents(db, payment)
    if what.kind != ReversalKind.REFUND and what.amount_cents != remaining:
        raise ReversalError(f"a {what.kind} takes back the whole payment "
                            f"({remaining} cents), not {what.amount_cents}")
    if not 0 < what.amount_cents <= remaining:
        raise ReversalError(f"the amount must be between 1 and {remaining} cents")
    reversal = Reversal(
        idempotency_key=reversal_key(payment, what.kind), payment_id=payment.id,
        kind=what.kind, code=what.code, amount_cents=what.amount_cents,
        effective_date=what.effective_date, reason=what.reason[:2000],
        trace_number=what.trace_number, recorded_by=what.recorded_by[:120],
        returns_file_id=what.returns_file_id, created_at=now or utcnow())
    db.add(reversal)
    payment.status = _status_after(what.kind, what.amount_cents == remaining)
    account = _locked_account(db, payment)
    if account is not None:
        account.balance_due_cents += what.amount_cents
        if what.code is not None and what.code in settings.bank_off_codes:
            until = what.effective_date + timedelta(days=settings.bank_off_days)
            if account.ach_off_until is None or account.ach_off_until < until:
                account.ach_off_until = until
    db.flush()
    db.add(OutboxEntry(reversal_id=reversal.id, next_attempt_at=reversal.created_at,
                       status=OutboxStatus.PENDING))
    db.flush()
    return reversal


def _status_after(kind: ReversalKind, whole: bool) -> PaymentStatus:
    if kind == ReversalKind.RETURN:
        return PaymentStatus.RETURNED
    if kind == ReversalKind.VOID:
        return PaymentStatus.VOIDED
    # A partial refund leaves the payment paid, with less of it remaining.
    return PaymentStatus.REFUNDED if whole else PaymentStatus.PAID


def _locked_account(db: Session, payment: Payment) -> Account | None:
    """The payment's account, locked for the balance update (PostgreSQL; SQLite's writer
    lock already serialises)."""
    if payment.account_id is None:
        return None
    stmt = select(Account).where(Account.id == payment.account_id)
    if db.get_bind().dialect.name == "postgresql":
        stmt = stmt.with_for_update()
    return db.scalar(stmt)



@dataclass(frozen=True)
class Taken:
    """What reversals took back from one payment, for listings: the amount, and the bank's
    return code and date when it was returned."""

    cents: int
    return_code: str | None
    return_date: date | None


def taken_back(db: Session, payment_ids: list[int]) -> dict[int, Taken]:
    """Per payment (only those with reversals), what reversals took back."""
    found: dict[int, Taken] = {}
    if not payment_ids:
        return found
    rows = db.scalars(select(Reversal).where(Reversal.payment_id.in_(payment_ids))
                      .order_by(Reversal.id))
    for r in rows:
        before = found.get(r.payment_id, Taken(0, None, None))
        is_return = r.kind == ReversalKind.RETURN
        found[r.payment_id] = Taken(
            before.cents + r.amount_cents,
            r.code if is_return else before.return_code,
            r.effective_date if is_return else before.return_date)
    return found


@dataclass(frozen=True)
class AfterTheCall:
    """What happened to a payment since: reversals, notices of change, what remains."""

    reversals: list[Reversal]
    notices: list[ChangeNotice]
    remaining_cents: int
    reversible: bool  # real money, not wholly taken back yet


def after_the_call(db: Session, payment: Payment) -> AfterTheCall:
    """A payment's reversals and notices of change, oldest first, for its console page."""
    reversals = list(db.scalars(select(Reversal).where(Reversal.payment_id == payment.id)
                                .order_by(Reversal.id)))
    notices = list(db.scalars(select(ChangeNotice).where(ChangeNotice.payment_id == payment.id)
                              .order_by(ChangeNotice.id)))
    remaining = payment.amount_cents - sum(r.amount_cents for r in reversals)
    return AfterTheCall(reversals, notices, remaining,
                        payment.posting_status != PostingStatus.TEST
                        and payment.status == PaymentStatus.PAID and remaining > 0)


def reversal_rows(database: Database, start: datetime, end: datetime) -> list[ReversalRow]:
    """The reversals recorded in [start, end), for that interval's confirmation file."""
    with database.session() as db:
        rows = db.execute(select(Reversal, Payment)
                          .join(Payment, Payment.id == Reversal.payment_id)
                          .where(Reversal.created_at >= start, Reversal.created_at < end)
                          .order_by(Reversal.created_at, Reversal.id)).all()
        return [ReversalRow(account_number=p.account_number, amount_cents=r.amount_cents,
                            effective_date=r.effective_date, recorded_at=r.created_at,
                            confirmation_number=p.confirmation_code, kind=r.kind.value,
                            method=p.method, return_code=r.code) for r, p in rows]
