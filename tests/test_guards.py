"""The line under attack: card testing, account enumeration, verification guessing.

Each test plays the attack through signed webhooks, as an outsider would, and checks what
the limits let through (on SQLite and PostgreSQL), and that the owner is not the one locked
out.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
from flask import Flask
from sqlalchemy import func, select

from ivr.models import GuardEvent, Payment, VerificationFailure
from ivr.web.app import get_database
from tests.conftest import (
    CLOSED_TIME,
    OPEN_TIME,
    Twilio,
    call,
    custom_prompts,
    make_app,
    new_sid,
    said_text,
    set_clock,
    twiml,
)

DECLINED = "4000000000000002"
GOOD = "4111111111111111"
# Typed account 4401001234, ZIP, pay the full balance, confirm, card, continue to <Pay>.
TYPED_PAY = "1 4401001234# 60614 1 1"
OWNER = "+15555550123"  # on file for 4401001234
STRANGERS = [f"+1555555{n:04d}" for n in range(1000, 1020)]


def pay_sessions(result: object) -> int:
    return len([e for e in result.events if e["event"] == "pay"])  # type: ignore[attr-defined]


def count(app: Flask, kind: str) -> int:
    with get_database(app).session() as db:
        return int(db.scalar(select(func.count()).select_from(GuardEvent)
                             .where(GuardEvent.kind == kind)) or 0)


def test_declined_sessions_on_one_account_are_bounded_across_calls_and_numbers(
        app: Flask) -> None:
    # Four calls from four numbers, each trying a declined card (and "try again" twice).
    sessions = 0
    results = []
    for number in STRANGERS[:4]:
        result = call(app, TYPED_PAY + " 1 1 1" * 2, cards=[DECLINED], from_number=number)
        sessions += pay_sessions(result)
        results.append(result)
    assert sessions == 3  # pay_declines_per_account in 24 hours
    last = results[-1].said()
    assert said_text(app, "pay.limit_reached") in last
    assert any(e["event"] == "dial" for e in results[-1].events)  # a representative
    assert count(app, "pay_declined") == 3 and count(app, "pay_blocked") >= 1
    # The owner, the next day, can pay again.
    set_clock(app, OPEN_TIME + timedelta(days=1, minutes=1))
    result = call(app, "1 60614 1 1", cards=[GOOD], from_number=OWNER)
    assert pay_sessions(result) == 1
    with get_database(app).session() as db:
        assert db.scalar(select(func.count()).select_from(Payment)) == 1


def test_declined_sessions_from_one_number_are_bounded_across_accounts(app: Flask) -> None:
    caller = STRANGERS[5]
    first = call(app, TYPED_PAY + " 1 1 1" * 2, cards=[DECLINED], from_number=caller)
    assert pay_sessions(first) == 3
    # Another account, same number: refused before <Pay>.
    other = call(app, "1 4401003456# 60617 1 1", cards=[DECLINED], from_number=caller)
    assert pay_sessions(other) == 0
    assert said_text(app, "pay.limit_reached") in other.said()


def test_declined_sessions_on_the_whole_line_are_bounded(database_url: str,
                                                         tmp_path: Path) -> None:
    prompts = custom_prompts(tmp_path, {"settings.toml": (
        "pay_declines_per_line = 40", "pay_declines_per_line = 2")})
    app = make_app(database_url, prompts)
    # Two numbers, two accounts, one decline each: the line's allowance is spent.
    call(app, TYPED_PAY, cards=[DECLINED], from_number=STRANGERS[0])
    call(app, "1 4401003456# 60617 1 1", cards=[DECLINED], from_number=STRANGERS[1])
    third = call(app, "1 60614 1 1", cards=[GOOD], from_number=OWNER)
    assert pay_sessions(third) == 0
    # An hour later (line_window_minutes) the line takes payments again.
    set_clock(app, OPEN_TIME + timedelta(minutes=61))
    assert pay_sessions(call(app, "1 60614 1 1", cards=[GOOD], from_number=OWNER)) == 1


def test_side_by_side_calls_cannot_run_more_sessions_than_allowed(database_url: str,
                                                                  tmp_path: Path) -> None:
    prompts = custom_prompts(tmp_path, {"settings.toml": (
        "pay_declines_per_account = 3", "pay_declines_per_account = 1")})
    app = make_app(database_url, prompts)
    twilio = Twilio(app)
    calls = [{"CallSid": new_sid(), "From": number} for number in STRANGERS[:2]]
    answers = []
    for base in calls:  # both callers reach the last question before <Pay>
        for path, digits in [("/voice/incoming", ""), ("/voice/step/language", "1"),
                             ("/voice/step/account_entry", "4401001234"),
                             ("/voice/step/verify", "60614"), ("/voice/step/main_menu", "1")]:
            twiml(twilio.post(path, Digits=digits, **base))
    for base in calls:  # the first is in <Pay>, its result not back yet
        answers.append(twiml(twilio.post("/voice/step/method", Digits="1", **base)))
    assert answers[0].find("Pay") is not None
    assert answers[1].find("Pay") is None
    assert said_text(app, "pay.limit_reached") in "".join(answers[1].itertext())


def test_limits_are_counted_in_metrics(app: Flask) -> None:
    call(app, TYPED_PAY + " 1 1 1" * 2, cards=[DECLINED], from_number=STRANGERS[7])
    body = app.test_client().get("/metrics").get_data(as_text=True)
    assert 'ivr_guard_events_last_hour{kind="pay_declined"} 3.0' in body
    assert 'ivr_guard_events_total{kind="pay_declined"}' in body


# --- enumeration ----------------------------------------------------------------------------

def test_account_numbers_typed_from_one_number_are_bounded(app: Flask) -> None:
    caller = STRANGERS[8]
    blocked_calls = 0
    for n in range(4):  # four calls, up to three wrong numbers each
        result = call(app, ["1", *(f"99{n}0000{i}#" for i in range(3))], from_number=caller)
        blocked_calls += said_text(app, "account.lookup_limit") in result.said()
    # Six numbers were looked up (account_misses_per_caller); the last two calls were not.
    assert count(app, "account_miss") == 6
    assert blocked_calls == 2
    # Past the limit a real account number is not looked up either: existence is not told.
    result = call(app, ["1", "4401001234#", "60614"], from_number=caller)
    said = result.said()
    assert said_text(app, "account.lookup_limit") in said
    assert said_text(app, "verify.zip") not in said
    assert count(app, "lookup_blocked") >= 1
    # Another number is not held by this one's misses.
    other = call(app, ["1", "4401001234#", "hangup"], from_number=STRANGERS[9])
    assert said_text(app, "verify.zip") in other.said()


def test_account_numbers_typed_on_the_whole_line_are_bounded(database_url: str,
                                                             tmp_path: Path) -> None:
    prompts = custom_prompts(tmp_path, {"settings.toml": (
        "account_misses_per_line = 100", "account_misses_per_line = 4")})
    app = make_app(database_url, prompts)
    for number in STRANGERS[:2]:
        call(app, ["1", "9990000001#", "9990000002#"], from_number=number)
    result = call(app, ["1", "4401001234#", "60614"], from_number=STRANGERS[3])
    assert said_text(app, "account.lookup_limit") in result.said()


# --- verification ---------------------------------------------------------------------------

def _to_verify(twilio: Twilio, base: dict[str, str]) -> None:
    twiml(twilio.post("/voice/incoming", **base))
    twiml(twilio.post("/voice/step/language", Digits="1", **base))
    twiml(twilio.post("/voice/step/account_entry", Digits="4401001234", **base))


def _burst(requests: list[Callable[[], object]]) -> None:
    """Run every request at the same moment, each on its own thread."""
    start = threading.Barrier(len(requests))
    errors: list[BaseException] = []

    def run(request: Callable[[], object]) -> None:
        try:
            start.wait()
            request()
        except BaseException as exc:  # reported below, not lost in the thread
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(r,)) for r in requests]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []


def _guesses_checked(app: Flask) -> int:
    with get_database(app).session() as db:
        return int(db.scalar(select(func.count()).select_from(VerificationFailure)) or 0)


def test_simultaneous_guesses_from_one_number_stop_at_the_limit(app: Flask) -> None:
    twilio = Twilio(app)
    calls = [{"CallSid": new_sid(), "From": STRANGERS[10]} for _ in range(16)]
    for base in calls:
        _to_verify(twilio, base)
    answers: list[object] = []
    _burst([lambda base=base: answers.append(twiml(twilio.post(  # type: ignore[misc]
        "/voice/step/verify", Digits="11111", **base))) for base in calls])
    assert len(answers) == 16
    assert _guesses_checked(app) == 5  # lockout_failures


def test_simultaneous_guesses_from_many_numbers_stop_at_the_limit(app: Flask) -> None:
    twilio = Twilio(app)
    calls = [{"CallSid": new_sid(), "From": number} for number in STRANGERS[:16]]
    for base in calls:
        _to_verify(twilio, base)
    _burst([lambda base=base: twiml(twilio.post(  # type: ignore[misc]
        "/voice/step/verify", Digits="11111", **base)) for base in calls])
    assert _guesses_checked(app) == 10  # lockout_failures_all_callers


def test_a_strangers_wrong_zips_do_not_lock_the_owner_out(app: Flask) -> None:
    set_clock(app, CLOSED_TIME)
    stranger = STRANGERS[11]
    call(app, ["1", "4401001234#", "11111", "22222", "33333"], from_number=stranger)
    locked = call(app, ["1", "4401001234#", "44444", "55555", "60614"], from_number=stranger)
    # The stranger is locked out: even the right ZIP no longer opens the account to them.
    assert said_text(app, "verify.locked") in locked.said()
    assert "dollars" not in locked.said()
    # The owner, from the number on file, with the right ZIP, hears the balance and can pay.
    owner = call(app, "1 60614 1 1", cards=[GOOD], from_number=OWNER)
    assert said_text(app, "verify.locked") not in owner.said()
    assert pay_sessions(owner) == 1


def test_the_owner_is_held_by_their_own_failures(app: Flask) -> None:
    set_clock(app, CLOSED_TIME)
    call(app, ["1", "11111", "22222", "33333"], from_number=OWNER)
    again = call(app, ["1", "44444", "55555", "60614"], from_number=OWNER)
    assert said_text(app, "verify.locked") in again.said()
    assert "dollars" not in again.said()


@pytest.mark.slow
def test_simultaneous_guesses_through_four_workers_stop_at_the_limit(
        postgres_url: str) -> None:
    """The race as an attacker runs it: 16 wrong ZIPs at once, four gunicorn workers."""
    import requests
    from twilio.request_validator import RequestValidator

    from tests.conftest import REPO, TOKEN, _truncate_postgres
    from tests.servers.line import serve_line

    _truncate_postgres(postgres_url)
    get_database(make_app(postgres_url, REPO / "prompts")).dispose()
    validator = RequestValidator(TOKEN)
    with serve_line({"IVR_DATABASE_URL": postgres_url, "IVR_TWILIO_AUTH_TOKEN": TOKEN},
                    workers=4) as base:

        def post(path: str, **form: str) -> None:
            url = base + path
            answer = requests.post(url, data=form, timeout=30, headers={
                "X-Twilio-Signature": validator.compute_signature(url, form)})
            assert answer.status_code == 200

        calls = [{"CallSid": new_sid(), "From": STRANGERS[12]} for _ in range(16)]
        for form in calls:
            post("/voice/incoming", **form)
            post("/voice/step/language", Digits="1", **form)
            post("/voice/step/account_entry", Digits="4401001234", **form)
        _burst([lambda form=form: post(  # type: ignore[misc]
            "/voice/step/verify", Digits="11111", **form) for form in calls])
    app = make_app(postgres_url, REPO / "prompts")
    assert _guesses_checked(app) == 5
