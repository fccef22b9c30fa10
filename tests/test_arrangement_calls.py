"""More time to pay, in whole calls through signed webhooks on SQLite and PostgreSQL (and the
flow harness where a call needs something changed halfway)."""

from __future__ import annotations

import json
import threading
from datetime import timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from flask import Flask
from sqlalchemy import select
from sqlalchemy.orm import selectinload

from ivr.arrangements import store
from ivr.calls.steps import PayCapture
from ivr.cli import main
from ivr.models import Account, Arrangement, OutboxEntry, Payment
from ivr.prompts import speech
from ivr.simulator.demo import demo_file
from ivr.statuses import ArrangementKind, ArrangementStatus, OutboxStatus, PostingStatus
from ivr.web.app import get_database
from tests.conftest import (
    CLOSED_TIME,
    OPEN_TIME,
    REPO,
    Twilio,
    call,
    custom_prompts,
    make_app,
    new_sid,
    said_text,
    set_clock,
    twiml,
)
from tests.flow import CARD, PAY, SILENCE, SWITCH_LANGUAGE, YES, demo_line, key

JORDAN = "+15555550124"  # 4401005678, ZIP 60615, disconnection pending, 312.80 due
ALEX = "+15555550123"  # 4401001234, ZIP 60614, active, 123.45 due
MORE_TIME = key("main_menu", "more_time")
EXTENSION, INSTALMENTS = key("arrange_menu", "extension"), key("arrange_menu", "instalments")
AGREE, BACK = key("arrange_confirm", "agree"), key("arrange_confirm", "back")
DONE_MENU = key("arrange_done", "menu")
RETRY_DOWN, DROP = key("down_payment_failed", "retry"), key("down_payment_failed", "menu")
INSTALMENT = key("amount_menu", "instalment")
TO_ARRANGE = [YES, "60615", MORE_TIME]
DECLINED = "4000000000000002"
TODAY = OPEN_TIME.date()


def arrangements(app: Flask) -> list[Arrangement]:
    with get_database(app).session() as db:
        found = db.scalars(select(Arrangement).options(selectinload(Arrangement.instalments))
                           .order_by(Arrangement.id))
        return list(found)


def outbox(app: Flask) -> list[tuple[int | None, int | None, str]]:
    with get_database(app).session() as db:
        return [(o.payment_id, o.arrangement_id, o.status)
                for o in db.scalars(select(OutboxEntry).order_by(OutboxEntry.id))]


def payments(app: Flask) -> list[Payment]:
    with get_database(app).session() as db:
        return list(db.scalars(select(Payment).order_by(Payment.id)))


def words(cents: int) -> str:
    return speech.money(cents, "en-US")


def when(days: int) -> str:
    return speech.date_words(TODAY + timedelta(days=days), "en-US", TODAY)


def test_jordan_asks_for_an_extension(app: Flask) -> None:
    result = call(app, [*TO_ARRANGE, EXTENSION, AGREE, SILENCE], from_number=JORDAN)
    text = result.said()
    assert said_text(app, "menu.arrange") in text
    assert said_text(app, "arrange.menu_extension", amount=words(31280), date=when(14)) in text
    assert said_text(app, "arrange.menu_instalments", down=words(7820), count="3",
                     amount=words(7820)) in text
    assert said_text(app, "arrange.confirm_extension", amount=words(31280),
                     date=when(14)) in text
    [arrangement] = arrangements(app)
    assert (arrangement.kind, arrangement.status, arrangement.balance_cents,
            arrangement.down_payment_cents, arrangement.down_payment_id) == (
        ArrangementKind.EXTENSION, "active", 31280, 0, None)
    assert [(i.seq, i.due_date, i.amount_cents) for i in arrangement.instalments] == [
        (1, TODAY + timedelta(days=14), 31280)]
    assert arrangement.account_number == "4401005678" and arrangement.call_sid == result.call_sid
    assert arrangement.confirmation_code[0] == "A" and len(arrangement.confirmation_code) == 8
    assert arrangement.posting_status == PostingStatus.QUEUED
    assert said_text(app, "arrange.number",
                     code=speech.spell(arrangement.confirmation_code)) in text
    assert outbox(app) == [(None, arrangement.id, OutboxStatus.PENDING)]
    assert payments(app) == []  # an extension takes no money
    assert said_text(app, "goodbye.thanks") in text


