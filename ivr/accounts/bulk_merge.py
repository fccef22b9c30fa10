"""Merging checked columns into the cache, a chunk per short transaction, by each database's
own bulk path.

The column path (connectors/files/column_reader.py) has already vouched for every row, so
no row waits in the staging tables the row path checks: each chunk goes to the merge. On
PostgreSQL the chunk is sent
with ``COPY`` (CSV written by pyarrow, in C) into a temporary table and merged with one
``INSERT ... ON CONFLICT``; on SQLite it is written by ADBC (Arrow's own SQLite driver,
columns bound in C) into a staging file of its own, attached, and merged with
``INSERT ... SELECT``. In the same transaction the chunk's phone numbers are replaced
where they changed and recent payments the file cannot know of are taken off again, so a
caller sees each account either as it was or as the file says.

A first import on PostgreSQL (an empty cache, no calls on the line) goes another way:
ivr/accounts/first_load.py.
"""

from __future__ import annotations

import io
import queue
import shutil
import sqlite3
import tempfile
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack
from datetime import timedelta
from pathlib import Path
from typing import Any, NamedTuple

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
from sqlalchemy import Connection, select
from sqlalchemy.exc import IntegrityError

from connectors.files.column_reader import ColumnBatch
from connectors.files.columns import COLUMNS, KEY, Column, Kind
from ivr.db import Database
from ivr.models import CallEvent, utcnow
from ivr.security import hash_pin

__all__ = ["CACHED", "CACHED_NAMES", "PHONES", "ChunkMerger", "carried_columns", "copy_csv",
           "csv_for_copy", "merge_batches"]

# The schema's columns kept in accounts, and the phone list's.
CACHED: tuple[Column, ...] = tuple(c for c in COLUMNS if c.cache is not None)
PHONES = next(c for c in COLUMNS if c.kind is Kind.PHONES)
CACHED_NAMES = tuple(str(c.cache) for c in CACHED)
# Rows per transaction: PostgreSQL; SQLite with no calls on the line; SQLite with calls.
POSTGRES_ROWS = 5_000
QUIET_ROWS = 20_000
BUSY_ROWS = 500
# PostgreSQL chunks merged at once (each on its own connection) with no calls on the line.
PARALLEL = 2
# The least pause after a SQLite chunk while calls are on the line.
PAUSE_SECONDS = 0.01
# A webhook this recent means calls are on the line.
CALLS_SECONDS = 30
# PostgreSQL's per-connection table a chunk is copied into, emptied at each commit.
_TEMP_ROWS = " ".join(["CREATE TEMP TABLE IF NOT EXISTS ivr_import_rows ON COMMIT DELETE ROWS",
                       "AS SELECT", ", ".join(CACHED_NAMES), "FROM accounts WITH NO DATA"])
_TEMP_PHONES = ("CREATE TEMP TABLE IF NOT EXISTS ivr_import_phones "
                "(account_number text, phone text) ON COMMIT DELETE ROWS")
# The schema name a SQLite chunk's staging file is attached under.
_STAGE = "ivr_stage"


def carried_columns(columns: frozenset[str] | None) -> list[str]:
    """The accounts columns an existing account takes from the file: those it carries."""
    return [str(c.cache) for c in CACHED
            if c is not KEY and (columns is None or c.name in columns)]


def _cache_values(column: Column, values: pa.Array, pin_key: str) -> pa.Array:
    """A column as the cache stores it: PINs hashed, dates as ISO text (what SQLAlchemy
    writes to SQLite, and what PostgreSQL reads)."""
    if column.kind is Kind.HASHED:
        return pa.array([None if pin is None else hash_pin(pin, pin_key)
                         for pin in values.to_pylist()], pa.string())
    if column.kind is Kind.DATE:
        return pc.cast(values, pa.string())
    return values


class Staged(NamedTuple):
    """A chunk ready for its transaction: its account numbers and, on SQLite, its staging
    file (ChunkMerger.stage)."""

    keys: list[str]
    file: Path | None

    def discard(self) -> None:
        """Remove the staging file, if any."""
        if self.file is not None:
            _discard(self.file)


