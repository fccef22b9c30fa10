"""Every webhook is answered well inside Twilio's 15 s, whatever the database or clients do.

These run the line under gunicorn (``ivr serve``) as a real process: a hung PostgreSQL, a
SQLite write lock held by another process and slow clients all act on the served app, with
its workers, threads and pools, not on the test client.
"""

from __future__ import annotations

import socket
import sqlite3
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from sqlalchemy import select, text
from sqlalchemy.engine import make_url
from twilio.request_validator import RequestValidator

from ivr.db import Database
from ivr.models import CallEvent, CallSession
from ivr.prompts.snapshots import PromptSnapshots
from ivr.web.app import get_database
from tests.conftest import REPO, TOKEN, Twilio, _truncate_postgres, make_app, new_sid, twiml
from tests.servers.line import serve_line
from tests.servers.stalls import FreezableProxy, SilentListener

pytestmark = pytest.mark.slow

# Twilio gives up at 15 s; an answer must come well before that.
TWILIO_LIMIT = 15.0
WELL_INSIDE = 10.0


def post_signed(base: str, path: str, form: dict[str, str],
                timeout: float = TWILIO_LIMIT + 1) -> tuple[float, requests.Response]:
    """POST a webhook signed as Twilio would; returns (seconds to the answer, response)."""
    url = base + path
    signature = RequestValidator(TOKEN).compute_signature(url, form)
    started = time.monotonic()
    try:
        response = requests.post(url, data=form, headers={"X-Twilio-Signature": signature},
                                 timeout=timeout)
    except requests.Timeout:
        pytest.fail(f"{path}: no answer within {timeout} s (Twilio plays its application error)")
    return time.monotonic() - started, response


def verbs(response: requests.Response) -> list[str]:
    """The top-level TwiML verbs of a 200 answer."""
    assert response.status_code == 200, response.text
    root = ET.fromstring(response.content)  # noqa: S314 - our own app's output
    assert root.tag == "Response"
    return [child.tag for child in root]


def is_apology(response: requests.Response) -> bool:
    """The apology ends the call: something said, then <Hangup>."""
    tags = verbs(response)
    return tags[-1:] == ["Hangup"] and "Say" in tags


# -- A: PostgreSQL that accepts connections and never answers ------------------------------


def test_postgres_that_never_answers_gets_the_apology_in_time() -> None:
    with SilentListener() as silent, serve_line(
            {"IVR_DATABASE_URL": f"postgresql+psycopg://ivr@127.0.0.1:{silent.port}/ivr",
             "IVR_TWILIO_AUTH_TOKEN": TOKEN}, healthy=False) as base:
        seconds, response = post_signed(base, "/voice/incoming",
                                        {"CallSid": new_sid(), "From": "+15555550123"})
        print(f"\nhung PostgreSQL (silent listener): apology after {seconds:.2f} s")
        assert is_apology(response)
        assert seconds < WELL_INSIDE
        health = requests.get(f"{base}/healthz", timeout=TWILIO_LIMIT)
        assert health.status_code == 503


@pytest.fixture
def seeded_postgres(postgres_url: str) -> str:
    """The run's PostgreSQL database, emptied and loaded with the demo accounts."""
    _truncate_postgres(postgres_url)
    get_database(make_app(postgres_url, REPO / "prompts")).dispose()
    return postgres_url