def test_instalment_plan_with_a_card_down_payment(app: Flask) -> None:
    result = call(app, [*TO_ARRANGE, INSTALMENTS, AGREE, CARD, SILENCE],
                  from_number=JORDAN)
    text = result.said()
    # The terms in full before the caller agrees: the share now, each instalment and date.
    assert said_text(app, "arrange.confirm_down", amount=words(7820)) in text
    for days in (30, 60, 90):
        assert said_text(app, "arrange.confirm_instalment", amount=words(7820),
                         date=when(days)) in text
    [pay] = [e for e in result.events if e["event"] == "pay"]
    assert (pay["amount"], pay["result"]) == ("78.20", "success")
    [payment] = payments(app)
    assert (payment.amount_cents, payment.purpose) == (7820, "down_payment")
    [arrangement] = arrangements(app)
    assert arrangement.kind == ArrangementKind.INSTALMENTS
    assert (arrangement.balance_cents, arrangement.down_payment_cents,
            arrangement.down_payment_id) == (31280, 7820, payment.id)
    assert [(i.due_date, i.amount_cents) for i in arrangement.instalments] == [
        (TODAY + timedelta(days=d), 7820) for d in (30, 60, 90)]
    # The payment's confirmation and the arrangement's number, both heard.
    assert said_text(app, "pay.success", amount=words(7820)) in text
    assert said_text(app, "arrange.payment_number",
                     code=speech.spell(payment.confirmation_code)) in text
    assert said_text(app, "arrange.number",
                     code=speech.spell(arrangement.confirmation_code)) in text
    assert outbox(app) == [(payment.id, None, "pending"), (None, arrangement.id, "pending")]


def test_a_declined_down_payment_records_nothing(app: Flask) -> None:
    result = call(app, [*TO_ARRANGE, INSTALMENTS, AGREE, CARD, DROP, SILENCE],
                  from_number=JORDAN, cards=[DECLINED])
    text = result.said()
    assert said_text(app, "pay.result.declined") in text
    assert said_text(app, "arrange.not_made") in text
    assert arrangements(app) == [] and payments(app) == [] and outbox(app) == []


def test_a_declined_down_payment_can_be_tried_again(app: Flask) -> None:
    result = call(app, [*TO_ARRANGE, INSTALMENTS, AGREE, CARD,
                        RETRY_DOWN, CARD, SILENCE],
                  from_number=JORDAN, cards=[DECLINED, "4111111111111111"])
    assert [e["result"] for e in result.events if e["event"] == "pay"] == [
        "payment-connector-error", "success"]
    assert [e["amount"] for e in result.events if e["event"] == "pay"] == ["78.20", "78.20"]
    [payment] = payments(app)
    [arrangement] = arrangements(app)
    assert arrangement.down_payment_id == payment.id and payment.purpose == "down_payment"


def test_a_cancelled_down_payment_then_a_bill_payment_is_only_a_payment(app: Flask) -> None:
    full = key("amount_menu", "full")
    # Star at secure entry cancels the down payment; then the bill, in full.
    call(app, [*TO_ARRANGE, INSTALMENTS, AGREE, CARD, key("down_payment_failed", "menu"),
               PAY, full, CARD, SILENCE], cards=["*", "4111111111111111"], from_number=JORDAN)
    [payment] = payments(app)
    assert (payment.amount_cents, payment.purpose) == (31280, None)
    assert arrangements(app) == []


