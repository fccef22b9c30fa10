"""A first import on PostgreSQL: the whole file in one transaction, loaded while it is
checked, straight into the tables, their keys built once at the end.

Keeping the phone numbers' foreign key and the unique and look-up indexes up to date row by
row was most of a first import's time: each number's foreign key check locks its account's
row and writes that lock to the WAL. Built after the load, each key is one pass over the
table (the foreign key's check, one join). The keys are dropped and built in the load's own
transaction, so a load that fails or is stopped, or a file found not clean at its last line,
leaves the tables, keys included, as they were: empty. The transaction holds both tables
locked throughout, so it runs only with no calls on the line; otherwise, and whenever the
cache holds an account, the import goes chunk by chunk (ivr/accounts/bulk_merge.py).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple, TypeVar, cast

import pyarrow as pa
import pyarrow.compute as pc
from sqlalchemy import Connection
from sqlalchemy.exc import DBAPIError

from connectors.files.column_reader import ColumnBatch
from ivr.accounts.bulk_merge import CACHED_NAMES, PHONES, ChunkMerger, copy_csv, csv_for_copy
from ivr.db import Database

__all__ = ["load_first"]

# How long a first load waits to lock the tables before going chunk by chunk instead.
LOCK_WAIT_MS = 1000
_LOCK_NOT_AVAILABLE = "55P03"
_MAY_LOAD = ("SELECT NOT EXISTS (SELECT 1 FROM accounts) AND (SELECT bool_and(pg_has_role("
             "relowner, 'USAGE')) FROM pg_class WHERE oid IN ('accounts'::regclass, "
             "'account_phones'::regclass))")
_SEQUENCE = "pg_get_serial_sequence('accounts', 'id')"
_ACCOUNT_COLUMNS = ("id", *CACHED_NAMES, "updated_at")
_PHONE_COLUMNS = ("account_id", "phone")


class _Key(NamedTuple):
    """A secondary key of accounts or account_phones: how to drop it and build it again."""

    drop: str
    create: str


# The two tables' unique constraints, foreign keys and other indexes, as PostgreSQL itself
# writes their definitions (so a key added by a later migration is rebuilt as it was made),
# foreign keys last. Not the primary keys, which other tables' foreign keys rest on, nor a
# unique key any foreign key rests on. (The driver takes "%%" for format()'s "%".)
_SECONDARY_KEYS = """
SELECT format('ALTER TABLE %%s DROP CONSTRAINT %%I', c.conrelid::regclass, c.conname),
       format('ALTER TABLE %%s ADD CONSTRAINT %%I %%s', c.conrelid::regclass, c.conname,
              pg_get_constraintdef(c.oid)),
       c.contype = 'f'
FROM pg_constraint c
WHERE c.conrelid IN ('accounts'::regclass, 'account_phones'::regclass)
  AND (c.contype = 'f' OR c.contype = 'u' AND NOT EXISTS (
       SELECT 1 FROM pg_constraint r WHERE r.contype = 'f' AND r.conindid = c.conindid))
UNION ALL
SELECT format('DROP INDEX %%s', x.indexrelid::regclass), pg_get_indexdef(x.indexrelid), false
FROM pg_index x
WHERE x.indrelid IN ('accounts'::regclass, 'account_phones'::regclass) AND NOT x.indisprimary
  AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = x.indexrelid
                  AND c.conrelid = x.indrelid)
