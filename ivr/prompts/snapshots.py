"""The line's prompts in the database: every node speaks the newest version kept here.

Each good version (settings and wording files, name to text) is a row of ``prompt_snapshots``;
the row with the highest id is the current version, and that id is the cheap stamp every node
compares with the one it speaks. A version that comes back (a revert) is moved to a new row, so
it becomes current again. Old versions keep their row (so a node whose prompts folder still
holds one never publishes it again) but not their files.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from sqlalchemy import delete, func, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ivr.db import READ_ONLY, Database
from ivr.models import PromptSnapshot, utcnow

# Versions whose files are kept: enough to look back at recent good states.
KEEP = 20
# pg_advisory_xact_lock key for "one prompt change at a time" across every node.
_LOCK_KEY = 0x1F0_0014


@dataclass(frozen=True)
class Kept:
    """The current version in the database: its stamp (row id), version and files."""

    stamp: int
    version: str
    files: Mapping[str, str]


def lock_prompts(db: Session) -> None:
    """Hold the prompt-change lock until ``db``'s transaction ends (every node; SQLite's
    write lock, taken at the start of every transaction, already serialises them)."""
    if db.get_bind().dialect.name == "postgresql":
        db.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _LOCK_KEY})


def current(db: Session) -> Kept | None:
    """The newest version kept, or None when the database has none yet."""
    row = db.scalar(select(PromptSnapshot).order_by(PromptSnapshot.id.desc()).limit(1))
    if row is None or not row.files:
        return None
    return Kept(row.id, row.version, {str(k): str(v) for k, v in row.files.items()})


def known(db: Session, version: str) -> bool:
    """Whether ``version`` was ever kept (current or older)."""
    return db.scalar(select(PromptSnapshot.id).where(PromptSnapshot.version == version)) is not None


def publish(db: Session, version: str, files: Mapping[str, str]) -> int:
    """Make ``version`` the current one (the caller holds lock_prompts); return its stamp."""
    db.execute(delete(PromptSnapshot).where(PromptSnapshot.version == version))
    row = PromptSnapshot(version=version, saved_at=utcnow(), files=dict(files))
    db.add(row)
    db.flush()
    recent = select(PromptSnapshot.id).order_by(PromptSnapshot.id.desc()).limit(KEEP)
    db.execute(update(PromptSnapshot).where(PromptSnapshot.id.not_in(recent))
               .values(files={}))
    return row.id


class PromptSnapshots:
    """``ivr.prompts.catalog.Snapshots`` on the app's database."""

    def __init__(self, database: Database) -> None:
        self.database = database

    def stamp(self) -> int | None:
        """The current version's stamp (one indexed read)."""
        # Read-only: every node asks several times a second; on SQLite it must not queue
        # for the write lock behind the webhooks.
        with self.database.engine.connect().execution_options(**{READ_ONLY: True}) as conn:
            value = conn.execute(select(func.max(PromptSnapshot.id))).scalar()
            # Ended by a commit: the pool's rollback would also make psycopg drop the
            # connection's prepared statements, which the webhooks on it then prepare again.
            conn.commit()
        return None if value is None else int(value)

    def current(self) -> Kept | None:
        """The newest version kept."""
        with self.database.session() as db:
            return current(db)

    def offer(self, version: str, files: Mapping[str, str]) -> None:
        """A prompts folder that loaded cleanly: make it current unless this version was
        ever kept (a folder left behind by a newer edit elsewhere must not win)."""
        try:
            with self.database.session() as db:
                lock_prompts(db)
                if not known(db, version):
                    publish(db, version, files)
        except IntegrityError:
            return  # the same version, kept by another process meanwhile
