"""Merging checked columns into the cache, a chunk per short transaction, by each database's
own bulk path.

The column path (connectors/files/column_reader.py) has already vouched for every row, so
nothing is staged in tables: each chunk goes straight in. On PostgreSQL the chunk is sent
with ``COPY`` (CSV written by pyarrow, in C) into a temporary table and merged with one
``INSERT ... ON CONFLICT``; on SQLite it is bound with ``executemany`` into one
``INSERT ... ON CONFLICT``. In the same transaction the chunk's phone numbers are replaced
where they changed and recent payments the file cannot know of are taken off again, so a
caller sees each account either as it was or as the file says.
"""

from __future__ import annotations

import io
import json
from collections.abc import Mapping, Sequence
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
from sqlalchemy import Connection, text

from connectors.files.column_reader import ColumnBatch
from connectors.files.columns import COLUMNS, KEY, Column, Kind
from ivr.db import Database
from ivr.security import hash_pin

__all__ = ["CACHED", "PHONES", "ChunkMerger"]

# The schema's columns kept in accounts, and the phone list's.
CACHED: tuple[Column, ...] = tuple(c for c in COLUMNS if c.cache is not None)
PHONES = next(c for c in COLUMNS if c.kind is Kind.PHONES)
_NAMES = tuple(str(c.cache) for c in CACHED)
# PostgreSQL's per-connection table a chunk is copied into, emptied at each commit.
_TEMP_ROWS = " ".join(["CREATE TEMP TABLE IF NOT EXISTS ivr_import_rows ON COMMIT DELETE ROWS",
                       "AS SELECT", ", ".join(_NAMES), "FROM accounts WITH NO DATA"])


def _carried(columns: frozenset[str] | None) -> list[str]:
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


class ChunkMerger:
    """Merges checked batches into ``accounts`` and ``account_phones``, one transaction each.

    ``columns`` are the file's columns (None: all); ``reapply(connection, account_numbers)``
    takes recent payments off again inside the chunk's transaction and returns how many.
    """

    def __init__(self, database: Database, columns: frozenset[str] | None, pin_key: str,
                 reapply: Any) -> None:
        self.database = database
        self.carried = _carried(columns)
        self.phones = columns is None or PHONES.name in columns
        self.pin_key = pin_key
        self.reapply = reapply
        self.postgres = not database.is_sqlite

    def merge(self, batch: ColumnBatch) -> int:
        """Merge one batch in one transaction; returns the payments taken off again."""
        values = {c.cache: _cache_values(c, batch.values[c.field], self.pin_key)
                  for c in CACHED}
        keys: list[str] = batch.values[KEY.field].to_pylist()
        lists = batch.values[PHONES.field]
        with self.database.engine.begin() as connection:
            if self.postgres:
                self._upsert_postgres(connection, values)
            else:
                self._upsert_sqlite(connection, values)
            if self.phones:
                self._replace_phones(connection, keys, lists)
            reapplied: int = self.reapply(connection, keys)
        return reapplied

    def _upsert_sqlite(self, connection: Connection, values: Mapping[str | None, pa.Array],
                       ) -> None:
        names = ", ".join(_NAMES)
        marks = ", ".join("?" * len(_NAMES))
        sets = ", ".join(f"{c} = excluded.{c}" for c in self.carried)
        changed = " OR ".join(f"accounts.{c} IS NOT excluded.{c}" for c in self.carried)
        sql = (f"INSERT INTO accounts ({names}, updated_at) "  # noqa: S608 - our own names
               f"VALUES ({marks}, CURRENT_TIMESTAMP) ON CONFLICT (account_number) DO UPDATE "
               f"SET {sets}, updated_at = CURRENT_TIMESTAMP WHERE {changed}")
        rows = list(zip(*(values[name].to_pylist() for name in _NAMES), strict=True))
        cursor = connection.connection.driver_connection.cursor()  # type: ignore[union-attr]
        try:
            cursor.executemany(sql, rows)
        finally:
            cursor.close()

    def _upsert_postgres(self, connection: Connection,
                         values: Mapping[str | None, pa.Array]) -> None:
        names = ", ".join(_NAMES)
        connection.exec_driver_sql(_TEMP_ROWS)
        table = pa.table({name: values[name] for name in _NAMES})
        _copy(connection, "ivr_import_rows", _NAMES, table)
        sets = ", ".join(f"{c} = EXCLUDED.{c}" for c in self.carried)
        old = ", ".join(f"accounts.{c}" for c in self.carried)
        new = ", ".join(f"EXCLUDED.{c}" for c in self.carried)
        connection.exec_driver_sql(
            f"INSERT INTO accounts ({names}, updated_at) "  # noqa: S608 - our own names
            f"SELECT {names}, now() FROM ivr_import_rows ON CONFLICT (account_number) "
            f"DO UPDATE SET {sets}, updated_at = now() WHERE ({old}) IS DISTINCT FROM ({new})")

    def _replace_phones(self, connection: Connection, keys: Sequence[str],
                        lists: pa.Array) -> None:
        """Make the chunk's accounts have exactly the file's numbers; unchanged ones stay."""
        wanted: dict[str, set[str]] = {key: set() for key in keys}
        owners = pc.take(pa.array(keys, pa.string()), pc.list_parent_indices(lists)).to_pylist()
        for owner, phone in zip(owners, pc.list_flatten(lists).to_pylist(), strict=True):
            wanted[owner].add(phone)
        ids = dict(_account_ids(connection, keys, self.postgres))
        have: dict[str, set[str]] = {}
        for number, phone in _phones_of(connection, keys, self.postgres):
            have.setdefault(number, set()).add(phone)
        gone = [(ids[n], p) for n, phones in have.items() for p in phones - wanted[n]]
        new = [(ids[n], p) for n, phones in wanted.items() for p in phones - have.get(n, set())]
        cursor = connection.connection.driver_connection.cursor()  # type: ignore[union-attr]
        remove, add = _PHONE_SQL[self.postgres]
        try:
            if gone:
                cursor.executemany(remove, gone)
            if new:
                cursor.executemany(add, new)
        finally:
            cursor.close()