def test_going_back_records_nothing_until_the_caller_agrees(app: Flask) -> None:
    result = call(app, [*TO_ARRANGE, INSTALMENTS, BACK, EXTENSION, BACK, SILENCE, SILENCE,
                        SILENCE], from_number=JORDAN)
    text = result.said()
    menu = said_text(app, "arrange.menu_extension", amount=words(31280), date=when(14))
    assert text.count(menu) >= 3  # offered, and again after each "go back"
    assert said_text(app, "arrange.confirm_agree") in text
    assert arrangements(app) == [] and outbox(app) == []


def set_columns(app: Flask, number: str, **columns: object) -> None:
    """Change an account in the cache as a new account file would."""
    with get_database(app).session() as db:
        account = db.scalars(select(Account).where(Account.account_number == number)).one()
        for name, value in columns.items():
            setattr(account, name, value)


def test_only_accounts_arrangements_are_for_hear_the_option(app: Flask) -> None:
    # Alex's account is active: no disconnection notice, so no "more time" to offer.
    result = call(app, [YES, "60614", MORE_TIME, SILENCE], from_number=ALEX)
    text = result.said()
    assert said_text(app, "menu.arrange") not in text
    assert said_text(app, "common.no_match") in text
    # The biller's Y makes it eligible all the same.
    set_columns(app, "4401001234", arrangement_eligible=True)
    text = call(app, [YES, "60614"], from_number=ALEX).said()
    assert said_text(app, "menu.arrange") in text
    assert arrangements(app) == []


def test_not_eligible_hears_why_and_reaches_a_representative(app: Flask) -> None:
    set_columns(app, "4401005678", broken_arrangements_12m=1)
    result = call(app, [YES, "60615", MORE_TIME], from_number=JORDAN)
    text = result.said()
    assert said_text(app, "arrange.why_broken") in text
    assert said_text(app, "arrange.other_help") in text
    assert said_text(app, "agent.connecting") in text
    assert [e["event"] for e in result.events][-1] in ("dial", "hangup")
    assert arrangements(app) == []


def test_not_eligible_after_hours_hears_when_the_office_opens(app: Flask) -> None:
    set_clock(app, CLOSED_TIME)
    set_columns(app, "4401005678", service_start_date=CLOSED_TIME.date() - timedelta(days=20))
    result = call(app, [YES, "60615", MORE_TIME, SILENCE], from_number=JORDAN)
    text = result.said()
    assert said_text(app, "arrange.why_too_new") in text
    assert "Our office is closed right now" in text
    assert text.count(said_text(app, "menu.arrange")) >= 2  # back at the main menu
    assert arrangements(app) == []


def test_each_reason_has_its_own_sentence(tmp_path: Path) -> None:
    changes = {
        "arrange.why_balance_cap": {"balance_due_cents": 150001},
        "arrange.why_too_new": {"service_start_date": TODAY - timedelta(days=30)},
        "arrange.why_broken": {"broken_arrangements_12m": 1},
        "arrange.why_returned": {"returned_payments_12m": 2},
        "arrange.why_biller": {"arrangement_eligible": False},
    }
    with demo_line(tmp_path) as line:
        for prompt_id, columns in changes.items():
            with line.database.session() as db:
                jordan = db.scalars(select(Account).where(
                    Account.account_number == "4401005678")).one()
                for name, value in {"balance_due_cents": 31280, "service_start_date":
                                    TODAY - timedelta(days=800), "broken_arrangements_12m": 0,
                                    "returned_payments_12m": 0, "arrangement_eligible": None,
                                    **columns}.items():
                    setattr(jordan, name, value)
            flow = line.call(JORDAN)
            flow.press(*TO_ARRANGE)
            assert flow.heard()[:2] == [prompt_id, "arrange.other_help"], prompt_id
        # The biller's Y makes an active account eligible.
        with line.database.session() as db:
            alex = db.scalars(select(Account).where(Account.account_number == "4401001234")).one()
            alex.arrangement_eligible = True
        flow = line.call(ALEX)
        flow.press(YES, "60614", MORE_TIME)
        assert flow.state == "arrange_menu"