class ChunkMerger:
    """Merges checked batches into ``accounts`` and ``account_phones``, one transaction each.

    ``columns`` are the file's columns (None: all); ``reapply(connection, account_numbers)``
    takes recent payments off again inside the chunk's transaction and returns how many.
    """

    def __init__(self, database: Database, columns: frozenset[str] | None, pin_key: str,
                 reapply: Any) -> None:
        self.database = database
        self.carried = carried_columns(columns)
        self.phones = columns is None or PHONES.name in columns
        self.pin_key = pin_key
        self.reapply = reapply
        self.postgres = not database.is_sqlite
        self._connection: Connection | None = None
        self._busy_checked = 0.0
        self._synchronous_commit = "on"
        self._busy = False

    def __enter__(self) -> ChunkMerger:
        # One connection for the whole merge: PostgreSQL's temporary tables live in it,
        # and the settings below apply to the import's writes only. Neither weakens what
        # a crash can lose beyond the last chunks, which the next run of the file re-applies.
        self._connection = self.database.engine.connect()
        if self.postgres:
            # Put back as it was on leaving (not RESET: a served app's connection has its
            # own setting, ivr.db.CALL_PROGRESS).
            self._synchronous_commit = self._connection.exec_driver_sql(
                "SHOW synchronous_commit").scalar_one()
            self._connection.exec_driver_sql("SET synchronous_commit = off")
            self._connection.commit()
        else:
            # Outside any transaction (SQLite refuses it inside one): the driver's own call.
            self._driver().execute("PRAGMA synchronous = NORMAL")
        return self

    def _driver(self) -> Any:
        assert self._connection is not None  # noqa: S101 - only called inside the block
        return self._connection.connection.driver_connection

    def __exit__(self, *exc: object) -> None:
        connection, self._connection = self._connection, None
        if connection is None:
            return
        try:
            connection.rollback()
            if self.postgres:
                connection.exec_driver_sql("SELECT set_config('synchronous_commit', %(v)s, false)",
                                           {"v": self._synchronous_commit})
                connection.commit()
            else:
                connection.connection.driver_connection.execute(  # type: ignore[union-attr]
                    "PRAGMA synchronous = FULL")
        finally:
            connection.close()

    def chunk_rows(self) -> int:
        """How many rows the next transaction may take.

        On SQLite every transaction holds the whole database's write lock, and every
        webhook writes: while calls are on the line (a webhook in the last CALLS_SECONDS)
        chunks are small and followed by a pause (merge_batches), so a caller waits a few
        milliseconds at most. With no calls the import runs at full speed. On
        PostgreSQL a chunk locks only its own accounts' rows.
        """
        if self.postgres:
            return POSTGRES_ROWS
        return BUSY_ROWS if self.calls_on_the_line() else QUIET_ROWS

    def calls_on_the_line(self) -> bool:
        """Whether a webhook was served in the last CALLS_SECONDS (asked at most once a
        second)."""
        now = time.monotonic()
        if now - self._busy_checked >= 1.0:
            since = utcnow() - timedelta(seconds=CALLS_SECONDS)
            with self.database.session() as db:
                self._busy = db.scalar(select(CallEvent.id).where(CallEvent.at > since)
                                       .limit(1)) is not None
            self._busy_checked = now
        return self._busy

    @property
    def connection(self) -> Connection:
        """The merge's own connection (inside the with block)."""
        if self._connection is None:
            raise RuntimeError("ChunkMerger is used in a with block")
        return self._connection

    def cache_values(self, batch: ColumnBatch) -> dict[str | None, pa.Array]:
        """A batch's columns as the cache stores them, by cache column."""
        return {c.cache: _cache_values(c, batch.values[c.field], self.pin_key)
                for c in CACHED}

    def stage(self, batch: ColumnBatch) -> Staged:
        """What a batch's merge needs before its transaction: on SQLite its staging file,
        written without the cache's write lock (merge_batches writes the next chunk's while
        the current one merges)."""
        keys: list[str] = batch.values[KEY.field].to_pylist()
        if self.postgres:
            return Staged(keys, None)
        lists = batch.values[PHONES.field] if self.phones else None
        return Staged(keys, _stage_sqlite(self.cache_values(batch), keys, lists))

    def merge(self, batch: ColumnBatch, staged: Staged) -> int:
        """Merge one batch (``staged`` by ``stage``) in one transaction; returns the payments
        taken off again. Its staging file is removed afterwards."""
        try:
            return self._merge(batch, staged)
        finally:
            staged.discard()

    def _merge(self, batch: ColumnBatch, staged: Staged) -> int:
        connection = self.connection
        keys = staged.keys
        if self.postgres:
            with connection.begin():
                self._merge_postgres(connection, self.cache_values(batch), keys,
                                     batch.values[PHONES.field])
                reapplied: int = self.reapply(connection, keys)
            return reapplied
        driver = self._driver()
        driver.execute(f"ATTACH DATABASE ? AS {_STAGE}", (str(staged.file),))
        try:
            with connection.begin():
                first_id = self._upsert_sqlite(connection, keys[0] if keys else "")
                if not self.phones:
                    pass
                elif first_id is not None:
                    self._add_phones(connection, first_id)
                else:
                    self._replace_phones(connection)
                reapplied = self.reapply(connection, keys)
        finally:
            driver.execute(f"DETACH DATABASE {_STAGE}")
        return reapplied

    def _upsert_sqlite(self, connection: Connection, first_key: str) -> int | None:
        """Insert or update the chunk's accounts from the staging file (SQLite).

        A chunk of accounts the cache does not have yet (a first import, new customers)
        goes in by plain INSERT, under a savepoint that is undone at the first account
        already there, then by the upsert: a plain INSERT skips the upsert's search for
        each number, and its accounts take the ids after the table's last, in the file's
        order. Returns the first of those ids, or None when the upsert was needed.
        """
        names = ", ".join(CACHED_NAMES)
        sets = ", ".join(f"{c} = excluded.{c}" for c in self.carried)
        changed = " OR ".join(f"accounts.{c} IS NOT excluded.{c}" for c in self.carried)
        # "WHERE true": SQLite's grammar for an upsert fed by a SELECT.
        insert = (f"INSERT INTO accounts ({names}, updated_at) "  # noqa: S608 - our own names
                  f"SELECT {names}, CURRENT_TIMESTAMP FROM {_STAGE}.rows WHERE true "
                  "ORDER BY rowid")
        upsert = (f"{insert} ON CONFLICT (account_number) DO UPDATE "
                  f"SET {sets}, updated_at = CURRENT_TIMESTAMP WHERE {changed}")
        cursor = connection.connection.driver_connection.cursor()  # type: ignore[union-attr]
        try:
            last = cursor.execute("SELECT max(id) FROM accounts").fetchone()[0] or 0
            cursor.execute("SAVEPOINT ivr_new_accounts")
            try:
                added = cursor.execute(insert).rowcount
            except sqlite3.IntegrityError:
                cursor.execute("ROLLBACK TO ivr_new_accounts")
                cursor.execute("RELEASE ivr_new_accounts")
                cursor.execute(upsert)
                return None
            cursor.execute("RELEASE ivr_new_accounts")
            # The ids SQLite gives are the last one's successors, unless the table's last
            # id was the largest there is: then the numbers' own ids are looked up.
            first = cursor.execute("SELECT account_number FROM accounts WHERE id = ?",
                                   (last + 1,)).fetchone()
            ids_follow = (first is not None and first[0] == first_key and
                          cursor.execute("SELECT max(id) FROM accounts").fetchone()[0]
                          == last + added)
            return last + 1 if ids_follow else None
        finally:
            cursor.close()

    def _merge_postgres(self, connection: Connection, values: Mapping[str | None, pa.Array],
                        keys: Sequence[str], lists: pa.Array) -> None:
        """Copy the chunk in, insert or upsert it, and give its accounts the file's phone
        numbers.

        New accounts' numbers go straight in (the upsert returns the accounts it created).
        Only accounts that existed before have their numbers compared with the cache's.
        """
        connection.exec_driver_sql(_TEMP_ROWS)
        connection.exec_driver_sql(_TEMP_PHONES)
        _copy(connection, "ivr_import_rows", CACHED_NAMES,
              pa.table({name: values[name] for name in CACHED_NAMES}))
        if self.phones:
            owners = pc.take(pa.array(keys, pa.string()), pc.list_parent_indices(lists))
            _copy(connection, "ivr_import_phones", ("account_number", "phone"),
                  pa.table({"account_number": owners, "phone": pc.list_flatten(lists)}))
        names = ", ".join(CACHED_NAMES)
        # A chunk of accounts the cache does not have yet (a first import, new customers)
        # goes in by plain INSERT, with its phone numbers, under a savepoint undone at the
        # first account already there: the upsert's speculative insertion and its RETURNING
        # of what it created cost a sixth of a first import.
        try:
            with connection.begin_nested():
                connection.exec_driver_sql(
                    f"WITH up AS (INSERT INTO accounts ({names}, updated_at) "  # noqa: S608
                    f"SELECT {names}, now() FROM ivr_import_rows "
                    "RETURNING id, account_number) "
                    "INSERT INTO account_phones (account_id, phone) "
                    "SELECT up.id, t.phone FROM up JOIN ivr_import_phones t "
                    "ON t.account_number = up.account_number")
            return
        except IntegrityError:
            pass  # an account the cache has: the upsert
        sets = ", ".join(f"{c} = EXCLUDED.{c}" for c in self.carried)
        old = ", ".join(f"accounts.{c}" for c in self.carried)
        new = ", ".join(f"EXCLUDED.{c}" for c in self.carried)
        created = connection.exec_driver_sql(
            f"WITH up AS (INSERT INTO accounts ({names}, updated_at) "  # noqa: S608 - our names
            f"SELECT {names}, now() FROM ivr_import_rows ON CONFLICT (account_number) "
            f"DO UPDATE SET {sets}, updated_at = now() WHERE ({old}) IS DISTINCT FROM ({new}) "
            "RETURNING id, account_number, xmax = 0 AS created), "
            "phones AS (INSERT INTO account_phones (account_id, phone) "
            "SELECT up.id, t.phone FROM up JOIN ivr_import_phones t "
            "ON t.account_number = up.account_number WHERE up.created) "
            "SELECT count(*) FROM up WHERE created").scalar_one()
        if not self.phones or created == len(keys):
            return
        # While a large import runs, the statistics of accounts and account_phones describe
        # the tables before it, and a join would be planned as a scan of every account. So
        # every account is found by index, one row at a time: a correlated subquery, = ANY
        # of an array, ON CONFLICT.
        connection.exec_driver_sql(
            "DELETE FROM account_phones p WHERE p.account_id = ANY(ARRAY("
            "SELECT (SELECT a.id FROM accounts a WHERE a.account_number = r.account_number) "
            "FROM ivr_import_rows r)) AND NOT EXISTS (SELECT 1 FROM ivr_import_phones t "
            "WHERE t.phone = p.phone AND t.account_number = "
            "(SELECT a.account_number FROM accounts a WHERE a.id = p.account_id))")
        connection.exec_driver_sql(
            "INSERT INTO account_phones (account_id, phone) "
            "SELECT (SELECT a.id FROM accounts a WHERE a.account_number = t.account_number), "
            "t.phone FROM ivr_import_phones t ON CONFLICT (account_id, phone) DO NOTHING")

    def _add_phones(self, connection: Connection, first_id: int) -> None:
        """Give a chunk of accounts just created, with ids from ``first_id`` on in the
        chunk's order, the file's numbers (SQLite)."""
        connection.connection.driver_connection.execute(  # type: ignore[union-attr]
            "INSERT INTO account_phones (account_id, phone) "  # noqa: S608 - our own names
            f"SELECT ? + owner, phone FROM {_STAGE}.phones ORDER BY rowid", (first_id,))

    def _replace_phones(self, connection: Connection) -> None:
        """Make the chunk's accounts have exactly the file's numbers; unchanged ones stay
        (SQLite)."""
        driver: Any = connection.connection.driver_connection
        driver.execute(
            "DELETE FROM account_phones WHERE id IN ("  # noqa: S608 - our own names
            "SELECT p.id FROM account_phones p JOIN accounts a ON a.id = p.account_id "
            f"JOIN {_STAGE}.rows r ON r.account_number = a.account_number "
            f"WHERE NOT EXISTS (SELECT 1 FROM {_STAGE}.phones s "
            "WHERE s.account_number = a.account_number AND s.phone = p.phone))")
        driver.execute(
            "INSERT INTO account_phones (account_id, phone) "  # noqa: S608 - our own names
            f"SELECT a.id, s.phone FROM {_STAGE}.phones s "
            "JOIN accounts a ON a.account_number = s.account_number WHERE true "
            "ON CONFLICT (account_id, phone) DO NOTHING")


