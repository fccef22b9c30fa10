"""Per-call state, the steps of each call, and what the abuse limits count."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    ForeignKey,
    Index,
    String,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from ivr.models.base import Base, EnumText, utcnow

if TYPE_CHECKING:
    from ivr.models.accounts import Account
from ivr.statuses import (
    CallOutcome,
)


class VerificationFailure(Base):
    """A failed ZIP/PIN check, kept to lock an account after repeated failures across calls."""

    __tablename__ = "verification_failures"
    __table_args__ = (Index("ix_verification_failures_account_at", "account_id", "failed_at"),
                      Index("ix_verification_failures_caller_at", "caller", "failed_at"))

    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    call_sid: Mapped[str] = mapped_column(String(64))
    failed_at: Mapped[datetime] = mapped_column(default=utcnow)
    # The calling number (E.164 when it is one, else as Twilio sent it): a stranger's
    # failures lock strangers out, not the owner calling from the number on file.
    caller: Mapped[str] = mapped_column(String(40), default="", server_default="")


class GuardEvent(Base):
    """Something an abuse limit counts (a declined <Pay> session, an account number not
    found), kept in the database so sliding windows hold across workers and machines.

    Never holds digits the caller typed: only which account (when known), the calling
    number, the line's own number and the call.
    """

    __tablename__ = "guard_events"
    __table_args__ = (Index("ix_guard_events_kind_at", "kind", "at"),
                      Index("ix_guard_events_kind_account_at", "kind", "account_id", "at"),
                      Index("ix_guard_events_kind_caller_at", "kind", "caller", "at"),
                      Index("ix_guard_events_kind_line_at", "kind", "line", "at"))

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(24))
    at: Mapped[datetime] = mapped_column(default=utcnow)
    account_id: Mapped[int | None] = mapped_column(
        ForeignKey("accounts.id", ondelete="SET NULL"))
    caller: Mapped[str] = mapped_column(String(40), default="")
    line: Mapped[str] = mapped_column(String(40), default="")
    call_sid: Mapped[str] = mapped_column(String(64), default="")


# Percent of a call_sessions page filled by inserts (PostgreSQL): the rest takes updates.
CALL_FILLFACTOR = 80


class CallSession(Base):
    """Everything the line remembers about one call, keyed by Twilio's CallSid."""

    __tablename__ = "call_sessions"
    # Every webhook rewrites its call's row, so no index may hold a column a webhook
    # changes as the call goes on: PostgreSQL then updates the row in place on its page (a
    # "HOT" update, no index entries to add), and a fifth of each page is left free for
    # those new versions. Calls are found by when they started, which never changes: all
    # of them (the funnel, the day's metrics), or those still live (the card-testing
    # limits' calls waiting in <Pay>, the console's calls in progress), whose index only
    # the call's last write, which ends it, changes.
    __table_args__ = (Index("ix_call_sessions_started", "started_at"),
                      Index("ix_call_sessions_live", "started_at",
                            postgresql_where=text("ended_at IS NULL"),
                            sqlite_where=text("ended_at IS NULL")),
                      {"postgresql_with": {"fillfactor": CALL_FILLFACTOR}})

    call_sid: Mapped[str] = mapped_column(String(64), primary_key=True)
    from_number: Mapped[str] = mapped_column(String(40), default="")
    to_number: Mapped[str] = mapped_column(String(40), default="")
    language: Mapped[str] = mapped_column(String(8), default="en-US")
    state: Mapped[str] = mapped_column(String(40))
    # Failed tries (silence or invalid input) in the current state; reset on every new state.
    tries: Mapped[int] = mapped_column(default=0)
    # Silences in a row in the current state, to offer "need more time?" before giving up.
    silences: Mapped[int] = mapped_column(default=0)
    extended_time: Mapped[bool] = mapped_column(Boolean, default=False)
    awaiting_more_time: Mapped[bool] = mapped_column(Boolean, default=False)
    account_id: Mapped[int | None] = mapped_column(ForeignKey("accounts.id", ondelete="SET NULL"))
    verified: Mapped[bool] = mapped_column(Boolean, default=False)
    identify_failures: Mapped[int] = mapped_column(default=0)
    verify_failures: Mapped[int] = mapped_column(default=0)
    amount_cents: Mapped[int | None] = mapped_column(BigInteger)
    fee_cents: Mapped[int] = mapped_column(BigInteger, default=0)
    method: Mapped[str | None] = mapped_column(String(8))
    bank_account_type: Mapped[str | None] = mapped_column(String(32))
    pay_tries: Mapped[int] = mapped_column(default=0)
    text_receipt_sent: Mapped[bool] = mapped_column(Boolean, default=False)
    # The recording running while a bank-debit authorization is read (see ivr.calls.twilio_api).
    ach_recording_sid: Mapped[str | None] = mapped_column(String(64))
    payment_id: Mapped[int | None] = mapped_column(ForeignKey("payments.id", ondelete="SET NULL"))
    # What the payment being set up is for: None (the bill), "reconnect" or "down_payment".
    payment_purpose: Mapped[str | None] = mapped_column(String(16))
    # The caller heard "you already paid today" and chose to pay again (per account).
    paid_today_confirmed: Mapped[bool] = mapped_column(Boolean, default=False)
    # Arrangement terms read to the caller and not yet recorded ({"kind", "down_cents",
    # "instalments": [["YYYY-MM-DD", cents], ...]}); the arrangement once recorded.
    arrangement_offer: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    arrangement_id: Mapped[int | None] = mapped_column(
        ForeignKey("arrangements.id", ondelete="SET NULL"))
    prompts_version: Mapped[str] = mapped_column(String(16), default="")
    # How the call ended (NULL while it goes on).
    outcome: Mapped[CallOutcome | None] = mapped_column(EnumText(CallOutcome, 32))
    call_status: Mapped[str | None] = mapped_column(String(20))
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    ended_at: Mapped[datetime | None] = mapped_column()

    account: Mapped[Account | None] = relationship()


class CallEvent(Base):
    """One step of a call's path: a state reached and what came of it. Never holds digits."""

    __tablename__ = "call_events"

    id: Mapped[int] = mapped_column(primary_key=True)
    call_sid: Mapped[str] = mapped_column(String(64), index=True)
    at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    state: Mapped[str] = mapped_column(String(40))
    event: Mapped[str] = mapped_column(String(32))
    detail: Mapped[str] = mapped_column(String(120), default="")
    language: Mapped[str] = mapped_column(String(8), default="")
