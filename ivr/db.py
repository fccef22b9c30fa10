"""Engine, sessions and schema migrations (Alembic)."""

from __future__ import annotations

import random
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from ivr.db_webhook import WebhookTransaction
from ivr.models import CallEvent, CallSession

if TYPE_CHECKING:
    # Alembic is imported only to migrate (about 11 MB and 150 ms per process): a web or
    # worker process never migrates.
    from alembic.config import Config as AlembicConfig

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"


# Pooled connections are replaced after this long (PgBouncer, firewalls and load balancers
# commonly drop connections idle for 10-60 minutes).
RECYCLE_SECONDS = 600
# How long a SQLite writer waits for another when no web timeouts apply (CLI jobs).
SQLITE_BUSY_MS = 10_000


@dataclass(frozen=True)
class WebTimeouts:
    """Limits on the web app's database work, so a webhook fails fast instead of hanging.

    CLI jobs (`ivr accounts import`, `ivr worker`...) run without them: their statements may
    legitimately take minutes.
    """

    connect_seconds: int  # libpq connect_timeout: whole seconds, and at least 2
    statement_ms: int  # PostgreSQL statement_timeout
    lock_ms: int  # PostgreSQL lock_timeout; SQLite busy timeout
    pool_seconds: float  # waiting for a pooled connection
    pool_size: int  # connections kept per process (as many again may be opened on demand)

    @classmethod
    def within(cls, deadline_ms: int, threads: int) -> WebTimeouts:
        """Timeouts that fail inside a webhook deadline of ``deadline_ms``, for ``threads``.

        A connect, a lock wait and a checkout each take at most a quarter of the deadline and
        a statement half of it, so the usual failures end in a clean error and an apology well
        before the deadline itself has to abandon the work.
        """
        return cls(connect_seconds=max(2, deadline_ms // 4000), statement_ms=deadline_ms // 2,
                   lock_ms=deadline_ms // 4, pool_seconds=deadline_ms / 4000,
                   pool_size=threads)


def _sqlite_pragmas(busy_ms: int, dbapi_connection: Any, _record: Any) -> None:
    # WAL lets callers read while a payment is written; busy_timeout is SQLite's own short
    # wait (a writer's longer wait is _sqlite_begin's); foreign keys are off by default.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute(f"PRAGMA busy_timeout={int(busy_ms)}")
    cursor.execute("PRAGMA journal_mode=WAL")
    # Under WAL, NORMAL syncs at checkpoints, not on every commit: a commit stays atomic and
    # the database consistent; only a power cut (not a crash of the process) may lose the
    # last commits before it. FULL's fsync per commit was the webhook's largest single cost.
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()
    # Let SQLAlchemy, not pysqlite, open transactions (see _sqlite_begin).
    dbapi_connection.isolation_level = None


def _postgres_timeouts(timeouts: WebTimeouts, dbapi_connection: Any, record: Any) -> None:
    # Session settings, committed: a SET inside a transaction that is later rolled back
    # (as the pool does on every return) would be undone. A SET, unlike libpq's "options",
    # also passes through PgBouncer. idle_in_transaction frees the row lock of a webhook
    # whose process stopped mid-transaction.
    cursor = dbapi_connection.cursor()
    cursor.execute(f"SET statement_timeout = {int(timeouts.statement_ms)}")
    cursor.execute(f"SET lock_timeout = {int(timeouts.lock_ms)}")
    cursor.execute("SET idle_in_transaction_session_timeout = "
                   f"{int(timeouts.statement_ms * 2)}")
    # A webhook's transaction commits without waiting for its WAL to reach the disk, unless
    # it wrote more than its call's progress (_note_write, _durable_commit).
    cursor.execute("SET synchronous_commit = off")
    cursor.close()
    dbapi_connection.commit()
    record.info[_WATCHED] = True


# Execution option of a statement that writes only a call's progress (its call_sessions row,
# its steps in call_events: ivr.calls.call_row); a plain INSERT or UPDATE of those tables
# (the ORM's flush of a call) is one too. On the served app's PostgreSQL, a transaction
# whose every write is call progress commits asynchronously: PostgreSQL's fsync of its
# commit (a fraction of a millisecond here, milliseconds on network disks) is not waited
# for. A crash of the database server may then lose the last few hundred milliseconds of
# call progress (3 x wal_writer_delay), never a payment: any other write in the transaction
# (a payment, an arrangement, a lockout, the outbox) makes its commit wait as the server is
# configured to. SQLite's counterpart is synchronous=NORMAL (_sqlite_pragmas). Only
# statements sent through SQLAlchemy are seen: the one write that goes to the driver itself,
# an import's COPY, is neither on the served app's connections nor worth a flush (an import
# sets synchronous_commit off for its own connection).
CALL_PROGRESS = "ivr_call_progress"
# Set on a connection by a write that is not call progress, until its transaction ends.
_DURABLE = "ivr.durable"
# Set on the served app's PostgreSQL connections, whose writes _note_write watches.
_WATCHED = "ivr.watched"
# How a plain write of a call's progress begins (a plain INSERT or UPDATE writes one table).
_PROGRESS_WRITES = tuple(f"{verb} {table.__tablename__} " for verb in ("INSERT INTO", "UPDATE")
                         for table in (CallSession, CallEvent))


def _note_write(conn: Any, _cursor: Any, statement: str, _parameters: Any, context: Any,
                _executemany: bool) -> None:
    if context is not None and context.execution_options.get(CALL_PROGRESS):
        return
    if statement.startswith(_PROGRESS_WRITES):
        return
    if statement.lstrip()[:6].upper() in ("SELECT", "SHOW"):
        return  # a read (a row lock included)
    # Anything else (a write, or SQL not known to be a read) is kept durable.
    conn.info[_DURABLE] = True


# The commit waits as the server is configured to (on, remote_apply...).
_WAIT_FOR_COMMIT = "SET LOCAL synchronous_commit TO DEFAULT"


def _durable_commit(conn: Any) -> None:
    if conn.info.pop(_DURABLE, False):
        conn.connection.driver_connection.execute(_WAIT_FOR_COMMIT)


def commit_sql(conn: Any) -> bytes:
    """The SQL that commits a PostgreSQL connection's transaction as ``_durable_commit``
    would, for a caller that sends it itself (with its last statement: ivr.calls.call_row)."""
    if conn.info.pop(_DURABLE, False):
        return f"{_WAIT_FOR_COMMIT}; COMMIT".encode()
    return b"COMMIT"


def progress_only(conn: Any) -> bool:
    """Whether the transaction on ``conn`` has written nothing but call progress: known on
    the served app's PostgreSQL connections, whose writes are watched (False elsewhere)."""
    return bool(conn.info.get(_WATCHED)) and not conn.info.get(_DURABLE, False)


def _forget_writes(conn: Any) -> None:
    # An invalidated connection's info goes with its DBAPI connection.
    if not conn.invalidated:
        conn.info.pop(_DURABLE, None)


# Execution option for a connection that only reads (a stamp, a count): a plain BEGIN, which
# neither waits for nor holds up the writers.
READ_ONLY = "ivr_read_only"


def _sqlite_begin(waiting: threading.Lock, lock_seconds: float, conn: Any) -> None:
    # BEGIN IMMEDIATE takes the write lock up front, so two webhooks for one call (a repeated
    # <Pay> callback, say) queue behind each other instead of failing with "database is locked".
    # Straight to the driver: every webhook begins, and SQLAlchemy's statement handling
    # cost more than the BEGIN itself. A "database is locked" here still fails the request.
    driver = conn.connection.driver_connection
    if conn.get_execution_options().get(READ_ONLY):
        driver.execute("BEGIN")
    else:
        _begin_immediate_within(driver, lock_seconds, waiting)


# SQLite's own busy handler backs off to one try every 100 ms. Under a flood of short
# writers (every webhook writes) the webhook that has waited longest then tries least often,
# and can wait out its whole lock budget, "database is locked" and an apology to its caller,
# while newer ones keep getting in: seen at 40 callers without pauses on 2 workers (and a
# worker or an import would starve behind the webhooks the same way). So SQLite waits a few
# milliseconds only, and a writer tries again itself every millisecond or two until its
# budget is spent, one thread of a process at a time (the others queue on a lock of the
# process, in order and without spending CPU): each process tries as often as every other.
SQLITE_TRY_MS = 5
_RETRY_PAUSE_SECONDS = (0.0005, 0.002)


def _begin_immediate_within(driver: sqlite3.Connection, seconds: float,
                            waiting: threading.Lock) -> None:
    """BEGIN IMMEDIATE, tried by the thread holding ``waiting`` until ``seconds`` have passed
    (then "database is locked")."""
    give_up = time.monotonic() + seconds
    if not waiting.acquire(timeout=seconds):
        raise sqlite3.OperationalError("database is locked")
    try:
        _try_begin_immediate(driver, give_up)
    finally:
        waiting.release()


def _try_begin_immediate(driver: sqlite3.Connection, give_up: float) -> None:
    while True:
        try:
            driver.execute("BEGIN IMMEDIATE")
            return
        except sqlite3.OperationalError as exc:
            busy = (getattr(exc, "sqlite_errorcode", 0) or 0) & 0xFF == sqlite3.SQLITE_BUSY
            if not busy or time.monotonic() >= give_up:
                raise
        time.sleep(random.uniform(*_RETRY_PAUSE_SECONDS))  # noqa: S311 - not a secret


class Database:
    """One engine and session factory per application or command.

    ``web`` (the served web app only) bounds connecting, statements, lock waits and pool
    checkouts; without it nothing is bounded, as long CLI jobs need.
    """

    def __init__(self, url: str, *, web: WebTimeouts | None = None) -> None:
        self.url = url
        self.web = web
        parsed = make_url(url)
        self.is_sqlite = parsed.get_backend_name() == "sqlite"
        # No `SELECT 1` on every checkout (a tenth of a webhook's time on PostgreSQL):
        # connections are recycled before servers and proxies drop idle ones, and a webhook
        # whose first statement meets a dead connection retries once (ivr.calls.call_row.load_call).
        # CLI jobs (the outbox worker runs for weeks) keep the ping: it costs them nothing.
        # hide_parameters: an error's text (logged with its traceback) names the statement,
        # never its values: callers' numbers, accounts, names.
        kwargs: dict[str, Any] = {"pool_pre_ping": web is None and not self.is_sqlite,
                                  "pool_recycle": RECYCLE_SECONDS, "hide_parameters": True}
        database = parsed.database or ""
        pooled = not self.is_sqlite or database not in ("", ":memory:")
        if web is not None and pooled:
            # Each request thread and each webhook job may hold a connection at once.
            # PostgreSQL's last in, first out: under light load the same few connections
            # serve every webhook, and keep their prepared statements warm (psycopg prepares
            # a query on a connection once it has run five times there).
            kwargs.update(pool_size=web.pool_size, max_overflow=web.pool_size,
                          pool_timeout=web.pool_seconds, pool_use_lifo=not self.is_sqlite)
        # A writer waits for SQLite's write lock in _sqlite_begin, up to this budget.
        write_wait_ms = web.lock_ms if web is not None else SQLITE_BUSY_MS
        if self.is_sqlite:
            if pooled:
                Path(database).parent.mkdir(parents=True, exist_ok=True)
            kwargs["connect_args"] = {"check_same_thread": False,
                                      "timeout": SQLITE_TRY_MS / 1000}
        elif web is not None:
            kwargs["connect_args"] = {"connect_timeout": web.connect_seconds}
        self.engine: Engine = create_engine(url, **kwargs)
        if self.is_sqlite:
            event.listen(self.engine, "connect", partial(_sqlite_pragmas, SQLITE_TRY_MS))
            event.listen(self.engine, "begin", partial(
                _sqlite_begin, threading.Lock(), write_wait_ms / 1000))
        elif web is not None and parsed.get_backend_name() == "postgresql":
            event.listen(self.engine, "connect", partial(_postgres_timeouts, web))
            event.listen(self.engine, "before_cursor_execute", _note_write)
            event.listen(self.engine, "commit", _durable_commit)
            event.listen(self.engine, "rollback", _forget_writes)
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session that commits on success and rolls back on error."""
        session = self.sessions()
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()

    @contextmanager
    def webhook(self) -> Iterator[WebhookTransaction]:
        """A webhook's transaction: committed on success, rolled back on error; an ORM
        session on its connection only if the work asks for one (ivr.db_webhook)."""
        transaction = WebhookTransaction(self.engine, self.sessions)
        try:
            yield transaction
            transaction.commit()
        except BaseException:
            transaction.rollback()
            raise
        finally:
            transaction.close()

    def upgrade(self) -> None:
        """Create or migrate the schema to the newest revision."""
        from alembic import command

        with self.engine.begin() as connection:
            cfg = alembic_config(self.url)
            cfg.attributes["connection"] = connection
            command.upgrade(cfg, "head")

    def schema_refusal(self) -> str:
        """Why this code must not run the line on the schema as it is ('' when it may): no
        schema yet, or one an upgrade of this code has not migrated. A schema newer than
        this code (another node upgraded first, or this one was rolled back) is not
        refused: that would stop a rolling upgrade's older nodes, and a rollback."""
        from alembic.runtime.migration import MigrationContext
        from alembic.script import ScriptDirectory
        from alembic.util import CommandError

        script = ScriptDirectory.from_config(alembic_config(self.url))
        head = script.get_current_head()
        with self.engine.connect() as connection:
            current = MigrationContext.configure(connection).get_current_revision()
        if current == head:
            return ""
        if current is None:
            return "the database has no schema yet: run `ivr db upgrade` first"
        try:
            script.get_revision(current)
        except CommandError:
            return ""  # newer than this code
        return (f"the database schema is at revision {current} and this version needs "
                f"{head}: run `ivr db upgrade` first (docs/deployment.md, Upgrading)")

    def dispose(self) -> None:
        """Close pooled connections."""
        self.engine.dispose()


def alembic_config(url: str) -> AlembicConfig:
    """An Alembic configuration pointing at our migrations, for `ivr db upgrade` and tests."""
    from alembic.config import Config as AlembicConfig

    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg
