"""A first import on PostgreSQL: loaded in one transaction while the file is checked, its
tables' keys built after the load (ivr/accounts/first_load.py).

What a caller or an operator relies on: the cache ends as the file says, every key and
index the schema has is there again afterwards exactly as it was made, a file found not
clean (even at its last line) leaves the cache empty and its keys whole, and with calls on
the line the import goes chunk by chunk instead, never holding the tables.
"""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import make_url, text

from connectors.files.column_reader import BATCH_ROWS
from connectors.files.columns import COLUMN_NAMES
from connectors.files.layouts import DEFAULT_ACCOUNT_LAYOUT
from ivr.accounts import first_load, importer
from ivr.accounts.importer import import_account_file
from ivr.db import Database
from ivr.models import CallEvent
from tests.conftest import _truncate_postgres
from tests.test_column_path import _file, _import_many

pytestmark = pytest.mark.slow

# The tables' keys, as PostgreSQL writes their definitions.
KEYS = text(
    "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid) FROM pg_constraint "
    "WHERE conrelid IN ('accounts'::regclass, 'account_phones'::regclass) "
    "UNION ALL SELECT tablename, indexname, indexdef FROM pg_indexes "
    "WHERE tablename IN ('accounts', 'account_phones') ORDER BY 1, 2, 3")


@pytest.fixture
def database(postgres_url: str) -> Iterator[Database]:
    _truncate_postgres(postgres_url)
    database = Database(postgres_url)
    try:
        yield database
    finally:
        database.dispose()


@pytest.fixture
def first_loads(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """What each import's load_first answered (the real one runs)."""
    answers: list[bool] = []
    real = first_load.load_first

    def spy(*args: Any) -> bool:
        answers.append(real(*args))
        return answers[-1]

    monkeypatch.setattr(importer, "load_first", spy)
    return answers


def _keys(database: Database) -> list[tuple[str, ...]]:
    with database.engine.connect() as connection:
        return [tuple(row) for row in connection.execute(KEYS)]


def test_a_first_import_builds_the_keys_after_the_load(database: Database,
                                                       first_loads: list[bool]) -> None:
    """Several batches into an empty cache: every account and number arrives once, the
    keys are back as they were made, and a second file over it (every account known) is
    merged by chunks and moves the numbers."""
    keys = _keys(database)
    assert len(keys) == 10  # 2 primary keys, 2 unique keys, a foreign key, 5 indexes
    count = BATCH_ROWS * 2 + 300
    _import_many(database, count)
    assert first_loads == [True]
    assert _keys(database) == keys
    _import_many(database, count, shift=1)
    assert first_loads == [True, False]
    with database.engine.connect() as connection:
        # The keys hold: a number pointing at no account, or a second account with the
        # same number, is refused.
        for bad in ("INSERT INTO account_phones (account_id, phone) VALUES (0, '+1')",
                    "INSERT INTO accounts (account_number, customer_name, balance_due_cents, "
                    "past_due_cents, status, language, payment_allowed, updated_at, "
                    "ach_allowed, card_allowed, full_payment_required, "
                    "broken_arrangements_12m, returned_payments_12m) SELECT account_number, "
                    "'', 0, 0, 'active', 'en', true, now(), true, true, false, 0, 0 "
                    "FROM accounts LIMIT 1"):
            with pytest.raises(Exception, match="violates"):
                connection.execute(text(bad))
            connection.rollback()


def test_a_first_file_not_clean_at_its_last_line_leaves_the_cache_empty(
        database: Database, first_loads: list[bool]) -> None:
    """A duplicate account number is known only once every row is in: the batches loaded
    by then are undone, the keys are whole, and the file's report is the row path's."""
    keys = _keys(database)
    rows = [{"account_number": f"A{i:06d}", "balance_due": "1.00",
             "phones": f"+1312{2000000 + i:07d}"} for i in range(BATCH_ROWS * 2 + 10)]
    rows.append(dict(rows[3]))
    report = import_account_file(database, io.BytesIO(_file(rows, list(COLUMN_NAMES))),
                                 DEFAULT_ACCOUNT_LAYOUT, "dup", pin_key="k")
    assert not report.applied
    assert report.rejected == 1
    assert "account_number" in str(report.rejections[0])
    with database.engine.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM accounts")).scalar() == 0
        assert connection.execute(text("SELECT count(*) FROM account_phones")).scalar() == 0
        # The load had begun (its ids are taken, and a sequence is never rolled back).
        assert connection.execute(text("SELECT is_called FROM accounts_id_seq")).scalar()
    assert _keys(database) == keys
    assert first_loads == []  # the file never reached a commit: NotClean undid the load


def test_with_calls_on_the_line_a_first_import_goes_by_chunks(
        database: Database, first_loads: list[bool]) -> None:
    """A webhook in the last seconds: no load that holds the tables locked."""
    with database.session() as db:
        db.add(CallEvent(call_sid="CA1", state="incoming", event="incoming"))
    _import_many(database, 500)
    assert first_loads == [False]
    assert first_load.load_first(database, iter(()), "k") is False


def test_a_first_import_waits_for_nobody_holding_the_tables(
        database: Database, first_loads: list[bool]) -> None:
    """Someone reads accounts in a long transaction (a report, a console page): the first
    load gives up the lock after LOCK_WAIT_MS rather than stall every statement queued
    behind its request, and the file goes in chunk by chunk, which waits for nobody."""
    with database.engine.connect() as reader:
        reader.execute(text("SELECT count(*) FROM accounts"))  # holds ACCESS SHARE
        # Let go in 10 s whatever happens, so a load that waited would not wait forever.
        release = threading.Timer(10, reader.rollback)
        release.start()
        try:
            started = time.monotonic()
            _import_many(database, 300)
            waited = time.monotonic() - started
        finally:
            release.cancel()
            release.join()
        reader.rollback()
    assert first_loads == [False]
    assert first_load.LOCK_WAIT_MS / 1000 <= waited < 10


def test_a_role_that_does_not_own_the_tables_imports_by_chunks(
        database: Database, postgres_url: str, first_loads: list[bool]) -> None:
    """Where the line connects as a role that may write the tables but not alter them
    (the schema owned by the role that migrates), a first import still applies."""
    with database.engine.begin() as connection:
        connection.execute(text(
            "DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'ivr_writer') "
            "THEN CREATE ROLE ivr_writer LOGIN PASSWORD 'writer'; END IF; END $$"))
        connection.execute(text("GRANT ALL ON ALL TABLES IN SCHEMA public TO ivr_writer"))
        connection.execute(text("GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO ivr_writer"))
    url = make_url(postgres_url).set(username="ivr_writer", password="writer")
    writer = Database(url.render_as_string(hide_password=False))
    try:
        _import_many(writer, 300)
    finally:
        writer.dispose()
        with database.engine.begin() as connection:
            connection.execute(text("DROP OWNED BY ivr_writer"))
            connection.execute(text("DROP ROLE ivr_writer"))
    assert first_loads == [False]
    assert len(_keys(database)) == 10