ORDER BY 3, 2
"""


def load_first(database: Database, batches: Iterable[ColumnBatch], pin_key: str) -> bool:
    """Load ``batches`` into an empty cache in one transaction, where that applies: on
    PostgreSQL, with no calls on the line. False, and nothing taken from ``batches``, where
    it does not (SQLite, calls on the line, an account in the cache, tables this role does
    not own or cannot lock at once).

    ``batches`` may still be checking the file: each is checked and written as CSV a batch
    ahead, in a thread of its own, while the database (in its own process) takes the one
    before. Whatever they raise undoes the whole load.
    """
    if database.is_sqlite:
        return False
    merger = ChunkMerger(database, None, pin_key, None)
    if merger.calls_on_the_line():
        return False
    with merger:
        connection = merger.connection
        with connection.begin():
            if not _take_tables(connection):
                return False
            keys = _secondary_keys(connection)
            for key in reversed(keys):
                connection.exec_driver_sql(key.drop)
            # The accounts' time of change, as the chunks' now() gives it.
            stamp = connection.exec_driver_sql("SELECT now()::text").scalar_one()
            # The accounts' ids follow the sequence's next: nobody else takes one while the
            # load holds the table (an INSERT waits for the lock before its default runs).
            first = connection.exec_driver_sql(f"SELECT nextval({_SEQUENCE})").scalar_one()
            loaded = 0
            for accounts, phones, count in _ahead(_prepared(merger, batches, first, stamp)):
                copy_csv(connection, "accounts", _ACCOUNT_COLUMNS, accounts)
                copy_csv(connection, "account_phones", _PHONE_COLUMNS, phones)
                loaded += count
            if loaded:
                connection.exec_driver_sql(f"SELECT setval({_SEQUENCE}, %(last)s)",
                                           {"last": first + loaded - 1})
            for key in keys:
                connection.exec_driver_sql(key.create)
    # No payment can name an account the cache did not have (payments.account_id is a
    # foreign key, set to NULL when its account goes): nothing to re-apply.
    return True


def _prepared(merger: ChunkMerger, batches: Iterable[ColumnBatch], first: int, stamp: str,
              ) -> Iterator[tuple[memoryview, memoryview, int]]:
    """Each batch as CSV for ``COPY``: its accounts, ids from ``first`` on, and their phone
    numbers; and how many accounts."""
    for batch in batches:
        count = len(batch)
        if not count:
            continue
        values = merger.cache_values(batch)
        lists = batch.values[PHONES.field]
        owners = pc.add(pc.cast(pc.list_parent_indices(lists), pa.int64()), first)
        yield (csv_for_copy(pa.table({
                   "id": pa.array(range(first, first + count), pa.int64()),
                   **{name: values[name] for name in CACHED_NAMES},
                   "updated_at": pa.array([stamp] * count, pa.string())})),
               csv_for_copy(pa.table({"account_id": owners, "phone": pc.list_flatten(lists)})),
               count)
        first += count


def _secondary_keys(connection: Connection) -> list[_Key]:
    """The keys a first load drops and builds again, in the order to build them (dropped
    in the reverse order: foreign keys first)."""
    return [_Key(drop, create) for drop, create, _foreign
            in connection.exec_driver_sql(_SECONDARY_KEYS)]


def _take_tables(connection: Connection) -> bool:
    """Lock accounts and account_phones for the load, if it may go this way: both empty,
    owned by this role (only an owner may drop and build their keys), and locked within
    LOCK_WAIT_MS (meanwhile every statement on them, a webhook's too, waits behind the
    request)."""
    if not connection.exec_driver_sql(_MAY_LOAD).scalar():
        return False
    try:
        with connection.begin_nested():
            connection.exec_driver_sql(f"SET LOCAL lock_timeout = {LOCK_WAIT_MS}")
            connection.exec_driver_sql(
                "LOCK TABLE accounts, account_phones IN ACCESS EXCLUSIVE MODE")
    except DBAPIError as exc:
        if getattr(exc.orig, "sqlstate", None) == _LOCK_NOT_AVAILABLE:
            return False  # someone holds them: chunk by chunk, which waits for nobody
        raise
    connection.exec_driver_sql("SET LOCAL lock_timeout TO DEFAULT")
    # An import that finished while we waited.
    return not connection.exec_driver_sql("SELECT EXISTS (SELECT 1 FROM accounts)").scalar()


_END = object()
T = TypeVar("T")


def _ahead(items: Iterable[T]) -> Iterator[T]:
    """``items``, each produced in a thread of its own while the one before is used; what
    producing raises is raised here."""
    source = iter(items)
    with ThreadPoolExecutor(1, "ivr-ahead") as pool:
        upcoming = pool.submit(next, source, _END)
        while True:
            item = upcoming.result()
            if item is _END:
                return
            upcoming = pool.submit(next, source, _END)
            yield cast(T, item)
