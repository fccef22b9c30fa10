"""Accounting connectors' own state, kept in the line's database (the connector_state table).

Every node (web workers, `ivr worker` processes, other machines) reads and writes the same
rows, so a token one node rotated is the one the next node uses. Each write is one short
transaction of its own, never the caller's, so a connector may rotate a token in the middle
of a post without holding any other lock.
"""

from __future__ import annotations

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from connectors.accounting.state import check_key
from ivr.db import Database
from ivr.models import ConnectorState, utcnow


class DatabaseStateStore:
    """The StateStore of one accounting system (``system``, as IVR_ACCOUNTING names it)."""

    def __init__(self, database: Database, system: str) -> None:
        self.database = database
        self.system = system

    def get(self, key: str) -> str | None:
        """The stored value (None: never written)."""
        check_key(key)
        with self.database.session() as db:
            return db.scalar(select(ConnectorState.value).where(
                ConnectorState.system == self.system, ConnectorState.key == key))

    def put(self, key: str, value: str, *, expected: str | None) -> bool:
        """Store ``value`` if the current value is ``expected`` (None: not yet written).

        The comparison happens in the write itself: an UPDATE whose WHERE names the expected
        value, or an INSERT the primary key refuses to a second writer. Of two nodes rotating
        at once, the second waits for the first's row lock, then finds the value changed and
        writes nothing (False), on PostgreSQL and SQLite alike.
        """
        check_key(key)
        with self.database.session() as db:
            if expected is None:
                db.add(ConnectorState(system=self.system, key=key, value=value))
                try:
                    db.flush()
                except IntegrityError:
                    db.rollback()
                    return False
                return True
            changed = db.execute(
                update(ConnectorState)
                .where(ConnectorState.system == self.system, ConnectorState.key == key,
                       ConnectorState.value == expected)
                .values(value=value, updated_at=utcnow())
                .execution_options(synchronize_session=False))
            return bool(changed.rowcount)  # type: ignore[attr-defined]
