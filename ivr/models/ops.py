"""The ops console's users, sign-ins and prompt history; connectors' shared state."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Index,
    PrimaryKeyConstraint,
    String,
    Text,
)
from sqlalchemy.orm import Mapped, mapped_column

from ivr.models.base import Base, EnumText, utcnow
from ivr.statuses import (
    LoginOutcome,
)


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
    # What the user may do (ivr.ops.roles): "admin", "agent" or "viewer". Users from before
    # roles existed are admins.
    role: Mapped[str] = mapped_column(String(16), default="admin", server_default="admin")


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
