"""Under `ivr serve` on PostgreSQL, a webhook that wrote only its call's progress answers
Twilio before reading its COMMIT's answer; one that wrote anything more (a lockout's
failure, a payment) still waits for it. Real gunicorn, real PostgreSQL on 127.0.0.1."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections.abc import Iterator

import pytest
import requests
from click.testing import CliRunner
from sqlalchemy import create_engine, text

from ivr.cli import main
from ivr.simulator.demo import DEMO_CALLER
from tests.conftest import TOKEN, new_sid
from tests.servers.line import serve_line
from tests.test_nodes import _kept_app
from tests.test_timeouts import is_apology, post_signed, seeded_postgres  # noqa: F401

pytestmark = pytest.mark.slow

UNKNOWN_CALLER = "+15555550199"
KNOWN_CALLER = DEMO_CALLER  # the account ending in 1234
# Refuses the writes of one call's row that the test names, as a failing disk or a
# dropped connection would refuse them, after the statement was sent.
REFUSE = """
CREATE OR REPLACE FUNCTION ivr_test_refuse() RETURNS trigger AS $$
BEGIN
    IF NEW.call_sid IN (SELECT sid FROM ivr_test_refused) THEN
        IF {condition} THEN
            RAISE EXCEPTION 'refused for the test';
        END IF;
    END IF;
    RETURN NEW;
END $$ LANGUAGE plpgsql;
CREATE TABLE IF NOT EXISTS ivr_test_refused (sid text PRIMARY KEY);
DROP TRIGGER IF EXISTS ivr_test_refuse ON call_sessions;
CREATE TRIGGER ivr_test_refuse BEFORE UPDATE ON call_sessions
    FOR EACH ROW EXECUTE FUNCTION ivr_test_refuse();
"""


@pytest.fixture
def line(seeded_postgres: str) -> Iterator[tuple[str, str]]:  # noqa: F811
    engine = create_engine(seeded_postgres)
    try:
        with serve_line({"IVR_DATABASE_URL": seeded_postgres, "IVR_TWILIO_AUTH_TOKEN": TOKEN},
                        workers=1) as base:
            yield base, seeded_postgres
    finally:
        with engine.begin() as db:
            db.execute(text("DROP TRIGGER IF EXISTS ivr_test_refuse ON call_sessions"))
            db.execute(text("DROP TABLE IF EXISTS ivr_test_refused"))
        engine.dispose()


def _refuse(url: str, call_sid: str, condition: str) -> None:
    engine = create_engine(url)
    with engine.begin() as db:
        db.execute(text(REFUSE.format(condition=condition)))
        db.execute(text("INSERT INTO ivr_test_refused VALUES (:sid)"), {"sid": call_sid})
    engine.dispose()


def _row(url: str, call_sid: str) -> dict[str, object]:
    engine = create_engine(url)
    with engine.connect() as db:
        row = db.execute(text("SELECT state, silences, tries FROM call_sessions "
                              "WHERE call_sid = :sid"), {"sid": call_sid}).mappings().one()
    engine.dispose()
    return dict(row)


def _asks(response: requests.Response) -> str:
    """The <Gather>'s action path: the question the caller is asked."""
    root = ET.fromstring(response.content)  # noqa: S314 - our own app's output
    gather = root.find("Gather")
    assert gather is not None, response.text
    return "/voice" + gather.attrib["action"].split("/voice", 1)[1]


