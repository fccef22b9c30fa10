"""The account cache, its import staging, and the runs that fill it (files, SFTP, locks)."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Date,
    ForeignKey,
    Index,
    Integer,
    Numeric,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from connectors.files.columns import AccountStatus
from ivr.models.base import Base, EnumText, utcnow
from ivr.statuses import (
    ImportStatus,
    IngestOutcome,
    SyncKind,
    SyncRunStatus,
)


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
    ach_allowed: Mapped[bool] = mapped_column(Boolean, default=True)
    card_allowed: Mapped[bool] = mapped_column(Boolean, default=True)
    minimum_payment_cents: Mapped[int | None] = mapped_column(BigInteger)
    full_payment_required: Mapped[bool] = mapped_column(Boolean, default=False)
    reconnect_cents: Mapped[int | None] = mapped_column(BigInteger)
    service_start_date: Mapped[date | None] = mapped_column(Date)
    broken_arrangements_12m: Mapped[int] = mapped_column(Integer, default=0)
    returned_payments_12m: Mapped[int] = mapped_column(Integer, default=0)
    arrangement_eligible: Mapped[bool | None] = mapped_column(Boolean)


class Account(AccountFields, Base):
    """One biller account as last loaded from a file or API (the cache the call reads)."""

    __tablename__ = "accounts"

    id: Mapped[int] = mapped_column(primary_key=True)
    account_number: Mapped[str] = mapped_column(String(32), unique=True)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    # Bank payments off through this day after a return that means the account cannot be
    # debited (ivr/money/reversals.py). Ours, not the biller's: no import ever writes it.
    ach_off_until: Mapped[date | None] = mapped_column(Date)

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
