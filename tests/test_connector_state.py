"""A connector's own state (a rotating token, say) in the database, shared by every node: on
SQLite and PostgreSQL, and two nodes rotating it at once never lose it."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import event, text

from connectors.accounting.state import MAX_KEY_LENGTH, MemoryStateStore, StateStore
from ivr.db import Database
from ivr.money.connector_state import DatabaseStateStore


@pytest.fixture
def databases(database_url: str) -> Iterator[tuple[Database, Database]]:
    """Two Database objects on one database: two nodes of the line."""
    first, second = Database(database_url), Database(database_url)
    first.upgrade()
    try:
        yield first, second
    finally:
        first.dispose()
        second.dispose()


def _check_contract(store: StateStore) -> None:
    assert isinstance(store, StateStore)
    assert store.get("refresh_token") is None
    assert store.put("refresh_token", "t0", expected=None)
    assert not store.put("refresh_token", "other", expected=None)  # already written
    assert not store.put("refresh_token", "t1", expected="stale")
    assert store.get("refresh_token") == "t0"
    assert store.put("refresh_token", "t1", expected="t0")
    assert store.get("refresh_token") == "t1"
    assert store.get("realm") is None
    for bad in ("", "k" * (MAX_KEY_LENGTH + 1)):
        with pytest.raises(ValueError, match="state key"):
            store.get(bad)
        with pytest.raises(ValueError, match="state key"):
            store.put(bad, "x", expected=None)


def test_memory_store_compare_and_set() -> None:
    _check_contract(MemoryStateStore())


def test_database_store_compare_and_set(databases: tuple[Database, Database]) -> None:
    _check_contract(DatabaseStateStore(databases[0], "tryton"))


def test_a_value_written_by_one_node_is_read_by_another(
        databases: tuple[Database, Database]) -> None:
    first, second = databases
    one, other = DatabaseStateStore(first, "tryton"), DatabaseStateStore(second, "tryton")
    assert one.put("refresh_token", "t0", expected=None)
    assert other.get("refresh_token") == "t0"
    assert other.put("refresh_token", "t1", expected="t0")
    assert one.get("refresh_token") == "t1"
    # Each system has its own keys.
    assert DatabaseStateStore(second, "hledger").get("refresh_token") is None


def _waiting_on_a_lock(database: Database) -> bool:
    """Whether some PostgreSQL session waits for a lock (on SQLite: assume so)."""
    if database.is_sqlite:
        return True
    with database.engine.connect() as conn:
        return bool(conn.scalar(text(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE datname = current_database() AND wait_event_type = 'Lock'")))


@pytest.mark.parametrize("before", [None, "t0"], ids=["first-write", "rotation"])
def test_two_nodes_rotating_at_once_exactly_one_wins(
        databases: tuple[Database, Database], before: str | None) -> None:
    first, second = databases
    a, b = DatabaseStateStore(first, "tryton"), DatabaseStateStore(second, "tryton")
    if before is not None:
        assert a.put("refresh_token", before, expected=None)
    # Node A stops right after its write, its transaction still open, so node B's write
    # meets A's lock: the race is made by construction, not left to timing.
    wrote, release = threading.Event(), threading.Event()

    def hold(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if statement.lstrip().upper().startswith(("UPDATE CONNECTOR_STATE",
                                                  "INSERT INTO CONNECTOR_STATE")):
            wrote.set()
            release.wait(10)

    event.listen(first.engine, "after_cursor_execute", hold)
    won: dict[str, bool] = {}
    node_a = threading.Thread(target=lambda: won.update(a=a.put("refresh_token", "a",
                                                                  expected=before)))
    node_b = threading.Thread(target=lambda: won.update(b=b.put("refresh_token", "b",
                                                                  expected=before)))
    node_a.start()
    try:
        assert wrote.wait(10)
        node_b.start()
        deadline = time.monotonic() + 10
        while not _waiting_on_a_lock(first) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert _waiting_on_a_lock(first)
        time.sleep(0.2)  # SQLite shows no waiters: give B the time to reach the lock
    finally:
        release.set()
        node_a.join(10)
        node_b.join(10)
        event.remove(first.engine, "after_cursor_execute", hold)
    assert won == {"a": True, "b": False}
    assert a.get("refresh_token") == b.get("refresh_token") == "a"