# (remove one number, add one number), by driver placeholder: sqlite3 "?", psycopg "%s".
_PHONE_SQL = {
    False: ("DELETE FROM account_phones WHERE account_id = ? AND phone = ?",
            "INSERT INTO account_phones (account_id, phone) VALUES (?, ?)"),
    True: ("DELETE FROM account_phones WHERE account_id = %s AND phone = %s",
           "INSERT INTO account_phones (account_id, phone) VALUES (%s, %s)"),
}


def _keyed(sql_sqlite: str, sql_postgres: str, postgres: bool) -> str:
    return sql_postgres if postgres else sql_sqlite


def _account_ids(connection: Connection, keys: Sequence[str],
                 postgres: bool) -> list[tuple[str, int]]:
    sql = _keyed(
        "SELECT account_number, id FROM accounts WHERE account_number IN "
        "(SELECT value FROM json_each(:keys))",
        "SELECT account_number, id FROM accounts WHERE account_number = ANY(:keys)", postgres)
    return [(str(n), int(i)) for n, i in
            connection.execute(text(sql), {"keys": _param(keys, postgres)})]


def _phones_of(connection: Connection, keys: Sequence[str],
               postgres: bool) -> list[tuple[str, str]]:
    sql = _keyed(
        "SELECT a.account_number, p.phone FROM account_phones p JOIN accounts a "
        "ON a.id = p.account_id WHERE a.account_number IN (SELECT value FROM json_each(:keys))",
        "SELECT a.account_number, p.phone FROM account_phones p JOIN accounts a "
        "ON a.id = p.account_id WHERE a.account_number = ANY(:keys)", postgres)
    return [(str(n), str(p)) for n, p in
            connection.execute(text(sql), {"keys": _param(keys, postgres)})]


def _param(keys: Sequence[str], postgres: bool) -> object:
    # One bound value however many keys: a list for PostgreSQL, a JSON array for SQLite.
    return list(keys) if postgres else json.dumps(list(keys))


def _copy(connection: Connection, table: str, names: Sequence[str], data: pa.Table) -> None:
    """``COPY`` a pyarrow table in: CSV written by pyarrow, every value quoted so an empty
    string stays empty and only a null is NULL."""
    buffer = io.BytesIO()
    pa_csv.write_csv(data, buffer, pa_csv.WriteOptions(include_header=False,
                                                       quoting_style="all_valid"))
    raw: Any = connection.connection.driver_connection
    with raw.cursor() as cursor, cursor.copy(
            f"COPY {table} ({', '.join(names)}) FROM STDIN WITH (FORMAT csv)") as copy:
        copy.write(buffer.getbuffer())

