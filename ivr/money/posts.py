"""What an outbox row asks the accounting system to record: a payment, an arrangement or a
reversal, as the connectors' messages (masked data only, money as Decimal)."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from typing import Protocol

from sqlalchemy.orm import Session

from connectors.accounting.base import ArrangementPost, PaymentPost, ReversalPost
from connectors.accounting.base import ReversalKind as ReversalPostKind
from connectors.amounts import cents_to_decimal
from ivr.models import Arrangement, OutboxEntry, Payment, Reversal
from ivr.statuses import ArrangementKind, ReversalKind

# What one outbox row asks a connector to record.
Post = PaymentPost | ArrangementPost | ReversalPost
Subject = Payment | Arrangement | Reversal


class PaymentFields(Protocol):
    """What a payment's post is made of: a Payment, or a row of ``PAYMENT_FIELDS``."""

    @property
    def idempotency_key(self) -> str: ...
    @property
    def account_number(self) -> str: ...
    @property
    def amount_cents(self) -> int: ...
    @property
    def fee_cents(self) -> int: ...
    @property
    def currency(self) -> str: ...
    @property
    def paid_at(self) -> datetime: ...
    @property
    def confirmation_code(self) -> str: ...
    @property
    def method(self) -> str: ...
    @property
    def card_last4(self) -> str | None: ...
    @property
    def bank_last(self) -> str | None: ...
    @property
    def card_brand(self) -> str | None: ...


# PaymentFields as columns (its properties, in order), for a query that reads a payment's
# post without the object.
PAYMENT_FIELDS = tuple(getattr(Payment, name) for name, member in vars(PaymentFields).items()
                       if isinstance(member, property))


def payment_post(payment: PaymentFields) -> PaymentPost:
    """What we tell the accounting system about a payment (masked data only): from the
    payment, or from a row of ``PAYMENT_FIELDS``."""
    return PaymentPost(
        idempotency_key=payment.idempotency_key,
        account_number=payment.account_number,
        amount=cents_to_decimal(payment.amount_cents),
        fee=cents_to_decimal(payment.fee_cents),
        currency=payment.currency,
        paid_at=payment.paid_at,
        confirmation_number=payment.confirmation_code,
        method=payment.method,
        last4=payment.card_last4 or payment.bank_last,
        card_brand=payment.card_brand,
    )


def arrangement_post(db: Session, arrangement: Arrangement) -> ArrangementPost:
    """What we tell the accounting system about an arrangement: its terms, no card data."""
    down = db.get(Payment, arrangement.down_payment_id) if arrangement.down_payment_id else None
    return ArrangementPost(
        idempotency_key=arrangement.idempotency_key,
        account_number=arrangement.account_number,
        confirmation_number=arrangement.confirmation_code,
        kind=("extension" if arrangement.kind == ArrangementKind.EXTENSION else "instalments"),
        balance=cents_to_decimal(arrangement.balance_cents),
        down_payment=cents_to_decimal(arrangement.down_payment_cents),
        down_payment_confirmation=down.confirmation_code if down is not None else None,
        instalments=tuple((i.due_date, cents_to_decimal(i.amount_cents))
                          for i in arrangement.instalments),
        created_at=arrangement.created_at,
        status=str(arrangement.status),
        currency=down.currency if down is not None else "USD",
    )


# The connectors' words for each kind (the same words the database stores).
_REVERSAL_KINDS: dict[ReversalKind, ReversalPostKind] = {
    ReversalKind.RETURN: "return", ReversalKind.REFUND: "refund", ReversalKind.VOID: "void"}


def reversal_post(reversal: Reversal) -> ReversalPost:
    """What we tell the accounting system about a reversal: the payment it takes back."""
    payment = reversal.payment
    return ReversalPost(
        idempotency_key=reversal.idempotency_key,
        account_number=payment.account_number,
        kind=_REVERSAL_KINDS[reversal.kind],
        amount=cents_to_decimal(reversal.amount_cents),
        currency=payment.currency,
        effective_date=reversal.effective_date,
        recorded_at=reversal.created_at,
        payment_confirmation_number=payment.confirmation_code,
        payment_idempotency_key=payment.idempotency_key,
        payment_paid_at=payment.paid_at,
        method=payment.method,
        code=reversal.code,
        reason=reversal.reason,
    )


def subject_of(entry: OutboxEntry) -> Subject | None:
    """The one thing an outbox row carries (the check constraint allows exactly one)."""
    return entry.payment or entry.arrangement or entry.reversal


def post_for(db: Session, entry: OutboxEntry, may_exist: bool) -> Post | None:
    """What to post for a row: its payment, its arrangement or its reversal."""
    post: Post
    if entry.payment is not None:
        post = payment_post(entry.payment)
    elif entry.arrangement is not None:
        post = arrangement_post(db, entry.arrangement)
    elif entry.reversal is not None:
        post = reversal_post(entry.reversal)
    else:
        return None
    return replace(post, may_exist=may_exist)
