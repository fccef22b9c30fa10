"""Payments representatives take on live calls (Twilio's Payments API), and their audit."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from ivr.models.base import Base, EnumText, utcnow
from ivr.statuses import AgentPaymentStatus


class AgentPayment(Base):
    """One secure capture an agent runs on a call. Holds no card or bank digit: each field's
    progress is a word ("keying", "entered", "error") and Twilio's error type."""

    __tablename__ = "agent_payments"
    __table_args__ = (Index("ix_agent_payments_call_status", "call_sid", "status"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    call_sid: Mapped[str] = mapped_column(String(64))
    # Twilio's Payments session (PK...), once started.
    payment_sid: Mapped[str | None] = mapped_column(String(64), unique=True)
    agent_username: Mapped[str] = mapped_column(String(80))
    account_id: Mapped[int | None] = mapped_column(ForeignKey("accounts.id", ondelete="SET NULL"))
    amount_cents: Mapped[int] = mapped_column(BigInteger)
    fee_cents: Mapped[int] = mapped_column(BigInteger, default=0)
    method: Mapped[str] = mapped_column(String(8))  # "card" or "ach"
    bank_account_type: Mapped[str | None] = mapped_column(String(32))
    status: Mapped[AgentPaymentStatus] = mapped_column(EnumText(AgentPaymentStatus, 16),
                                                       default=AgentPaymentStatus.PREPARED)
    # {field: {"state": "keying"|"entered"|"error", "error": "invalid-card-number"}}
    progress: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    required: Mapped[list[str]] = mapped_column(JSON, default=list)
    capturing: Mapped[str | None] = mapped_column(String(40))
    result: Mapped[str | None] = mapped_column(String(40))
    error: Mapped[str | None] = mapped_column(String(120))
    payment_id: Mapped[int | None] = mapped_column(ForeignKey("payments.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # The agent's page asks for progress every second or two: a page gone quiet is closed.
    seen_at: Mapped[datetime] = mapped_column(default=utcnow)
    ended_at: Mapped[datetime | None] = mapped_column()


class AgentAudit(Base):
    """Who did what on a call from the console, and when. Never a card or bank digit."""

    __tablename__ = "agent_audit"

    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    username: Mapped[str] = mapped_column(String(80))
    action: Mapped[str] = mapped_column(String(24))
    call_sid: Mapped[str] = mapped_column(String(64), index=True)
    agent_payment_id: Mapped[int | None] = mapped_column(
        ForeignKey("agent_payments.id", ondelete="SET NULL"))
    payment_id: Mapped[int | None] = mapped_column(ForeignKey("payments.id", ondelete="SET NULL"),
                                                   index=True)
    detail: Mapped[str] = mapped_column(String(200), default="")
