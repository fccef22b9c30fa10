"""Payments, payment arrangements, their outbox, posting attempts and bank authorizations."""

from __future__ import annotations

from datetime import date, datetime
from typing import TYPE_CHECKING

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Date,
    ForeignKey,
    Index,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

if TYPE_CHECKING:
    from ivr.models.returns import Reversal

from ivr.models.base import Base, EnumText, utcnow
from ivr.statuses import (
    ArrangementKind,
    ArrangementStatus,
    OutboxStatus,
    PaymentStatus,
    PostingOutcome,
    PostingStatus,
)


class Payment(Base):
    """A payment captured by <Pay>. Holds masked card/bank data only."""

    __tablename__ = "payments"
    __table_args__ = (UniqueConstraint("call_sid", "confirmation_code"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    idempotency_key: Mapped[str] = mapped_column(String(64), unique=True)
    call_sid: Mapped[str] = mapped_column(String(64))
    confirmation_code: Mapped[str] = mapped_column(String(64))
    account_id: Mapped[int | None] = mapped_column(ForeignKey("accounts.id", ondelete="SET NULL"))
    account_number: Mapped[str] = mapped_column(String(32), index=True)
    amount_cents: Mapped[int] = mapped_column(BigInteger)
    fee_cents: Mapped[int] = mapped_column(BigInteger, default=0)
    currency: Mapped[str] = mapped_column(String(3), default="USD")
    method: Mapped[str] = mapped_column(String(8))  # "card" or "ach"
    card_brand: Mapped[str | None] = mapped_column(String(20))
    card_last4: Mapped[str | None] = mapped_column(String(4))
    card_exp: Mapped[str | None] = mapped_column(String(4))  # MMYY, not cardholder data
    bank_account_type: Mapped[str | None] = mapped_column(String(32))
    bank_last: Mapped[str | None] = mapped_column(String(4))
    language: Mapped[str] = mapped_column(String(8), default="en-US")
    # None for the bill; "reconnect" or "down_payment" (of an arrangement).
    purpose: Mapped[str | None] = mapped_column(String(16))
    # queued until the accounting system acknowledges it (see the posting worker).
    posting_status: Mapped[PostingStatus] = mapped_column(EnumText(PostingStatus, 16),
                                                          default=PostingStatus.QUEUED)
    paid_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    # paid until a bank return, a refund or a void takes the money back (ivr/money/reversals.py).
    status: Mapped[PaymentStatus] = mapped_column(EnumText(PaymentStatus, 12),
                                                  default=PaymentStatus.PAID)


class Arrangement(Base):
    """A payment arrangement a caller made: more time, or a share now and instalments.

    Recorded only on the caller's explicit confirmation (and, with a down payment, only
    after it succeeded through <Pay>); reaches the biller through the outbox like payments.
    """

    __tablename__ = "arrangements"
    __table_args__ = (
        # At most one active arrangement per account, on every node (a partial unique index).
        Index("uq_arrangements_one_active", "account_id", unique=True,
              sqlite_where=text("status = 'active'"),
              postgresql_where=text("status = 'active'")),
        Index("ix_arrangements_created_at", "created_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    confirmation_code: Mapped[str] = mapped_column(String(16), unique=True)
    idempotency_key: Mapped[str] = mapped_column(String(64), unique=True)
    call_sid: Mapped[str] = mapped_column(String(64), index=True)
    account_id: Mapped[int | None] = mapped_column(ForeignKey("accounts.id", ondelete="SET NULL"))
    account_number: Mapped[str] = mapped_column(String(32), index=True)
    kind: Mapped[ArrangementKind] = mapped_column(EnumText(ArrangementKind, 16))
    status: Mapped[ArrangementStatus] = mapped_column(EnumText(ArrangementStatus, 16),
                                                      default=ArrangementStatus.ACTIVE)
    # The balance the arrangement covers (as the caller heard it), the share paid now.
    balance_cents: Mapped[int] = mapped_column(BigInteger)
    down_payment_cents: Mapped[int] = mapped_column(BigInteger, default=0)
    down_payment_id: Mapped[int | None] = mapped_column(
        ForeignKey("payments.id", ondelete="SET NULL"))
    language: Mapped[str] = mapped_column(String(8), default="en-US")
    posting_status: Mapped[PostingStatus] = mapped_column(EnumText(PostingStatus, 16),
                                                          default=PostingStatus.QUEUED)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # When it was marked broken or kept, and why (for the console and the biller).
    ended_at: Mapped[datetime | None] = mapped_column()
    end_reason: Mapped[str] = mapped_column(String(200), default="")

    instalments: Mapped[list[ArrangementInstalment]] = relationship(
        back_populates="arrangement", cascade="all, delete-orphan",
        order_by="ArrangementInstalment.seq")


class ArrangementInstalment(Base):
    """One amount an arrangement promises by a date (an extension has exactly one)."""

    __tablename__ = "arrangement_instalments"
    __table_args__ = (UniqueConstraint("arrangement_id", "seq"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    arrangement_id: Mapped[int] = mapped_column(
        ForeignKey("arrangements.id", ondelete="CASCADE"))
    seq: Mapped[int] = mapped_column()  # 1, 2, ... in date order
    due_date: Mapped[date] = mapped_column(Date)
    amount_cents: Mapped[int] = mapped_column(BigInteger)

    arrangement: Mapped[Arrangement] = relationship(back_populates="instalments")


# The outbox's check: exactly one of its subjects is set (migration 0012 writes the same).
ONE_SUBJECT = ("(CASE WHEN payment_id IS NULL THEN 0 ELSE 1 END"
               " + CASE WHEN arrangement_id IS NULL THEN 0 ELSE 1 END"
               " + CASE WHEN reversal_id IS NULL THEN 0 ELSE 1 END) = 1")


class OutboxEntry(Base):
    """A payment, an arrangement or a reversal to post to the accounting system; written
    with it.

    status: pending (to post; retried with backoff), posted (acknowledged, receipt_id set),
    dead (refused or out of attempts; waits for a person). A claim (claimed_by until
    claimed_until) keeps two posters off one row; a crashed poster's claim simply expires.
    """

    __tablename__ = "outbox"
    __table_args__ = (
        Index("ix_outbox_due", "status", "next_attempt_at"),
        # Each row carries exactly one thing to post.
        CheckConstraint(ONE_SUBJECT, name="ck_outbox_one_subject"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    payment_id: Mapped[int | None] = mapped_column(ForeignKey("payments.id"), unique=True)
    arrangement_id: Mapped[int | None] = mapped_column(ForeignKey("arrangements.id"),
                                                       unique=True)
    reversal_id: Mapped[int | None] = mapped_column(ForeignKey("reversals.id"), unique=True)
    status: Mapped[OutboxStatus] = mapped_column(EnumText(OutboxStatus, 16),
                                                 default=OutboxStatus.PENDING)
    attempts: Mapped[int] = mapped_column(default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(default=utcnow)
    claimed_by: Mapped[str | None] = mapped_column(String(80))
    claimed_until: Mapped[datetime | None] = mapped_column()
    last_error: Mapped[str | None] = mapped_column(Text)
    system: Mapped[str | None] = mapped_column(String(20))
    receipt_id: Mapped[str | None] = mapped_column(String(200))
    posted_at: Mapped[datetime | None] = mapped_column()
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    payment: Mapped[Payment | None] = relationship()
    arrangement: Mapped[Arrangement | None] = relationship()
    reversal: Mapped[Reversal | None] = relationship()


class PostingAttempt(Base):
    """One try at posting a payment: who tried, when, how long, and what came of it."""

    __tablename__ = "posting_attempts"

    id: Mapped[int] = mapped_column(primary_key=True)
    outbox_id: Mapped[int] = mapped_column(ForeignKey("outbox.id"), index=True)
    at: Mapped[datetime] = mapped_column(default=utcnow)
    poster: Mapped[str] = mapped_column(String(80))  # "realtime" or a worker id
    system: Mapped[str] = mapped_column(String(20))
    outcome: Mapped[PostingOutcome] = mapped_column(EnumText(PostingOutcome, 16))
    error: Mapped[str | None] = mapped_column(Text)
    duration_ms: Mapped[int] = mapped_column(default=0)


class AchAuthorization(Base):
    """The record of a caller's oral authorization of a bank debit (NACHA TEL). Keep 2+ years."""

    __tablename__ = "ach_authorizations"

    id: Mapped[int] = mapped_column(primary_key=True)
    call_sid: Mapped[str] = mapped_column(String(64), index=True)
    account_id: Mapped[int | None] = mapped_column(ForeignKey("accounts.id", ondelete="SET NULL"))
    account_number: Mapped[str] = mapped_column(String(32))
    caller_number: Mapped[str] = mapped_column(String(40), default="")
    amount_cents: Mapped[int] = mapped_column(BigInteger)
    fee_cents: Mapped[int] = mapped_column(BigInteger, default=0)
    bank_account_type: Mapped[str] = mapped_column(String(32))
    script_version: Mapped[str] = mapped_column(String(64))
    script_text: Mapped[str] = mapped_column(Text)
    language: Mapped[str] = mapped_column(String(8))
    authorized_at: Mapped[datetime] = mapped_column(default=utcnow)
    payment_id: Mapped[int | None] = mapped_column(ForeignKey("payments.id", ondelete="SET NULL"))
    # Twilio's recording of the script and the caller's answer, when one was made.
    recording_sid: Mapped[str | None] = mapped_column(String(64))
