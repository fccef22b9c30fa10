"""A worker's claim costs the same however long the backlog: an outage that queues
thousands of payments must not make each claim slower as the queue grows (SQLite once read
every pending row to claim a few, through the due index)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from sqlalchemy import select

from ivr.models import OutboxEntry, utcnow
from ivr.money.posting import claim_rows
from ivr.web.app import get_database
from tests.conftest import REPO, make_app
from tests.test_posting import queue_payments

BATCH = 16  # rows a worker of 4 threads claims at once


def _claim_steps(url: str, backlog: int) -> int:
    """SQLite virtual-machine steps of claiming a batch out of ``backlog`` pending rows."""
    app = make_app(url, REPO / "prompts")
    queue_payments(app, backlog)
    database = get_database(app)
    with database.session() as db:
        newest = list(db.scalars(select(OutboxEntry.id).order_by(OutboxEntry.id.desc())
                                 .limit(BATCH)))
    steps = 0

    def count() -> int:
        nonlocal steps
        steps += 1
        return 0

    with database.session() as db:
        driver = db.connection().connection.driver_connection
        assert driver is not None
        progress: Callable[[Callable[[], int] | None, int], None] = driver.set_progress_handler
        progress(count, 1)
        try:
            posts = claim_rows(db, newest, "test", utcnow(), 60)
        finally:
            progress(None, 1)
        db.rollback()
    assert sorted(posts) == sorted(newest)
    database.dispose()
    return steps


def test_a_claim_does_not_grow_with_the_backlog(tmp_path: Path) -> None:
    small = _claim_steps(f"sqlite:///{tmp_path / 'small.sqlite3'}", 20)
    large = _claim_steps(f"sqlite:///{tmp_path / 'large.sqlite3'}", 2000)
    # The same statements on the same rows: within a few steps of each other (a deeper
    # B-tree costs a few more), where reading every pending row cost about 100 times more.
    assert large < small * 1.5, (small, large)
