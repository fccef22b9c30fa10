"""Database tables: the account cache, per-call state, payments and their outbox.

Money is integer cents (BigInteger); every timestamp is stored as timezone-aware UTC.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any, TypeVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    Numeric,
    PrimaryKeyConstraint,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

from connectors.files.columns import AccountStatus
from ivr.statuses import (
    CallOutcome,
    ImportStatus,
    IngestOutcome,
    LoginOutcome,
    OutboxStatus,
    PostingOutcome,
    PostingStatus,
    SyncKind,
    SyncRunStatus,
)


def utcnow() -> datetime:
    """The current time, aware, in UTC."""
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """An aware UTC datetime on every backend (SQLite has no time zones of its own)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given where aware UTC is required")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


E = TypeVar("E", bound=StrEnum)


class EnumText(TypeDecorator[E]):
    """A StrEnum stored as its plain string (VARCHAR), read back as a member.

    The column stays text, so existing rows and migrations are unchanged; a word outside the
    enum is refused on the way in, never stored.
    """

    impl = String
    cache_ok = True

    def __init__(self, enum: type[E], length: int) -> None:
        super().__init__(length)
        self.enum = enum

    def process_bind_param(self, value: E | str | None, dialect: Dialect) -> str | None:
        return None if value is None else self.enum(value).value

    def process_result_value(self, value: str | None, dialect: Dialect) -> E | None:
        return None if value is None else self.enum(value)


class Base(DeclarativeBase):
    """Declarative base with the project's type map."""

    type_annotation_map: dict[Any, Any] = {  # noqa: RUF012 - SQLAlchemy reads this class attribute
        datetime: UTCDateTime(),
        int: Integer(),
    }


class AccountFields:
    """What a biller tells us about an account: the cache and the import staging share it.

    One attribute per cached column of connectors/files/columns.py, in the SQL type of its
    kind (tests/test_columns.py checks that they agree).
    """

    customer_name: Mapped[str] = mapped_column(String(200), default="")
    service_zip: Mapped[str | None] = mapped_column(String(10))
    pin_hash: Mapped[str | None] = mapped_column(String(200))
    balance_due_cents: Mapped[int] = mapped_column(BigInteger, default=0)
    past_due_cents: Mapped[int] = mapped_column(BigInteger, default=0)
    due_date: Mapped[date | None] = mapped_column(Date)
    last_payment_cents: Mapped[int | None] = mapped_column(BigInteger)
    last_payment_date: Mapped[date | None] = mapped_column(Date)
    status: Mapped[str] = mapped_column(String(32), default=AccountStatus.ACTIVE.value)
    disconnect_date: Mapped[date | None] = mapped_column(Date)
    usage_amount: Mapped[Decimal | None] = mapped_column(Numeric(14, 3))
    usage_unit: Mapped[str | None] = mapped_column(String(32))
    usage_period_end: Mapped[date | None] = mapped_column(Date)
    language: Mapped[str] = mapped_column(String(8), default="en")
    payment_allowed: Mapped[bool] = mapped_column(Boolean, default=True)


class Account(AccountFields, Base):
    """One biller account as last loaded from a file or API (the cache the call reads)."""

    __tablename__ = "accounts"

    id: Mapped[int] = mapped_column(primary_key=True)
    account_number: Mapped[str] = mapped_column(String(32), unique=True)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    phones: Mapped[list[AccountPhone]] = relationship(
        back_populates="account", cascade="all, delete-orphan"
    )