def test_a_later_call_hears_the_arrangement_and_can_pay_the_instalment(app: Flask) -> None:
    call(app, [*TO_ARRANGE, INSTALMENTS, AGREE, CARD, SILENCE], from_number=JORDAN)
    set_clock(app, OPEN_TIME + timedelta(days=1))
    # The down payment was a day ago to the minute: "you already paid today" comes first.
    pay_again = key("paid_today", "again")
    result = call(app, [YES, "60615", PAY, pay_again, INSTALMENT, CARD, SILENCE],
                  from_number=JORDAN)
    text = result.said()
    tomorrow = TODAY + timedelta(days=1)
    assert said_text(app, "summary.arrangement",
                     until=speech.date_words(TODAY + timedelta(days=90), "en-US", tomorrow),
                     amount=words(7820),
                     date=speech.date_words(TODAY + timedelta(days=30), "en-US",
                                            tomorrow)) in text
    assert "due to be disconnected" not in text
    assert said_text(app, "menu.arrange") not in text  # one arrangement at a time
    assert said_text(app, "amount.menu_instalment", amount=words(7820)) in text
    down, instalment = payments(app)
    assert (down.purpose, instalment.amount_cents, instalment.purpose) == (
        "down_payment", 7820, None)
    assert len(arrangements(app)) == 1


def test_a_second_arrangement_is_refused_by_the_database(tmp_path: Path) -> None:
    with demo_line(tmp_path) as line:
        flow = line.call(JORDAN)
        flow.press(*TO_ARRANGE, EXTENSION)
        assert flow.state == "arrange_confirm"
        # Another call on the same account agrees first.
        other = line.call(JORDAN)
        other.press(*TO_ARRANGE, EXTENSION, AGREE)
        assert other.state == "arrange_done"
        flow.press(AGREE)
        assert flow.heard()[0] == "arrange.exists" and flow.state == "main_menu"
        with line.database.session() as db:
            assert len(db.scalars(select(Arrangement)).all()) == 1
            assert len(db.scalars(select(OutboxEntry)).all()) == 1
        assert flow.session().arrangement_offer is None


def test_without_a_down_payment_the_plan_is_recorded_on_agreement(
        database_url: str, tmp_path: Path) -> None:
    prompts = custom_prompts(tmp_path, {"settings.toml": (
        "down_payment_percent = 25", "down_payment_percent = 0")})
    app = make_app(database_url, prompts)
    result = call(app, [*TO_ARRANGE, INSTALMENTS, AGREE, SILENCE], from_number=JORDAN)
    text = result.said()
    assert said_text(app, "arrange.menu_instalments_no_down", down=words(0), count="3",
                     amount=words(10426)) in text
    assert said_text(app, "arrange.confirm_plan", amount=words(31280)) in text
    [arrangement] = arrangements(app)
    assert [i.amount_cents for i in arrangement.instalments] == [10428, 10426, 10426]
    assert arrangement.down_payment_cents == 0 and payments(app) == []


def test_extensions_only_and_arrangements_off(database_url: str, tmp_path: Path) -> None:
    prompts = custom_prompts(tmp_path, {"settings.toml": (
        "max_instalments = 3", "max_instalments = 1")})
    app = make_app(database_url, prompts)
    result = call(app, [*TO_ARRANGE, INSTALMENTS, EXTENSION, AGREE, SILENCE],
                  from_number=JORDAN)
    assert said_text(app, "arrange.menu_instalments", down=words(7820), count="3",
                     amount=words(7820)) not in result.said()
    assert said_text(app, "common.no_match") in result.said()
    assert [a.kind for a in arrangements(app)] == [ArrangementKind.EXTENSION]
    off = custom_prompts(tmp_path / "off", {"settings.toml": (
        "enabled = true\n# Account statuses that qualify.",
        "enabled = false\n# Account statuses that qualify.")})
    off_app = make_app(f"sqlite:///{tmp_path / 'off.sqlite3'}", off)
    result = call(off_app, [*TO_ARRANGE], from_number=JORDAN)
    assert said_text(off_app, "menu.arrange") not in result.said()
    assert said_text(off_app, "common.no_match") in result.said()


