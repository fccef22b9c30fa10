"""At 1,000,000 accounts the caller-ID lookup still finds a caller through the phone index.

Straight after a large import PostgreSQL may plan the lookup (ivr/accounts/cache.py
find_by_phone) on statistics of the empty tables the import started from, and walk the
accounts by account number instead of looking the phone up. Every applied import therefore
ends with ``ANALYZE accounts, account_phones`` (ivr/accounts/importer.py ``_record_run``);
this test plans the very statement a call runs, on a database of a million accounts, after a
small import through the real importer.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from datetime import date
from io import BytesIO
from pathlib import Path
from typing import Any

import psycopg
import pytest
from sqlalchemy import event
from sqlalchemy.engine import make_url

from ivr.accounts.cache import find_by_phone
from ivr.accounts.importer import import_accounts
from ivr.accounts.sync import SyncConfig, pull
from ivr.db import Database
from ivr.simulator.demo import demo_file
from ivr.web.app import get_config, get_database
from tests.conftest import _PG_SERVER, REPO, _truncate_postgres, make_app, unavailable

pytestmark = pytest.mark.slow

ACCOUNTS = 1_000_000
PHONE_INDEX = "ix_account_phones_phone"


def _admin(url: str) -> str:
    return make_url(url).set(database="postgres").render_as_string(
        hide_password=False).replace("postgresql+psycopg://", "postgresql://")


@pytest.fixture(scope="module")
def million() -> Iterator[Database]:
    """A migrated database of its own holding a million accounts, each with one phone, as a
    bulk load leaves it: no statistics gathered, autovacuum kept away (so nothing gathers
    them behind the test's back)."""
    url = make_url(_PG_SERVER).set(database=f"ivr_lookup_plan_{os.getpid()}")
    text_url = url.render_as_string(hide_password=False)
    try:
        with psycopg.connect(_admin(text_url), autocommit=True, connect_timeout=3) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{url.database}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{url.database}"')
    except psycopg.Error as exc:
        unavailable(f"PostgreSQL not available at {_admin(text_url)}: {exc}")
    database = Database(text_url)
    try:
        database.upgrade()
        with database.engine.begin() as conn:
            for table in ("accounts", "account_phones"):
                conn.exec_driver_sql(f"ALTER TABLE {table} SET (autovacuum_enabled = false)")
            conn.exec_driver_sql(
                "INSERT INTO accounts (account_number, customer_name, service_zip, "
                "balance_due_cents, past_due_cents, status, language, payment_allowed, "
                "ach_allowed, card_allowed, full_payment_required, broken_arrangements_12m, "
                "returned_payments_12m, updated_at) "
                "SELECT 'P' || lpad(n::text, 8, '0'), 'Customer ' || n, '60614', "
                "mod(n, 50000), 0, "
                "'active', 'en', true, true, true, false, 0, 0, now() "
                "FROM generate_series(1, %(n)s) AS n", {"n": ACCOUNTS})
            conn.exec_driver_sql(
                "INSERT INTO account_phones (account_id, phone) "
                "SELECT id, '+1' || (3120000000 + id)::text FROM accounts")
        yield database
    finally:
        database.dispose()
        with psycopg.connect(_admin(text_url), autocommit=True, connect_timeout=3) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{url.database}" WITH (FORCE)')


def _lookup_plan(database: Database, phone: str) -> dict[str, Any]:
    """The plan of the statement find_by_phone sends, captured as it is sent."""
    sent: list[tuple[str, Any]] = []

    def capture(_conn: Any, _cursor: Any, statement: str, parameters: Any, _context: Any,
                _many: bool) -> None:
        sent.append((statement, parameters))

    event.listen(database.engine, "before_cursor_execute", capture)
    try:
        with database.session() as db:
            found = find_by_phone(db, phone)
    finally:
        event.remove(database.engine, "before_cursor_execute", capture)
    assert [a.account_number for a in found] == ["P00000042"]
    lookups = [s for s in sent if "account_phones" in s[0]]
    assert len(lookups) == 1, sent
    statement, parameters = lookups[0]
    with database.engine.connect() as conn:
        raw = conn.connection.driver_connection
        assert raw is not None
        row = raw.execute(f"EXPLAIN (FORMAT JSON) {statement}", parameters).fetchone()
    assert row is not None
    plan = row[0] if not isinstance(row[0], str) else json.loads(row[0])
    return dict(plan[0]["Plan"])


def _nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from _nodes(child)


def _phone_index_used(plan: dict[str, Any]) -> bool:
    return any(node["Node Type"] in ("Index Scan", "Index Only Scan", "Bitmap Index Scan")
               and node.get("Index Name") == PHONE_INDEX for node in _nodes(plan))


def test_after_an_import_the_lookup_at_a_million_accounts_uses_the_phone_index(
        million: Database) -> None:
    phone = "+13120000042"  # account P00000042 (id 42)
    stale = _lookup_plan(million, phone)
    # The bulk load left no statistics: this is the plan the import must not leave behind.
    # (Planned on the empty tables' guesses, PostgreSQL walks accounts by number.)
    assert not _phone_index_used(stale), json.dumps(stale, indent=1)

    report = import_accounts(million, BytesIO(demo_file(date(2026, 12, 1))), "small file",
                             pin_key="k" * 32)
    assert report.applied, report.lines()

    plan = _lookup_plan(million, phone)
    assert _phone_index_used(plan), json.dumps(plan, indent=1)
    assert all(node["Node Type"] != "Seq Scan" for node in _nodes(plan)), \
        json.dumps(plan, indent=1)


def test_sync_pull_analyzes_too(postgres_url: str, tmp_path: Path) -> None:
    """`ivr sync pull` loads through the same importer, so it refreshes the statistics too."""
    _truncate_postgres(postgres_url)
    inbox, outbox = tmp_path / "in", tmp_path / "out"
    inbox.mkdir()
    outbox.mkdir()
    app = make_app(postgres_url, REPO / "prompts", sync_settings={
        "IVR_SYNC_INBOX_URL": f"file://{inbox}", "IVR_SYNC_OUTBOX_URL": f"file://{outbox}"})
    (inbox / "accounts.csv").write_bytes(demo_file(date(2026, 12, 1)))
    database = get_database(app)
    sent: list[str] = []

    def capture(_conn: Any, _cursor: Any, statement: str, *_rest: Any) -> None:
        sent.append(statement)

    event.listen(database.engine, "before_cursor_execute", capture)
    try:
        [result] = pull(database, SyncConfig.from_settings(get_config(app).sync_settings),
                        pin_key="k")
    finally:
        event.remove(database.engine, "before_cursor_execute", capture)
    assert result.outcome == "applied"
    assert "ANALYZE accounts, account_phones" in sent