class AccountPhone(Base):
    """A phone number (E.164) on file for an account, for caller-ID matching."""

    __tablename__ = "account_phones"
    __table_args__ = (UniqueConstraint("account_id", "phone"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    phone: Mapped[str] = mapped_column(String(20), index=True)

    account: Mapped[Account] = relationship(back_populates="phones")


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


class CallSession(Base):
    """Everything the line remembers about one call, keyed by Twilio's CallSid."""

    __tablename__ = "call_sessions"
    # Calls waiting in <Pay> right now are few; the card-testing limits count them.
    __table_args__ = (Index("ix_call_sessions_state_started", "state", "started_at"),)

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
    # queued until the accounting system acknowledges it (see the posting worker).
    posting_status: Mapped[PostingStatus] = mapped_column(EnumText(PostingStatus, 16),
                                                          default=PostingStatus.QUEUED)
    paid_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)


class OutboxEntry(Base):
    """A payment to post to the accounting system; written with the payment.

    status: pending (to post; retried with backoff), posted (acknowledged, receipt_id set),
    dead (refused or out of attempts; waits for a person). A claim (claimed_by until
    claimed_until) keeps two posters off one row; a crashed poster's claim simply expires.
    """

    __tablename__ = "outbox"
    __table_args__ = (Index("ix_outbox_due", "status", "next_attempt_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    payment_id: Mapped[int] = mapped_column(ForeignKey("payments.id"), unique=True)
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

    payment: Mapped[Payment] = relationship()


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


class ImportRun(Base):
    """One account file import: what was applied or why it was rejected."""

    __tablename__ = "import_runs"

    id: Mapped[int] = mapped_column(primary_key=True)
    source: Mapped[str] = mapped_column(String(500))
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column()
    status: Mapped[ImportStatus] = mapped_column(EnumText(ImportStatus, 16))
    records: Mapped[int] = mapped_column(default=0)
    rejected: Mapped[int] = mapped_column(default=0)
    report: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class AccountStaging(AccountFields, Base):
    """Rows of an account file being imported, before they are merged into the cache at once."""

    __tablename__ = "accounts_staging"
    __table_args__ = (UniqueConstraint("import_id", "account_number"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    import_id: Mapped[str] = mapped_column(String(36), index=True)
    staged_at: Mapped[datetime] = mapped_column(default=utcnow)
    account_number: Mapped[str] = mapped_column(String(32))


class AccountPhoneStaging(Base):
    """Phone numbers of staged accounts, merged with their accounts in one statement."""

    __tablename__ = "account_phones_staging"
    # A chunk of the merge finds its accounts' phones by this (migration 0009).
    __table_args__ = (Index("ix_account_phones_staging_import_account", "import_id",
                            "account_number"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    import_id: Mapped[str] = mapped_column(String(36), index=True)
    account_number: Mapped[str] = mapped_column(String(32))
    phone: Mapped[str] = mapped_column(String(20))


class SyncRun(Base):
    """One `ivr sync pull` or `ivr sync push`: what it moved and how it ended."""

    __tablename__ = "sync_runs"

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[SyncKind] = mapped_column(EnumText(SyncKind, 8))
    status: Mapped[SyncRunStatus] = mapped_column(EnumText(SyncRunStatus, 12))
    started_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    finished_at: Mapped[datetime | None] = mapped_column()
    host: Mapped[str] = mapped_column(String(120), default="")
    files: Mapped[list[Any]] = mapped_column(JSON, default=list)
    records: Mapped[int] = mapped_column(default=0)
    rejected: Mapped[int] = mapped_column(default=0)
    interval_start: Mapped[datetime | None] = mapped_column()
    interval_end: Mapped[datetime | None] = mapped_column()
    detail: Mapped[str] = mapped_column(Text, default="")


class IngestedFile(Base):
    """An inbound file seen by `ivr sync pull`, so each remote file is ingested once."""

    __tablename__ = "ingested_files"
    __table_args__ = (UniqueConstraint("name", "size", "mtime", "sha256"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(255), index=True)
    size: Mapped[int] = mapped_column(BigInteger)
    mtime: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    status: Mapped[IngestOutcome] = mapped_column(EnumText(IngestOutcome, 12))
    records: Mapped[int] = mapped_column(default=0)
    rejected: Mapped[int] = mapped_column(default=0)
    run_id: Mapped[int | None] = mapped_column(ForeignKey("sync_runs.id", ondelete="SET NULL"))
    import_run_id: Mapped[int | None] = mapped_column(
        ForeignKey("import_runs.id", ondelete="SET NULL"))
    seen_at: Mapped[datetime] = mapped_column(default=utcnow)


class JobLock(Base):
    """A named lock held in the database, so a job refuses to overlap with a running twin
    even on another machine. A crashed holder's lock expires."""

    __tablename__ = "job_locks"

    name: Mapped[str] = mapped_column(String(40), primary_key=True)
    holder: Mapped[str] = mapped_column(String(120))
    acquired_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime] = mapped_column()


class OpsUser(Base):
    """A person who may sign in to the ops console (created by `ivr ops add-user`)."""

    __tablename__ = "ops_users"

    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(80), unique=True)
    # werkzeug.security hash (scrypt by default); the password itself is never stored.
    password_hash: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_login_at: Mapped[datetime | None] = mapped_column()
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    # Bumped by sign-out, a password reset or disabling: every session carrying an older
    # generation ends, on every machine (cookies alone cannot be revoked).
    session_generation: Mapped[int] = mapped_column(default=0, server_default="0")


class OpsLoginAttempt(Base):
    """One sign-in attempt, kept in the database so the rate limit holds across workers."""

    __tablename__ = "ops_login_attempts"
    __table_args__ = (Index("ix_ops_login_attempts_username_at", "username", "at"),
                      Index("ix_ops_login_attempts_address_at", "address", "at"))

    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    username: Mapped[str] = mapped_column(String(80))
    address: Mapped[str] = mapped_column(String(64))
    outcome: Mapped[LoginOutcome] = mapped_column(EnumText(LoginOutcome, 12))


class PromptVersion(Base):
    """One change to a prompt's wording made in the ops console (a revert is a change too).

    ``old_text``/``new_text`` are None where the variant did not exist before / was removed.
    """

    __tablename__ = "prompt_versions"
    __table_args__ = (Index("ix_prompt_versions_prompt_at", "prompt_id", "at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    prompt_id: Mapped[str] = mapped_column(String(120))
    language: Mapped[str] = mapped_column(String(16))
    variant: Mapped[str] = mapped_column(String(16))
    old_text: Mapped[str | None] = mapped_column(Text)
    new_text: Mapped[str | None] = mapped_column(Text)
    username: Mapped[str] = mapped_column(String(80))
    at: Mapped[datetime] = mapped_column(default=utcnow)
    note: Mapped[str] = mapped_column(String(500), default="")


class PromptSnapshot(Base):
    """A catalog (settings and wording files) that loaded cleanly, so a line whose prompts
    folder is broken at start still speaks the last good wording, on every machine."""

    __tablename__ = "prompt_snapshots"

    id: Mapped[int] = mapped_column(primary_key=True)
    version: Mapped[str] = mapped_column(String(64), unique=True)
    saved_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    # File name (relative to the prompts folder) to its text.
    files: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class ConnectorState(Base):
    """A value an accounting connector keeps for itself (an OAuth refresh token that rotates
    on every use, say), shared by every node; see connectors.accounting.state."""

    __tablename__ = "connector_state"
    __table_args__ = (PrimaryKeyConstraint("system", "key"),)

    system: Mapped[str] = mapped_column(String(20))  # the registry's name, as IVR_ACCOUNTING
    key: Mapped[str] = mapped_column(String(100))
    value: Mapped[str] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
