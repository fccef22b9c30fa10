"""A webhook's transaction: one connection, and an ORM session on it only when asked for.

Most webhooks read their call, a few rows about it, and write the call back: statements
that run on the driver (ivr.db_driver). The ORM session around them (creating it, its
transaction's bookkeeping, its commit and close) cost more than the statements themselves
did: about twice a plain connection's begin and commit (docs/performance-log.md). A
``WebhookTransaction`` holds the connection and its transaction; the session is created on
that connection, owning its transaction, the first time a state asks for one (``session``):
a payment, an arrangement, a lockout's failure, a read of an object. What a session needs
from the work before it carries over: ``info``, and the rows read as mapped objects
(``adopt``), which become the session's own as if it had loaded them.

Code that serves both a webhook and the console takes a ``DbHandle``: this, or a Session.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, ClassVar, TypeVar

from sqlalchemy import Connection, Engine
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.orm.attributes import instance_state

from ivr.db_rows import MappedRow, attach

M = TypeVar("M")


class WebhookTransaction:
    """One webhook's transaction on one connection; ``session`` only when a state asks."""

    # Run before a commit made without a session (a session's commit has its own events):
    # what is queued in ``info`` to be written with the transaction (ivr.calls.call_row).
    before_commit: ClassVar[list[Callable[[WebhookTransaction], None]]] = []

    def __init__(self, engine: Engine, sessions: sessionmaker[Session]) -> None:
        self._engine = engine
        self._sessions = sessions
        self._connection: Connection | None = None
        self._session: Session | None = None
        self._info: dict[Any, Any] = {}
        # Rows read as mapped objects, by identity key, until a session adopts them.
        self._adopted: dict[Any, Any] = {}
        # The commit's answer, when it is read after the webhook's (``read_commit_later``).
        self._unread: Callable[[float | None], object] | None = None

    @property
    def info(self) -> dict[Any, Any]:
        """Scratch space for the transaction (the session's own, once there is one)."""
        return self._session.info if self._session is not None else self._info

    def connection(self) -> Connection:
        """The connection, in a transaction (begun here, or by the session)."""
        connection = self._connection
        if connection is None:
            connection = self._connection = self._engine.connect()
        if not connection.in_transaction():
            # Driver statements run on the cursor, which begins nothing by itself.
            connection.begin()
        return connection

    @property
    def session(self) -> Session:
        """The ORM session on this transaction's connection, created on first use."""
        if self._session is None:
            # control_fully: the session's commit commits the connection's transaction (a
            # payment made durable before its real-time post), and a later statement begins
            # the next one as any session would.
            session = self._sessions(bind=self.connection(),
                                     join_transaction_mode="control_fully")
            session.connection()  # the session's transaction is now the connection's
            session.info.update(self._info)
            for obj in self._adopted.values():
                attach(session, obj)
            self._session = session
        return self._session

    def adopt(self, row: MappedRow[M], values: Sequence[Any]) -> M:
        """The row as a mapped object: the one read before in this transaction, else a new
        one, which the session takes as its own (as if loaded) once there is a session."""
        if self._session is not None:
            return row.persistent(self._session, values)
        key = row.identity_key(values)
        found: M | None = self._adopted.get(key)
        if found is None:
            found = self._adopted[key] = row.untracked(values)
        return found

    def get(self, model: type[M], primary_key: Any) -> M | None:
        """The object of ``model`` with this primary key, as ``Session.get``: the one read
        in this transaction if any (no session needed), else the session's."""
        if self._session is None:
            for key, obj in self._adopted.items():
                if key[0] is model and key[1] == (primary_key,):
                    return obj  # type: ignore[no-any-return]
        return self.session.get(model, primary_key)

    @property
    def alone(self) -> bool:
        """Whether the connection's own statements are the whole transaction: no ORM
        session, and no object read here changed (which a session would write first)."""
        return self._session is None and not self._changed()

    def _changed(self) -> bool:
        return any(instance_state(obj).modified for obj in self._adopted.values())

    def read_commit_later(self, unread: Callable[[float | None], object]) -> None:
        """The COMMIT has been sent, its answer is left unread: ``unread(seconds)`` reads it.
        Nothing more is sent on the connection; ``finish_commit`` reads the answer and
        gives the connection back, once the webhook has been answered."""
        self._unread = unread

    @property
    def commit_unread(self) -> bool:
        """Whether the COMMIT's answer is still to be read (``finish_commit``)."""
        return self._unread is not None

    def finish_commit(self, timeout: float) -> None:
        """Read the answer of the COMMIT sent earlier (within ``timeout`` seconds), then give
        the connection back; raises what the write or its commit met, the connection then
        dropped (it may still be waiting for that answer)."""
        unread, self._unread = self._unread, None
        connection = self._connection
        if unread is None or connection is None:
            return
        try:
            unread(timeout)
            connection.commit()  # the bookkeeping: nothing left to send
        except BaseException:
            connection.invalidate()
            raise
        finally:
            connection.close()

    def commit(self) -> None:
        """Commit the transaction (through the session, when there is one)."""
        if self._unread is not None:
            return  # sent already (read_commit_later)
        if self._session is None and self._changed():
            self.session  # noqa: B018 - takes the changed rows, which its commit writes
        if self._session is not None:
            self._session.commit()
        else:
            for hook in self.before_commit:
                hook(self)
        if self._connection is not None and self._connection.in_transaction():
            self._connection.commit()

    def rollback(self) -> None:
        """Roll the transaction back; what ``info`` queued is dropped with it."""
        if self._unread is not None:
            return  # the COMMIT is sent: finish_commit learns whether it held
        if self._session is not None:
            self._session.rollback()
        else:
            self._info.clear()
        if self._connection is not None and self._connection.in_transaction():
            self._connection.rollback()

    def close(self) -> None:
        """Give the connection back to the pool (a transaction still open is rolled back);
        with a COMMIT's answer unread, ``finish_commit`` does."""
        if self._unread is not None:
            return
        if self._session is not None:
            self._session.close()
        if self._connection is not None:
            self._connection.close()


DbHandle = Session | WebhookTransaction


def session_of(handle: DbHandle) -> Session:
    """The ORM session of ``handle`` (created now for a webhook's transaction)."""
    return handle if isinstance(handle, Session) else handle.session