def _stage_sqlite(values: Mapping[str | None, pa.Array], keys: Sequence[str],
                  lists: pa.Array | None) -> Path:
    """The chunk's rows (and phone numbers) in a SQLite file of their own, written by ADBC.

    Binding each value through Python's ``sqlite3`` was most of a SQLite import's time;
    ADBC binds Arrow columns in C. ADBC brings its own copy of SQLite, so it never opens
    the cache's database: two copies of SQLite in one process must not hold locks on the
    same file (https://sqlite.org/howtocorrupt.html, 2.2). The file is closed before the
    cache's connection attaches it.
    """
    import adbc_driver_sqlite.dbapi as adbc_sqlite

    # In a directory only this user can read (mkdtemp): the file holds customers' names,
    # numbers and balances, and ADBC creates it with the process's default permissions.
    path = Path(tempfile.mkdtemp(prefix="ivr-import-")) / "chunk.sqlite"
    numbers = pa.array(keys, pa.string())
    rows = pa.table({n: values[n] for n in CACHED_NAMES})
    try:
        with adbc_sqlite.connect(str(path)) as stage, stage.cursor() as cursor:
            cursor.adbc_ingest("rows", rows, mode="create")
            if lists is not None:
                owners = pc.list_parent_indices(lists)
                cursor.adbc_ingest("phones", pa.table({
                    "owner": owners, "account_number": pc.take(numbers, owners),
                    "phone": pc.list_flatten(lists)}), mode="create")
                cursor.execute("CREATE INDEX phones_by_account ON phones "
                               "(account_number, phone)")
            stage.commit()
    except BaseException:
        _discard(path)
        raise
    return path