def test_simulated_call_arrangement_is_marked_test(tmp_path: Path) -> None:
    with demo_line(tmp_path, simulated="true") as line:
        flow = line.call(JORDAN)
        flow.press(*TO_ARRANGE, INSTALMENTS, AGREE)
        step = flow.press(CARD)
        assert isinstance(step, PayCapture) and step.charge_cents == 7820
        with line.database.session() as db:
            jordan = db.scalars(select(Account).where(
                Account.account_number == "4401005678")).one()
            assert store.active_arrangement(db, jordan.id) is None  # not before <Pay>
    app = make_app(f"sqlite:///{tmp_path / 'sim.sqlite3'}", REPO / "prompts", simulated=True)
    call(app, [*TO_ARRANGE, EXTENSION, AGREE, SILENCE], from_number=JORDAN)
    [arrangement] = arrangements(app)
    assert arrangement.posting_status == PostingStatus.TEST
    assert outbox(app) == [(None, arrangement.id, OutboxStatus.TEST)]
    # Like a test payment, it changes nothing a caller hears: not active, and another call
    # (real or not) may still make one.
    assert arrangement.status == ArrangementStatus.TEST
    result = call(app, [*TO_ARRANGE, EXTENSION, AGREE, SILENCE], from_number=JORDAN)
    assert "due to be disconnected" in result.said()
    assert len(arrangements(app)) == 2


def test_spanish_caller_hears_the_terms_in_spanish(app: Flask) -> None:
    # English on file: the Spanish line at the account confirmation switches.
    result = call(app, [SWITCH_LANGUAGE, YES, "60615", MORE_TIME, EXTENSION], from_number=JORDAN)
    assert said_text(app, "arrange.confirm_extension", "es-US",
                     amount=speech.money(31280, "es-US"),
                     date=speech.date_words(TODAY + timedelta(days=14), "es-US",
                                            TODAY)) in result.said()


@pytest.fixture
def runner(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.setenv("IVR_DATABASE_URL", f"sqlite:///{tmp_path / 'cli.sqlite3'}")
    monkeypatch.setenv("IVR_PIN_KEY", "test-pin-key")
    monkeypatch.setenv("IVR_LOG_LEVEL", "WARNING")
    monkeypatch.delenv("IVR_TWILIO_AUTH_TOKEN", raising=False)
    monkeypatch.delenv("IVR_PROMPTS_DIR", raising=False)
    return CliRunner()


def test_ivr_call_json_runs_an_arrangement_call(runner: CliRunner, tmp_path: Path) -> None:
    assert runner.invoke(main, ["db", "upgrade"]).exit_code == 0
    accounts = tmp_path / "accounts.csv"
    accounts.write_bytes(demo_file(OPEN_TIME.date()))
    assert runner.invoke(main, ["accounts", "import", str(accounts)]).exit_code == 0
    result = runner.invoke(main, ["call", "--from", JORDAN, "--json", "--press",
                                  " ".join([*TO_ARRANGE, INSTALMENTS, AGREE, CARD,
                                            SILENCE])])
    assert result.exit_code == 0, result.output
    transcript = json.loads(result.output)
    said = " ".join(str(e.get("text", "")) for e in transcript["events"])
    assert "Your arrangement confirmation number is A" in said
    assert [e["amount"] for e in transcript["events"] if e["event"] == "pay"] == ["78.20"]


def _walk_to_down_payment(twilio: Twilio, call_sid: str) -> dict[str, str]:
    base = {"CallSid": call_sid, "From": JORDAN, "To": "+15555550100"}
    twiml(twilio.post("/voice/incoming", **base))
    for state, digits in [("confirm_account", YES), ("verify", "60615"),
                          ("main_menu", MORE_TIME), ("arrange_menu", INSTALMENTS),
                          ("arrange_confirm", AGREE), ("method", CARD)]:
        twiml(twilio.post(f"/voice/step/{state}", Digits=digits, **base))
    return {**base, "Result": "success", "PaymentConfirmationCode": "DOWN12345",
            "PaymentCardNumber": "xxxx-xxxx-xxxx-4242", "PaymentCardType": "visa",
            "ExpirationDate": "1230", "PaymentMethod": "credit-card"}


def test_repeated_and_concurrent_down_payment_callbacks_record_one_arrangement(
        app: Flask) -> None:
    twilio = Twilio(app)
    form = _walk_to_down_payment(twilio, new_sid())
    bodies: list[str] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(4)

    def post() -> None:
        try:
            barrier.wait(timeout=10)
            bodies.append(" ".join("".join(
                twiml(twilio.post("/voice/pay/result", **form)).itertext()).split()))
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=post) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not errors, errors
    bodies.append(" ".join("".join(
        twiml(twilio.post("/voice/pay/result", **form)).itertext()).split()))
    [arrangement] = arrangements(app)
    [payment] = payments(app)
    assert arrangement.down_payment_id == payment.id
    code = speech.spell(arrangement.confirmation_code)
    assert len(bodies) == 5 and all(code in b and "D, O, W, N" in b for b in bodies), bodies
    assert sorted(outbox(app), key=str) == sorted(
        [(payment.id, None, "pending"), (None, arrangement.id, "pending")], key=str)