def test_calls_over_http_leave_no_connection_behind(line: tuple[str, str],
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """A paid call, then two calls that walk the menus: over 30 webhooks on one worker
    whose pool holds 16 connections, each one left waiting for a COMMIT's answer comes
    back once that is read."""
    base, url = line
    monkeypatch.setenv("IVR_DATABASE_URL", url)
    monkeypatch.setattr("ivr.cli.base.create_app", _kept_app)  # closed after the test
    webhooks = 0
    for presses in ("1 60614 1 1", "1 60614 3" + " 9" * 12, "1 60614 3" + " 9" * 12):
        result = CliRunner().invoke(main, ["call", "--url", base, "--token", TOKEN,
                                           "--press", presses, "--json"])
        assert result.exit_code == 0, result.output
        events = json.loads(result.output)["events"]
        assert events[-1] == {"event": "hangup", "by": "caller",
                              "reason": "the script ran out of presses"}
        webhooks += 1 + sum(e["event"] in ("press", "pay") for e in events)
    assert webhooks > 36
    listed = json.loads(CliRunner().invoke(main, ["payments", "list", "--json"]).output)
    assert [row["status"] for row in listed] == ["paid"]
    engine = create_engine(url)
    with engine.connect() as db:
        open_here = db.execute(text(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND state LIKE 'idle in transaction%'")).scalar_one()
    engine.dispose()
    assert open_here == 0


def _at_account_entry(base: str, sid: str) -> str:
    """A new call, silent at the language menu: English, and its account number asked."""
    _, first = post_signed(base, "/voice/incoming", {"CallSid": sid, "From": UNKNOWN_CALLER})
    _, entry = post_signed(base, _asks(first), {"CallSid": sid, "From": UNKNOWN_CALLER})
    asked = _asks(entry)
    assert asked == "/voice/step/account_entry"
    return asked


def test_a_move_refused_after_the_answer_costs_the_caller_one_repeat(
        line: tuple[str, str]) -> None:
    base, url = line
    sid = new_sid()
    _, first = post_signed(base, "/voice/incoming", {"CallSid": sid, "From": KNOWN_CALLER})
    asked = _asks(first)
    assert asked == "/voice/step/confirm_account"  # "for the account ending in 1234..."
    _refuse(url, sid, "NEW.state = 'verify'")
    # Yes, that account: the ZIP is asked, answered before the refusal is read.
    _, answered = post_signed(base, asked, {"CallSid": sid, "From": KNOWN_CALLER,
                                            "Digits": "1"})
    assert _asks(answered) == "/voice/step/verify"
    assert _row(url, sid)["state"] == "confirm_account"  # the move was not kept
    # The ZIP, keyed for a question the row never reached, is not taken as an answer: the
    # question before is asked again, at once (the refused transaction's row lock went
    # with it, and the worker's next webhook has a connection that works).
    seconds, again = post_signed(base, "/voice/step/verify", {
        "CallSid": sid, "From": KNOWN_CALLER, "Digits": "60614"})
    assert seconds < 2
    assert _asks(again) == asked and not is_apology(again)
    engine = create_engine(url)
    with engine.connect() as db:
        stale = db.execute(text("SELECT count(*) FROM call_events WHERE call_sid = :sid "
                                "AND event = 'stale'"), {"sid": sid}).scalar_one()
    engine.dispose()
    assert stale == 1
    assert _row(url, sid)["state"] == "confirm_account"


def test_a_question_asked_again_still_waits_for_its_commit(line: tuple[str, str]) -> None:
    """Silence, and the same question again: its answer would come back for the state the
    row holds whether or not the write held, so a refused write is the apology, at once."""
    base, url = line
    sid = new_sid()
    asked = _at_account_entry(base, sid)
    _refuse(url, sid, "NEW.silences > OLD.silences")
    _, answered = post_signed(base, asked, {"CallSid": sid, "From": UNKNOWN_CALLER})
    assert is_apology(answered)


def test_a_lockout_failure_still_waits_for_its_commit(line: tuple[str, str]) -> None:
    """A wrong ZIP writes a failure toward the lockout, which must be durable before the
    caller hears anything: a refused commit there is the apology, heard at once."""
    base, url = line
    sid = new_sid()
    _, zip_asked = post_signed(base, _at_account_entry(base, sid), {
        "CallSid": sid, "From": UNKNOWN_CALLER, "Digits": "4401001234"})
    asked_zip = _asks(zip_asked)
    assert asked_zip == "/voice/step/verify"
    _refuse(url, sid, "NEW.verify_failures > OLD.verify_failures")
    _, wrong = post_signed(base, asked_zip, {"CallSid": sid, "From": UNKNOWN_CALLER,
                                             "Digits": "99999"})
    assert is_apology(wrong)


def test_a_calls_end_refused_after_the_answer_is_logged_not_apologised_for(
        line: tuple[str, str]) -> None:
    """Twilio ignores what a status callback is answered: the end's write is read after it,
    and a refused one leaves the call open as it did before (logged as an error)."""
    base, url = line
    sid = new_sid()
    post_signed(base, "/voice/incoming", {"CallSid": sid, "From": KNOWN_CALLER})
    _refuse(url, sid, "NEW.ended_at IS NOT NULL")
    _, answered = post_signed(base, "/voice/status", {"CallSid": sid, "From": KNOWN_CALLER,
                                                      "CallStatus": "completed"})
    assert answered.status_code == 200 and not is_apology(answered)
    engine = create_engine(url)
    with engine.connect() as db:
        ended = db.execute(text("SELECT ended_at FROM call_sessions WHERE call_sid = :sid"),
                           {"sid": sid}).scalar_one()
    engine.dispose()
    assert ended is None