def _discard(stage: Path) -> None:
    """Remove a staging file and its directory."""
    shutil.rmtree(stage.parent, ignore_errors=True)


def merge_batches(database: Database, batches: Iterable[ColumnBatch],
                  columns: frozenset[str] | None, pin_key: str, reapply: Any,
                  loaded: Callable[[int], None]) -> int:
    """Merge every batch, chunk by chunk; returns the payments taken off again.

    On PostgreSQL with no calls on the line, PARALLEL chunks go at once, each on its own
    connection: a chunk's accounts are its own (a file names each account once), so they
    never wait on each other, and the database's work, most of an import's time, uses
    every core. With calls on the line, or on SQLite (one writer at a time), one by one;
    on SQLite the next chunk's staging file is written meanwhile.
    """
    workers = 1 if database.is_sqlite else PARALLEL
    with ExitStack() as stack:
        mergers: queue.SimpleQueue[ChunkMerger] = queue.SimpleQueue()
        for _ in range(workers):
            mergers.put(stack.enter_context(ChunkMerger(database, columns, pin_key, reapply)))
        pool = stack.enter_context(ThreadPoolExecutor(workers, "ivr-merge"))
        pending: deque[tuple[Future[int], int, Staged]] = deque()
        # Asks about calls and stages chunks: it never opens a connection of its own.
        policy = ChunkMerger(database, columns, pin_key, reapply)
        reapplied = done = 0

        def settle(keep: int) -> None:
            nonlocal reapplied, done
            while len(pending) > keep:
                future, rows, _staged = pending.popleft()
                reapplied += future.result()
                done += rows
                loaded(done)

        def run(chunk: ColumnBatch, staged: Staged, pause: bool) -> int:
            merger = mergers.get()
            started = time.monotonic()
            try:
                return merger.merge(chunk, staged)
            finally:
                mergers.put(merger)
                if pause:
                    # Leave SQLite's lock free for longer than it was held: a waiting
                    # webhook polls for it every few milliseconds.
                    time.sleep(max(2 * (time.monotonic() - started), PAUSE_SECONDS))

        try:
            for batch in batches:
                offset = 0
                while offset < len(batch):
                    rows = policy.chunk_rows()
                    busy = policy.calls_on_the_line()
                    chunk = batch.slice(offset, rows)
                    # Staged while earlier chunks merge: on SQLite, writing a chunk's staging
                    # file (C, no lock on the cache) takes the other core, a chunk ahead.
                    staged = policy.stage(chunk)
                    try:
                        settle(0 if busy else max(workers - 1, 1))
                    except BaseException:
                        staged.discard()
                        raise
                    pending.append((pool.submit(run, chunk, staged,
                                                busy and database.is_sqlite),
                                    len(chunk), staged))
                    offset += len(chunk)
            settle(0)
        except BaseException:
            # A chunk failed: the chunks queued behind it are not merged.
            for future, _rows, staged in pending:
                if future.cancel():
                    staged.discard()
            raise
    return reapplied


def _copy(connection: Connection, table: str, names: Sequence[str], data: pa.Table) -> None:
    """``COPY`` a pyarrow table in."""
    copy_csv(connection, table, names, csv_for_copy(data))


def csv_for_copy(data: pa.Table) -> memoryview:
    """A pyarrow table as CSV for ``COPY``, written by pyarrow: every value quoted so an
    empty string stays empty and only a null is NULL."""
    buffer = io.BytesIO()
    pa_csv.write_csv(data, buffer, pa_csv.WriteOptions(include_header=False,
                                                       quoting_style="all_valid"))
    return buffer.getbuffer()


def copy_csv(connection: Connection, table: str, names: Sequence[str], csv: memoryview,
             ) -> None:
    """``COPY`` CSV (``csv_for_copy``) into ``table``'s columns ``names``."""
    raw: Any = connection.connection.driver_connection
    with raw.cursor() as cursor, cursor.copy(
            f"COPY {table} ({', '.join(names)}) FROM STDIN WITH (FORMAT csv)") as copy:
        copy.write(csv)
