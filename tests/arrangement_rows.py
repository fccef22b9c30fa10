"""Arrangement rows written straight into a test database (the call flow records them in
the product; these tests only need rows to list, push and judge)."""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import select

from ivr.db import Database
from ivr.models import Account, Arrangement, ArrangementInstalment, OutboxEntry, Payment
from ivr.statuses import ArrangementKind, PostingStatus


def add_arrangement(database: Database, number: str, code: str, *, balance: int,
                    instalments: list[tuple[date, int]], down: int = 0,
                    created_at: datetime | None = None,
                    posting: PostingStatus = PostingStatus.QUEUED,
                    with_account: bool = True, down_payment_code: str | None = None) -> int:
    """An arrangement for account ``number`` with its instalments and outbox row; its id."""
    with database.session() as db:
        account = db.scalar(select(Account).where(Account.account_number == number))
        payment_id = None
        if down_payment_code is not None:
            payment = Payment(idempotency_key=f"dp-{code}", call_sid=f"CA{code}",
                              confirmation_code=down_payment_code,
                              account_id=account.id if account else None,
                              account_number=number, amount_cents=down, method="card",
                              card_last4="1111", purpose="down_payment",
                              posting_status=posting,
                              **({"paid_at": created_at} if created_at else {}))
            db.add(payment)
            db.flush()
            payment_id = payment.id
        arrangement = Arrangement(
            confirmation_code=code, idempotency_key=f"arr-{code}", call_sid=f"CA{code}",
            account_id=account.id if account is not None and with_account else None,
            account_number=number,
            kind=ArrangementKind.EXTENSION if len(instalments) == 1 and not down
            else ArrangementKind.INSTALMENTS,
            balance_cents=balance, down_payment_cents=down, down_payment_id=payment_id,
            posting_status=posting,
            instalments=[ArrangementInstalment(seq=n, due_date=due, amount_cents=cents)
                         for n, (due, cents) in enumerate(instalments, 1)],
            **({"created_at": created_at} if created_at else {}))
        db.add(arrangement)
        db.flush()
        db.add(OutboxEntry(arrangement_id=arrangement.id))
        return arrangement.id