def test_postgres_frozen_mid_session_gets_the_apology_in_time(seeded_postgres: str) -> None:
    url = make_url(seeded_postgres)
    with FreezableProxy((url.host or "127.0.0.1", url.port or 5432)) as proxy:
        proxied = url.set(host="127.0.0.1", port=proxy.port).render_as_string(
            hide_password=False)
        # One worker, so the frozen webhook surely meets a pooled connection (a worker that
        # must connect afresh fails at the connect timeout instead, apologising sooner).
        with serve_line({"IVR_DATABASE_URL": proxied, "IVR_TWILIO_AUTH_TOKEN": TOKEN},
                        workers=1) as base:
            # Calls at once, so the pool holds several connections: the frozen webhook's
            # work and the prompts' version check it starts each find one.
            sids = [new_sid() for _ in range(6)]
            with ThreadPoolExecutor(len(sids)) as pool:
                answers = list(pool.map(lambda sid: post_signed(
                    base, "/voice/incoming", {"CallSid": sid})[1], sids))
            assert all("Gather" in verbs(answer) for answer in answers)
            frozen_sid, other_sid = sids[:2]
            # Long enough for the acknowledgements read after answering to be read (their
            # connections back in the pool), and for the prompts' version check to be due
            # (every 0.2 s): it meets the frozen database too, in a thread of its own.
            time.sleep(0.3)
            proxy.freeze()
            try:
                seconds, response = post_signed(base, "/voice/step/language",
                                                {"CallSid": frozen_sid, "Digits": "1"})
                print(f"\nPostgreSQL frozen mid-session: apology after {seconds:.2f} s")
                assert is_apology(response)
                assert seconds < WELL_INSIDE
                # Work that is still stuck must not make the next caller wait longer.
                seconds, response = post_signed(base, "/voice/incoming", {"CallSid": new_sid()})
                print(f"PostgreSQL frozen, next call: apology after {seconds:.2f} s")
                assert is_apology(response)
                assert seconds < WELL_INSIDE
            finally:
                proxy.thaw()
            # Once the database answers again, so does the line.
            assert "Gather" in verbs(post_signed(base, "/voice/step/language",
                                                 {"CallSid": other_sid, "Digits": "1"})[1])
            # The late work finished after the caller heard the apology and was hung up on:
            # the call is recorded as ended by the deadline, not left in mid-menu.
            database = Database(seeded_postgres)
            try:
                call = _wait_for_state(database, frozen_sid, "ended")
                with database.session() as db:
                    events = list(db.scalars(select(CallEvent.event).where(
                        CallEvent.call_sid == frozen_sid)))
            finally:
                database.dispose()
            assert call.outcome == "deadline"
            assert "deadline" in events


def _wait_for_state(database: Database, call_sid: str, state: str) -> CallSession:
    deadline = time.monotonic() + 10
    while True:
        with database.session() as db:
            call = db.scalar(select(CallSession).where(CallSession.call_sid == call_sid))
        if (call is not None and call.state == state) or time.monotonic() > deadline:
            assert call is not None
            return call
        time.sleep(0.1)


def test_only_the_web_app_gets_statement_timeouts(seeded_postgres: str) -> None:
    from ivr.db import WebTimeouts

    plain = Database(seeded_postgres)
    web = Database(seeded_postgres, web=WebTimeouts.within(8000, threads=4))
    try:
        with plain.engine.connect() as conn:
            # `ivr accounts import`, `ivr worker`: long statements must keep working.
            assert conn.scalar(text("SHOW statement_timeout")) == "0"
        with web.engine.connect() as conn:
            assert conn.scalar(text("SHOW statement_timeout")) == "4s"
            assert conn.scalar(text("SHOW lock_timeout")) == "2s"
            conn.rollback()  # the settings outlive a rolled-back transaction
            assert conn.scalar(text("SHOW statement_timeout")) == "4s"
    finally:
        plain.dispose()
        web.dispose()


# -- B: SQLite write lock held by another connection ---------------------------------------


