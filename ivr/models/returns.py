"""Money after the call: reversals of payments (bank returns, refunds, voids), notices of
change, and the returns files applied (docs/returns.md)."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Date, ForeignKey, Index, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from ivr.models.base import Base, EnumText, utcnow
from ivr.models.money import Payment
from ivr.statuses import PostingStatus, ReversalKind


class ReturnsFile(Base):
    """A returns file applied: its content is applied once, whatever its name."""

    __tablename__ = "returns_files"

    id: Mapped[int] = mapped_column(primary_key=True)
    source: Mapped[str] = mapped_column(String(500))
    sha256: Mapped[str] = mapped_column(String(64), unique=True)
    applied_at: Mapped[datetime] = mapped_column(default=utcnow)
    returns: Mapped[int] = mapped_column(default=0)
    notices: Mapped[int] = mapped_column(default=0)
    not_ours: Mapped[int] = mapped_column(default=0)
    report: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class Reversal(Base):
    """Money of a payment taken back: a bank return, a refund or a void.

    Written in the same transaction as the payment's new status, the account's balance and
    its outbox row; posted to the accounting system with its own idempotency key.
    """

    __tablename__ = "reversals"
    __table_args__ = (
        # A payment is returned by its bank at most once, on every node.
        Index("uq_reversals_one_return", "payment_id", unique=True,
              sqlite_where=text("kind = 'return'"),
              postgresql_where=text("kind = 'return'")),
        Index("ix_reversals_effective_date", "effective_date"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    idempotency_key: Mapped[str] = mapped_column(String(64), unique=True)
    payment_id: Mapped[int] = mapped_column(ForeignKey("payments.id"), index=True)
    kind: Mapped[ReversalKind] = mapped_column(EnumText(ReversalKind, 8))
    # R01-R99 for a return; None for a refund or a void.
    code: Mapped[str | None] = mapped_column(String(3))
    amount_cents: Mapped[int] = mapped_column(BigInteger)
    # The bank's return date, or the day ops recorded a refund or void.
    effective_date: Mapped[date] = mapped_column(Date)
    reason: Mapped[str] = mapped_column(Text, default="")
    trace_number: Mapped[str | None] = mapped_column(String(15))
    # Who recorded it: an ops user name, or "returns file <id>".
    recorded_by: Mapped[str] = mapped_column(String(120))
    returns_file_id: Mapped[int | None] = mapped_column(
        ForeignKey("returns_files.id", ondelete="SET NULL"))
    posting_status: Mapped[PostingStatus] = mapped_column(EnumText(PostingStatus, 16),
                                                          default=PostingStatus.QUEUED)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)

    payment: Mapped[Payment] = relationship()


class ChangeNotice(Base):
    """A bank's notice of change (C01-C13) about a payment: recorded and shown to ops (the
    line keeps no bank numbers to correct)."""

    __tablename__ = "change_notices"

    id: Mapped[int] = mapped_column(primary_key=True)
    payment_id: Mapped[int] = mapped_column(ForeignKey("payments.id"), index=True)
    code: Mapped[str] = mapped_column(String(3))
    notice_date: Mapped[date] = mapped_column(Date)
    detail: Mapped[str] = mapped_column(Text, default="")
    returns_file_id: Mapped[int | None] = mapped_column(
        ForeignKey("returns_files.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)

    payment: Mapped[Payment] = relationship()