@pytest.mark.slow
def test_the_terms_by_text_message(tmp_path: Path, sqlite_url: str) -> None:
    from tests.servers.twilio_api import StandIn

    sid = "AC" + "1" * 32
    prompts = custom_prompts(tmp_path, {"settings.toml": ("text = false", "text = true")})
    stand_in = StandIn().start()
    try:
        app = make_app(sqlite_url, prompts, twilio_account_sid=sid, sms_from="+15555550100",
                       twilio_api_base_url=stand_in.url)
        text_terms = key("arrange_done", "text")
        result = call(app, [*TO_ARRANGE, INSTALMENTS, AGREE, CARD, text_terms,
                            SILENCE], from_number=JORDAN)
        said = result.said()
        assert said_text(app, "arrange.done_menu_text") in said
        assert said_text(app, "arrange.text_sent", last4="0 1 2 4") in said
        [sent] = stand_in.requests
    finally:
        stand_in.stop()
    assert sent["form"]["To"] == JORDAN
    body = sent["form"]["Body"]
    [arrangement] = arrangements(app)
    assert arrangement.confirmation_code in body and "5678" in body
    assert "$78.20 paid today." in body
    for days in (30, 60, 90):
        assert f"$78.20 due {when(days)}." in body
    assert "4401005678" not in body and "4111111111111111" not in body


def test_plans_keep_to_the_accounts_own_rules(tmp_path: Path) -> None:
    """An account that pays in full only is offered the extension alone (the whole balance,
    later); a plan whose instalments would fall below the account's minimum is not offered."""
    with demo_line(tmp_path) as line:
        for columns in ({"full_payment_required": True}, {"minimum_payment_cents": 10000}):
            with line.database.session() as db:
                jordan = db.scalars(select(Account).where(
                    Account.account_number == "4401005678")).one()
                jordan.full_payment_required = False
                jordan.minimum_payment_cents = None
                for name, value in columns.items():
                    setattr(jordan, name, value)
            flow = line.call(JORDAN)
            flow.press(*TO_ARRANGE)
            assert flow.state == "arrange_menu"
            assert "arrange.menu_extension" in flow.heard(), columns
            assert "arrange.menu_instalments" not in flow.heard(), columns
            flow.press(key("arrange_menu", "instalments"))  # not a choice here
            assert flow.state == "arrange_menu" and "common.no_match" in flow.heard()
        # With neither rule, the plan is offered (78.20 instalments).
        with line.database.session() as db:
            jordan = db.scalars(select(Account).where(
                Account.account_number == "4401005678")).one()
            jordan.minimum_payment_cents = 7820
        flow = line.call(JORDAN)
        flow.press(*TO_ARRANGE)
        assert "arrange.menu_instalments" in flow.heard()
