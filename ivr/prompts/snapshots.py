"""The last good prompt catalog, kept in the database so every machine can fall back on it."""

from __future__ import annotations

from collections.abc import Mapping

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError

from ivr.db import Database
from ivr.models import PromptSnapshot, utcnow

# Versions kept: enough to look back at recent good states, never a growing table.
KEEP = 20


class PromptSnapshots:
    """``ivr.prompts.catalog.Snapshots`` on the app's database."""

    def __init__(self, database: Database) -> None:
        self.database = database

    def save(self, version: str, files: Mapping[str, str]) -> None:
        """Keep a good catalog's files once per version (a twin machine may race us); a
        version that comes back (a revert) becomes the latest again."""
        try:
            with self.database.session() as db:
                kept = db.scalar(select(PromptSnapshot)
                                 .where(PromptSnapshot.version == version))
                if kept is not None:
                    kept.saved_at = utcnow()
                    return
                db.add(PromptSnapshot(version=version, saved_at=utcnow(), files=dict(files)))
                db.flush()
                keep = select(PromptSnapshot.id).order_by(
                    PromptSnapshot.saved_at.desc(), PromptSnapshot.id.desc()).limit(KEEP)
                db.execute(delete(PromptSnapshot).where(PromptSnapshot.id.not_in(keep)))
        except IntegrityError:
            return  # the same version, kept by another process meanwhile

    def latest(self) -> Mapping[str, str] | None:
        """The most recently kept catalog's files."""
        with self.database.session() as db:
            files = db.scalar(select(PromptSnapshot.files).order_by(
                PromptSnapshot.saved_at.desc(), PromptSnapshot.id.desc()).limit(1))
        return {str(k): str(v) for k, v in files.items()} if files else None
