"""Ops console users: hashed passwords, and sign-in with a rate limit kept in the database.

The limit lives in a table (not in process memory) so it holds across gunicorn workers and
machines. A refusal says the same thing whether or not the user exists.

A session cookie cannot be taken back once issued, so each session carries its user's
``session_generation``; signing out, a new password or disabling the user bumps it, which
ends every session of that user on every machine.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session
from werkzeug.security import check_password_hash, generate_password_hash

from ivr.models import OpsLoginAttempt, OpsUser
from ivr.statuses import LoginOutcome, UserRole

USERNAME = re.compile(r"[a-z0-9][a-z0-9._@-]{0,79}")
MIN_PASSWORD_LENGTH = 12
MAX_PASSWORD_LENGTH = 1024
# Failures within WINDOW that lock sign-in for LOCKOUT: for one username from one client
# address, and for one address whatever the usernames. Never for a username alone: then
# anyone could lock an operator out by typing wrong passwords for them. Per address the bar
# is higher: an office behind one NAT address shares it (see docs/ops-console.md).
USER_FAILURES = 5
ADDRESS_FAILURES = 10
WINDOW = timedelta(minutes=15)
LOCKOUT = timedelta(minutes=15)
KEEP_ATTEMPTS = timedelta(days=1)

class UserError(ValueError):
    """A user cannot be created or changed; the message says why."""


def normalize_username(raw: str) -> str:
    """Usernames compare case-insensitively and without surrounding spaces."""
    return raw.strip().lower()[:80]


def password_problems(password: str) -> list[str]:
    """Why a new password is not acceptable ([] when it is)."""
    problems = []
    if len(password) < MIN_PASSWORD_LENGTH:
        problems.append(f"the password needs at least {MIN_PASSWORD_LENGTH} characters")
    if len(password) > MAX_PASSWORD_LENGTH:
        problems.append(f"the password may have at most {MAX_PASSWORD_LENGTH} characters")
    if password.strip() != password:
        problems.append("the password must not start or end with spaces")
    return problems


def add_user(db: Session, username: str, password: str, now: datetime, *,
             reset: bool = False, role: str | None = None) -> OpsUser:
    """Create a user (or, with ``reset``, set a new password and enable them again).

    ``role`` is "admin" (the default for a new user), "agent" or "viewer"; on a reset,
    None keeps the user's role.
    """
    if role is not None and role not in set(UserRole):
        raise UserError(f"a role is one of {', '.join(UserRole)}")
    name = normalize_username(username)
    if not USERNAME.fullmatch(name):
        raise UserError("a username is 1 to 80 letters, digits, '.', '_', '-' or '@', "
                        "starting with a letter or digit")
    problems = password_problems(password)
    if problems:
        raise UserError("; ".join(problems))
    user = db.scalar(select(OpsUser).where(OpsUser.username == name))
    if user is not None and not reset:
        raise UserError(f"user {name!r} exists already (use --reset to set a new password)")
    if user is None:
        if reset:
            raise UserError(f"no user {name!r}")
        user = OpsUser(username=name, created_at=now, role=UserRole.ADMIN)
        db.add(user)
    else:
        end_sessions(db, user.id)  # whoever knew the old password is signed out
    user.password_hash = generate_password_hash(password)
    user.disabled = False
    if role is not None:
        user.role = role  # on a reset, the user's sessions ended above
    db.flush()
    return user


def disable_user(db: Session, username: str) -> bool:
    """Stop a user from signing in and end their open sessions."""
    user = db.scalar(select(OpsUser).where(OpsUser.username == normalize_username(username)))
    if user is None:
        return False
    user.disabled = True
    end_sessions(db, user.id)
    return True


def end_sessions(db: Session, user_id: int) -> None:
    """End every session of a user, on every machine (sign-out, new password, disabling)."""
    # One UPDATE, not read-then-write: two sign-outs at once must both count.
    db.execute(update(OpsUser).where(OpsUser.id == user_id)
               .values(session_generation=OpsUser.session_generation + 1)
               .execution_options(synchronize_session="fetch"))


def locked_until(db: Session, username: str, address: str, now: datetime) -> datetime | None:
    """When sign-in opens again for this username from this address, or for this address
    (None: it is open now)."""
    since = now - WINDOW - LOCKOUT
    last_ok = db.scalar(select(func.max(OpsLoginAttempt.at)).where(
        OpsLoginAttempt.username == username, OpsLoginAttempt.address == address,
        OpsLoginAttempt.outcome == LoginOutcome.OK))
    user_since = max(since, last_ok) if last_ok is not None else since
    by_user = list(db.scalars(select(OpsLoginAttempt.at).where(
        OpsLoginAttempt.username == username, OpsLoginAttempt.address == address,
        OpsLoginAttempt.outcome == LoginOutcome.FAILED, OpsLoginAttempt.at > user_since)
        .order_by(OpsLoginAttempt.at)))
    by_address = list(db.scalars(select(OpsLoginAttempt.at).where(
        OpsLoginAttempt.address == address, OpsLoginAttempt.outcome == LoginOutcome.FAILED,
        OpsLoginAttempt.at > since).order_by(OpsLoginAttempt.at)))
    ends = [end for end in (_lock_end(by_user, USER_FAILURES),
                            _lock_end(by_address, ADDRESS_FAILURES)) if end is not None]
    until = max(ends, default=None)
    return until if until is not None and until > now else None


def _lock_end(failures: list[datetime], limit: int) -> datetime | None:
    """LOCKOUT after the failure that made ``limit`` failures within WINDOW (latest such)."""
    end = None
    for i in range(limit - 1, len(failures)):
        if failures[i] - failures[i - limit + 1] <= WINDOW:
            end = failures[i] + LOCKOUT
    return end


@dataclass(frozen=True)
class LoginResult:
    """A signed-in user, or why not: refused_until is set while sign-in is locked."""

    user: OpsUser | None
    refused_until: datetime | None = None


def attempt_login(db: Session, username: str, password: str, address: str,
                  now: datetime) -> LoginResult:
    """Check a sign-in and record it (the caller commits)."""
    name = normalize_username(username)
    address = address[:64]
    db.execute(delete(OpsLoginAttempt).where(OpsLoginAttempt.at < now - KEEP_ATTEMPTS))
    until = locked_until(db, name, address, now)
    if until is not None:
        db.add(OpsLoginAttempt(at=now, username=name, address=address,
                               outcome=LoginOutcome.REFUSED))
        return LoginResult(None, until)
    user = db.scalar(select(OpsUser).where(OpsUser.username == name)) if name else None
    if user is None:
        # Same work as for a real user, so timing does not tell which usernames exist.
        check_password_hash(_dummy(), password)
        ok = False
    else:
        ok = check_password_hash(user.password_hash, password) and not user.disabled
    db.add(OpsLoginAttempt(at=now, username=name, address=address,
                           outcome=LoginOutcome.OK if ok else LoginOutcome.FAILED))
    if not ok or user is None:
        return LoginResult(None)
    user.last_login_at = now
    return LoginResult(user)


def active_user(db: Session, user_id: object, generation: object) -> OpsUser | None:
    """The session's user while still enabled and none of their sessions was ended since
    this one began (``generation`` is the one stored at sign-in), else None."""
    if not isinstance(user_id, int) or not isinstance(generation, int):
        return None
    user = db.get(OpsUser, user_id)
    if user is None or user.disabled or user.session_generation != generation:
        return None
    return user


def recent_failures(db: Session, now: datetime) -> int:
    """Failed sign-ins in the last WINDOW (for the home page)."""
    return int(db.scalar(select(func.count()).select_from(OpsLoginAttempt).where(
        OpsLoginAttempt.at > now - WINDOW,
        OpsLoginAttempt.outcome.in_((LoginOutcome.FAILED, LoginOutcome.REFUSED)))) or 0)


@functools.cache
def _dummy() -> str:
    return generate_password_hash("not a password of anyone")
