"""What a webhook's commit waits for on the served app's PostgreSQL (ivr.db.CALL_PROGRESS).

A webhook that only moves its call along (the call's row, its steps) commits without waiting
for its WAL to reach the disk; a transaction that writes anything else, a payment above all,
commits as the server is configured to. Read off the connection at each commit, as
PostgreSQL will apply it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, text

from ivr.models import utcnow
from ivr.web.app import get_database
from tests.conftest import _truncate_postgres, call, make_app
from tests.flow import CARD, PAY, YES

pytestmark = pytest.mark.slow


class Commits:
    """Each commit on an engine: the synchronous_commit it ran under, and the tables its
    transaction wrote."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine
        self.seen: list[tuple[str, frozenset[str]]] = []
        self._writes: set[str] = set()
        # After the app's own listeners: what the commit really runs under.
        event.listen(engine, "before_cursor_execute", self._statement)
        event.listen(engine, "commit", self._commit)
        event.listen(engine, "rollback", self._rollback)

    def _statement(self, _conn: Any, _cursor: Any, statement: str, *_rest: Any) -> None:
        words = statement.replace("FOR UPDATE", "").split()
        for verb, at in (("INSERT", 2), ("UPDATE", 1)):
            if verb in words and len(words) > words.index(verb) + at:
                self._writes.add(words[words.index(verb) + at])

    def _commit(self, conn: Any) -> None:
        setting = conn.connection.driver_connection.execute("SHOW synchronous_commit")
        self.seen.append((setting.fetchone()[0], frozenset(self._writes)))
        self._writes = set()

    def _rollback(self, _conn: Any) -> None:
        self._writes = set()

    def close(self) -> None:
        event.remove(self.engine, "before_cursor_execute", self._statement)
        event.remove(self.engine, "commit", self._commit)
        event.remove(self.engine, "rollback", self._rollback)


def test_call_progress_commits_without_waiting_and_a_payment_waits(
        postgres_url: str, prompts_dir: Path) -> None:
    _truncate_postgres(postgres_url)
    app = make_app(postgres_url, prompts_dir, serve_threads=2)
    commits = Commits(get_database(app).engine)
    try:
        result = call(app, [YES, "60614", PAY, CARD])
    finally:
        commits.close()
    assert result.events, "the call ran"
    progress = {"call_sessions", "call_events"}
    moved = [setting for setting, wrote in commits.seen if wrote and wrote <= progress]
    paid = [setting for setting, wrote in commits.seen if "payments" in wrote]
    assert len(moved) >= 3 and set(moved) == {"off"}, commits.seen
    # The server's own setting (on, in the tests' PostgreSQL), never off.
    assert paid and set(paid) == {"on"}, commits.seen


def test_a_rolled_back_write_does_not_make_the_next_commit_wait(
        postgres_url: str, prompts_dir: Path) -> None:
    from ivr.calls.call_row import _INSERT_EVENTS

    _truncate_postgres(postgres_url)
    app = make_app(postgres_url, prompts_dir, serve_threads=2)
    engine = get_database(app).engine
    step = {"call_sid": "CA" + "0" * 32, "at": utcnow(), "state": "language", "event": "ok",
            "detail": "", "language": "en-US"}
    commits = Commits(engine)
    try:
        with engine.connect() as conn:
            conn.execute(text("UPDATE accounts SET customer_name = customer_name"))
            conn.rollback()
            conn.execute(_INSERT_EVENTS, [step])
            conn.commit()
            conn.execute(text("UPDATE accounts SET customer_name = customer_name"))
            conn.execute(_INSERT_EVENTS, [step])
            conn.commit()
    finally:
        commits.close()
    assert [setting for setting, _ in commits.seen] == ["off", "on"]