@pytest.fixture
def served_sqlite(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """The line under gunicorn on a seeded SQLite file: (base URL, file)."""
    path = tmp_path / "served.sqlite3"
    url = f"sqlite:///{path}"
    get_database(make_app(url, REPO / "prompts")).dispose()
    with serve_line({"IVR_DATABASE_URL": url, "IVR_TWILIO_AUTH_TOKEN": TOKEN}) as base:
        yield base, path


def test_sqlite_write_lock_four_calls_all_answered_in_time(
        served_sqlite: tuple[str, Path]) -> None:
    base, path = served_sqlite
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another process holds the write lock (for 17 s)
    answers: list[tuple[float, requests.Response]] = []
    try:
        threads = [threading.Thread(target=lambda: answers.append(
            post_signed(base, "/voice/incoming", {"CallSid": new_sid()}))) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=TWILIO_LIMIT + 5)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    times = sorted(seconds for seconds, _ in answers)
    print(f"\nSQLite write lock held, 4 calls answered after: "
          f"{', '.join(f'{s:.2f}' for s in times)} s")
    assert len(answers) == 4
    for seconds, response in answers:
        assert is_apology(response)
        assert seconds < WELL_INSIDE
    # The lock released, calls go through again.
    assert "Gather" in verbs(post_signed(base, "/voice/incoming", {"CallSid": new_sid()})[1])


def test_a_webhook_waits_for_the_sqlite_write_lock_and_goes_on(tmp_path: Path) -> None:
    # The served app waits for SQLite's write lock itself, trying again every millisecond or
    # two up to its lock budget (ivr.db): a lock released within it costs a wait, not a call.
    path = tmp_path / "ivr.sqlite3"
    app = make_app(f"sqlite:///{path}", REPO / "prompts", serve_threads=2)
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN IMMEDIATE")  # another process writes for 0.4 s
    releaser = threading.Timer(0.4, lambda: holder.execute("ROLLBACK"))
    releaser.start()
    try:
        started = time.monotonic()
        answer = Twilio(app).post("/voice/incoming", CallSid=new_sid(), From="+15555550123")
        waited = time.monotonic() - started
    finally:
        releaser.join()
        holder.close()
    assert answer.status_code == 200 and twiml(answer).find("Gather") is not None
    assert 0.35 <= waited < WELL_INSIDE


def test_a_sqlite_writer_gives_up_at_its_lock_budget(tmp_path: Path) -> None:
    from ivr.db import _begin_immediate_within

    path = tmp_path / "lock.sqlite3"
    holder = sqlite3.connect(path, isolation_level=None)
    waiter = sqlite3.connect(path, isolation_level=None, timeout=0.005)
    holder.execute("BEGIN IMMEDIATE")
    try:
        started = time.monotonic()
        with pytest.raises(sqlite3.OperationalError, match="database is locked"):
            _begin_immediate_within(waiter, 0.3, threading.Lock())
        waited = time.monotonic() - started
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert 0.3 <= waited < 2.0
    _begin_immediate_within(waiter, 0.3, threading.Lock())  # free again: at once
    waiter.execute("ROLLBACK")
    waiter.close()


def test_prompt_checks_do_not_queue_for_the_sqlite_write_lock(tmp_path: Path) -> None:
    # Every node asks the database several times a second whether the prompts changed: on
    # SQLite that read must neither wait for nor hold up the webhooks' write lock.
    app = make_app(f"sqlite:///{tmp_path / 'ivr.sqlite3'}", REPO / "prompts")
    holder = sqlite3.connect(tmp_path / "ivr.sqlite3", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        started = time.monotonic()
        stamp = PromptSnapshots(get_database(app)).stamp()
        waited = time.monotonic() - started
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert stamp is not None  # the shipped prompts, kept when the app loaded them
    assert waited < 1.0


# -- C: slow clients ------------------------------------------------------------------------


def test_slow_clients_do_not_delay_a_real_webhook(served_sqlite: tuple[str, Path]) -> None:
    base, _ = served_sqlite
    for _ in range(4):  # every worker has loaded the app and opened its database
        verbs(post_signed(base, "/voice/incoming", {"CallSid": new_sid()})[1])
    port = int(base.rsplit(":", 1)[1])
    slow = []
    for _ in range(2):
        sock = socket.create_connection(("127.0.0.1", port))
        # Headers promise 1000 bytes of body; only a few ever come.
        sock.sendall(b"POST /voice/incoming HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                     b"Content-Type: application/x-www-form-urlencoded\r\n"
                     b"Content-Length: 1000\r\n\r\nCallSid=CA")
        slow.append(sock)
    try:
        time.sleep(0.5)  # both slow requests have been picked up by the server
        seconds, response = post_signed(base, "/voice/incoming", {"CallSid": new_sid()})
        print(f"\ntwo slow clients: a real webhook answered after {seconds:.2f} s")
        assert "Gather" in verbs(response)
        assert seconds < 1.5
    finally:
        for sock in slow:
            sock.close()
