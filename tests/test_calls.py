"""Whole calls through the simulator, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from flask import Flask
from sqlalchemy import func, select

from ivr.models import Account, AchAuthorization, CallEvent, CallSession, OutboxEntry, Payment
from ivr.prompts import speech
from ivr.web.app import get_database
from tests.conftest import (
    CLOSED_TIME,
    OPEN_TIME,
    call,
    custom_prompts,
    make_app,
    said_text,
    set_clock,
)
from tests.flow import (
    AGENT,
    AUTHORIZE,
    AVOID_DISCONNECTION,
    BANK,
    CARD,
    CHECKING,
    DECLINE_FEE,
    EN,
    PAY,
    RECENT,
    REFUSE,
    REPEAT,
    SAVINGS,
    SILENCE,
    SUMMARY,
    YES,
)

CURRENT = "4401001234"  # caller ID +15555550123, ZIP 60614, owes 123.45
PAST_DUE = "4401005678"  # ZIP 60615, disconnection pending, 312.80 due, 187.50 to avoid it
CREDIT = "4401009012"  # ZIP 60616, 25.00 credit
SPANISH = "4401003456"  # caller ID +15555550125, ZIP 60617, owes 76.20
UNKNOWN_CALLER = "+15555559999"
ZIP = "60614"  # CURRENT's service ZIP
PAY_IN_FULL_BY_CARD = [YES, ZIP, PAY, CARD]


def account(app: Flask, number: str) -> Account:
    with get_database(app).session() as db:
        found = db.scalar(select(Account).where(Account.account_number == number))
        assert found is not None
        return found


def payments(app: Flask) -> list[Payment]:
    with get_database(app).session() as db:
        return list(db.scalars(select(Payment).order_by(Payment.id)))


def session_of(app: Flask, call_sid: str) -> CallSession:
    with get_database(app).session() as db:
        found = db.get(CallSession, call_sid)
        assert found is not None
        return found


def test_caller_id_match_pays_full_balance_by_card(app: Flask) -> None:
    result = call(app, PAY_IN_FULL_BY_CARD)
    text = result.said()
    assert said_text(app, "identify.found", last4="1 2 3 4") in text
    assert "one hundred twenty-three dollars and forty-five cents" in text
    [payment] = payments(app)
    assert (payment.amount_cents, payment.fee_cents, payment.method) == (12345, 0, "card")
    assert payment.card_last4 == "1111" and payment.card_brand == "visa"
    assert payment.account_number == CURRENT
    # The confirmation code is read back one character at a time.
    assert speech.spell(payment.confirmation_code) in text
    pay_events = [e for e in result.events if e["event"] == "pay"]
    assert pay_events[0]["amount"] == "123.45"
    # Cache updated at once; outbox row waits for the posting worker.
    acct = account(app, CURRENT)
    assert acct.balance_due_cents == 0
    assert acct.last_payment_cents == 12345
    with get_database(app).session() as db:
        outbox = db.scalars(select(OutboxEntry)).all()
        assert [(o.payment_id, o.status) for o in outbox] == [(payment.id, "pending")]
    session = session_of(app, result.call_sid)
    assert session.outcome == "paid" and session.ended_at is not None


def test_account_entry_and_other_amount_with_star(app: Flask) -> None:
    # Unknown caller: language, account number, ZIP, pay, other amount 50*00, confirm, card.
    result = call(app, f"1 {CURRENT}# 60614 5 50*00# 1 1", from_number=UNKNOWN_CALLER)
    text = result.said()
    assert said_text(app, "account.enter") in text
    assert said_text(app, "amount.confirm", amount="fifty dollars") in text
    [payment] = payments(app)
    assert payment.amount_cents == 5000
    assert account(app, CURRENT).balance_due_cents == 12345 - 5000


def test_other_amount_read_back_can_be_reentered(app: Flask) -> None:
    result = call(app, f"1 {CURRENT}# 60614 5 2000# 2 3 25*5# 1 1", from_number=UNKNOWN_CALLER)
    assert said_text(app, "amount.confirm", amount="twenty dollars") in result.said()
    assert said_text(app, "amount.confirm", amount="twenty-five dollars and fifty cents") in \
        result.said()
    assert [p.amount_cents for p in payments(app)] == [2550]


def test_amount_limits_are_enforced(app: Flask) -> None:
    result = call(app, "1 60614 5 50# 999999# 12*00# 1 1")
    text = result.said()
    assert said_text(app, "amount.below_minimum", minimum="one dollar") in text
    assert said_text(app, "amount.above_maximum", maximum="five thousand dollars") in text
    assert [p.amount_cents for p in payments(app)] == [1200]


def test_unknown_account_three_times_offers_representative(app: Flask) -> None:
    result = call(app, "1 111# 222# 333#", from_number=UNKNOWN_CALLER)
    assert result.said().count(said_text(app, "account.not_found")) == 2
    assert [e["number"] for e in result.events if e["event"] == "dial"] == ["+15555550100"]


def test_wrong_zip_three_times_after_hours_says_goodbye(app: Flask) -> None:
    set_clock(app, CLOSED_TIME)
    result = call(app, "1 11111 22222 33333")
    text = result.said()
    assert text.count(said_text(app, "verify.mismatch")) == 2
    assert said_text(app, "verify.failed_final") in text
    assert not [e for e in result.events if e["event"] == "dial"]
    assert said_text(app, "goodbye.help_later") in text
    assert result.ended_by == "line"
    assert payments(app) == []


def test_wrong_zip_three_times_in_hours_transfers(app: Flask) -> None:
    result = call(app, "1 11111 22222 33333")
    assert said_text(app, "verify.failed_final") in result.said()
    assert [e["number"] for e in result.events if e["event"] == "dial"] == ["+15555550100"]
    assert session_of(app, result.call_sid).outcome == "transferred"


def test_lockout_across_calls(app: Flask) -> None:
    set_clock(app, CLOSED_TIME)
    call(app, "1 11111 22222 33333")  # three failures
    call(app, "1 44444 55555")  # five within 30 minutes: locked
    third = call(app, "1 60614")  # even the right ZIP is not asked for now
    assert said_text(app, "verify.locked") in third.said()
    assert said_text(app, "verify.zip") not in third.said()
    assert "dollars" not in third.said()
    # 30 minutes later the lock has expired.
    set_clock(app, CLOSED_TIME + timedelta(minutes=31))
    later = call(app, "1 60614 1 1")
    assert said_text(app, "verify.locked") not in later.said()
    assert len(payments(app)) == 1


def test_nothing_about_the_account_is_said_before_verification(app: Flask) -> None:
    result = call(app, "1 11111 60614")
    acct = account(app, CURRENT)
    events = result.events
    first_summary = next(i for i, e in enumerate(events)
                         if e["event"] == "say" and "one hundred twenty-three" in str(e["text"]))
    before = " ".join(str(e.get("text", "")) for e in events[:first_summary])
    forbidden = ["dollar", "cents", "balance", acct.customer_name, "Alex", "disconnect",
                 "payment of", "kilowatt", speech.date_words(acct.due_date, "en-US")]
    for word in forbidden:
        assert word.lower() not in before.lower(), word
    # The only thing said about the account is the caller-ID match's last four digits.
    assert "1 2 3 4" in before


def test_spanish_call(app: Flask) -> None:
    result = call(app, [YES, "60617", PAY, CARD],
                  from_number="+15555550125")
    text = result.said()
    assert said_text(app, "identify.found", "es-US", last4="3 4 5 6") in text
    assert "setenta y seis dólares con veinte centavos" in text
    langs = {e.get("language") for e in result.events if e["event"] == "say"}
    assert "es-US" in langs
    [payment] = payments(app)
    assert payment.language == "es-US" and payment.amount_cents == 7620
    pays = [e for e in result.events if e["event"] == "pay"]
    assert pays and pays[0]["result"] == "success"


def test_bank_debit_with_tel_authorization(app: Flask) -> None:
    result = call(app, [YES, ZIP, PAY, BANK, CHECKING, AUTHORIZE])
    text = result.said()
    assert "Alex Morgan" in text  # NACHA TEL: the consumer's name is part of the script
    [payment] = payments(app)
    assert payment.method == "ach" and payment.bank_last == "89"
    assert payment.card_last4 is None and payment.bank_account_type == "consumer-checking"
    with get_database(app).session() as db:
        [auth] = db.scalars(select(AchAuthorization)).all()
        assert auth.payment_id == payment.id
        assert auth.amount_cents == 12345 and auth.call_sid == result.call_sid
        assert auth.script_version
        assert "one hundred twenty-three dollars and forty-five cents" in auth.script_text
        assert "123456789" not in auth.script_text
    pay = next(e for e in result.events if e["event"] == "pay")
    assert pay["method"] == "ach-debit"


def test_bank_debit_declined_authorization_charges_nothing(app: Flask) -> None:
    result = call(app, [YES, ZIP, PAY, BANK, SAVINGS, REFUSE])
    assert said_text(app, "pay.cancelled") in result.said()
    assert not [e for e in result.events if e["event"] == "pay"]
    assert payments(app) == []


def test_convenience_fee_disclosed_and_charged(app: Flask, tmp_path, prompts_dir) -> None:
    import shutil

    from tests.conftest import make_app

    custom = tmp_path / "prompts"
    shutil.copytree(prompts_dir, custom)
    settings = custom / "settings.toml"
    settings.write_text(settings.read_text().replace('card = "0.00"', 'card = "2.95"'))
    fee_app = make_app(get_database(app).url, custom)
    result = call(fee_app, "1 60614 1 1 1 1")
    text = result.said()
    assert "two dollars and ninety-five cents" in text
    pay = next(e for e in result.events if e["event"] == "pay")
    assert pay["amount"] == "126.40"
    [payment] = payments(fee_app)
    assert (payment.amount_cents, payment.fee_cents) == (12345, 295)
    # The fee is not taken off the biller's balance.
    assert account(fee_app, CURRENT).balance_due_cents == 0


def test_fee_refused_charges_nothing(app: Flask, tmp_path, prompts_dir) -> None:
    import shutil

    from tests.conftest import make_app

    custom = tmp_path / "prompts"
    shutil.copytree(prompts_dir, custom)
    settings = custom / "settings.toml"
    settings.write_text(settings.read_text().replace('card = "0.00"', 'card = "2.95"'))
    fee_app = make_app(get_database(app).url, custom)
    result = call(fee_app, [YES, ZIP, PAY, CARD, DECLINE_FEE])
    assert said_text(fee_app, "fee.declined") in result.said()
    assert payments(fee_app) == []


def test_declined_card_then_retry_succeeds(app: Flask) -> None:
    result = call(app, "1 60614 1 1 1 1 1",
                  cards=["4000000000000002", "4111111111111111"])
    text = result.said()
    assert said_text(app, "pay.result.declined") in text
    assert [e["result"] for e in result.events if e["event"] == "pay"] == [
        "payment-connector-error", "success"]
    assert len(payments(app)) == 1


def test_each_failed_result_is_explained(app: Flask) -> None:
    expectations = {
        "4000000000000002": "pay.result.declined",
        "4111111111111112": "pay.result.too_many_failed_attempts",
        "*": "pay.result.interrupted",
        "internal-error": "pay.result.internal_error",
        "validation-error": "pay.result.validation_error",
    }
    for day, (card, prompt_id) in enumerate(expectations.items()):
        # A day apart: three declines a day on one account is the card-testing limit.
        set_clock(app, OPEN_TIME + timedelta(days=day))
        result = call(app, "1 60614 1 1 2", cards=[card])
        assert said_text(app, prompt_id) in result.said(), card
        assert said_text(app, "pay.retry_menu") in result.said()
    assert payments(app) == []


def test_three_failed_payments_end_the_attempts(database_url: str, tmp_path: Path) -> None:
    # The per-call limit alone: the card-testing limits across calls are set out of reach.
    prompts = custom_prompts(tmp_path, {"settings.toml": (
        "pay_declines_per_account = 3\npay_declines_per_caller = 3",
        "pay_declines_per_account = 9\npay_declines_per_caller = 9")})
    app = make_app(database_url, prompts)
    set_clock(app, CLOSED_TIME)
    result = call(app, "1 60614 1 1" + " 1 1 1" * 2, cards=["4000000000000002"])
    assert said_text(app, "pay.tries_exhausted") in result.said()
    assert len([e for e in result.events if e["event"] == "pay"]) == 3
    assert payments(app) == []


def test_hang_up_during_pay_is_recorded_only(app: Flask) -> None:
    result = call(app, "1 60614 1 1", cards=["hangup"])
    assert payments(app) == []
    session = session_of(app, result.call_sid)
    assert session.outcome == "hung_up_in_pay" and session.ended_at is not None
    with get_database(app).session() as db:
        details = db.scalars(select(CallEvent.detail).where(
            CallEvent.call_sid == result.call_sid, CallEvent.event == "pay_result")).all()
        assert details == ["caller-hung-up"]


def test_hang_up_mid_call_closes_session(app: Flask) -> None:
    result = call(app, "1 hangup")
    session = session_of(app, result.call_sid)
    assert session.state == "verify"
    assert session.outcome == "hung_up" and session.call_status == "completed"
    assert session.ended_at is not None


def test_representative_in_business_hours(app: Flask) -> None:
    result = call(app, [YES, ZIP, AGENT])
    assert said_text(app, "agent.connecting") in result.said()
    assert [e["number"] for e in result.events if e["event"] == "dial"] == ["+15555550100"]


def test_representative_after_hours_says_when_office_opens(app: Flask) -> None:
    set_clock(app, CLOSED_TIME)  # Saturday
    result = call(app, "1 60614 0 1 1")
    text = result.said()
    assert said_text(app, "agent.closed_opens", day="Monday", time="8 AM") in text
    assert not [e for e in result.events if e["event"] == "dial"]
    assert len(payments(app)) == 1  # back at the menu, the caller went on to pay


def test_zero_balance_is_said_plainly(app: Flask) -> None:
    call(app, "1 60614 1 1")  # pays everything
    # A day later: within 24 hours the caller would first hear "you already paid today".
    set_clock(app, OPEN_TIME + timedelta(hours=25))
    result = call(app, "1 60614 1 1500# 1 1")
    text = result.said()
    assert said_text(app, "summary.zero_balance") in text
    assert said_text(app, "amount.enter") in text  # nothing due: straight to amount entry
    assert account(app, CURRENT).balance_due_cents == -1500


def test_credit_balance(app: Flask) -> None:
    result = call(app, f"1 {CREDIT}# 60616 -", from_number=UNKNOWN_CALLER)
    assert said_text(app, "summary.credit_balance", amount="twenty-five dollars") in result.said()


def test_disconnection_pending(app: Flask) -> None:
    acct = account(app, PAST_DUE)
    assert acct.disconnect_date is not None
    result = call(app, [EN, f"{PAST_DUE}#", "60615", PAY, AVOID_DISCONNECTION, CARD],
                  from_number=UNKNOWN_CALLER)
    text = result.said()
    assert said_text(
        app, "summary.disconnect_pending",
        date=speech.date_words(acct.disconnect_date, "en-US", OPEN_TIME.date()),
        amount="one hundred eighty-seven dollars and fifty cents") in text
    assert said_text(app, "amount.menu_disconnect",
                     amount="one hundred eighty-seven dollars and fifty cents") in text
    [payment] = payments(app)
    assert payment.amount_cents == 18750
    after = account(app, PAST_DUE)
    assert after.status == "active" and after.past_due_cents == 0
    assert after.balance_due_cents == 31280 - 18750


def test_recent_payments_and_summary_again(app: Flask) -> None:
    call(app, "1 60614 5 2000# 1 1")
    result = call(app, [YES, ZIP, RECENT, SUMMARY, SILENCE])
    text = result.said()
    assert said_text(app, "recent.intro") in text
    assert "twenty dollars" in text
    assert text.count("one hundred three dollars and forty-five cents") >= 2


def test_repeat_key_repeats_the_question(app: Flask) -> None:
    result = call(app, [YES, ZIP, REPEAT, "hangup"])
    menu = said_text(app, "menu.pay_full")
    assert result.said().count(menu) == 2


def test_silence_reprompts_then_offers_more_time(app: Flask) -> None:
    result = call(app, "1 - - # -")
    text = result.said()
    assert said_text(app, "common.no_input") in text
    assert said_text(app, "common.more_time") in text
    with get_database(app).session() as db:
        session = db.get(CallSession, result.call_sid)
        assert session is not None and session.extended_time
    gathers = [e for e in result.events if e["event"] in {"silence", "press"}]
    assert len(gathers) == 5


def test_silence_at_language_menu_means_english(app: Flask) -> None:
    # A caller the line cannot place hears the language menu; silence there is English.
    result = call(app, f"- {CURRENT}# 60614 -", from_number=UNKNOWN_CALLER)
    assert said_text(app, "language.option", "es-US", key="2") in result.said()
    assert said_text(app, "account.enter") in result.said()
    assert session_of(app, result.call_sid).language == "en-US"


def test_invalid_choices_escalate_after_three_tries(app: Flask) -> None:
    set_clock(app, CLOSED_TIME)
    result = call(app, "1 60614 7 8 7")
    assert result.said().count(said_text(app, "common.no_match")) == 2
    assert said_text(app, "common.too_many_tries") in result.said()
    assert result.ended_by == "line"


def test_every_call_leaves_a_path_without_digits(app: Flask) -> None:
    result = call(app, "1 60614 1 1")
    with get_database(app).session() as db:
        rows = db.execute(select(CallEvent.state, CallEvent.event, CallEvent.detail).where(
            CallEvent.call_sid == result.call_sid).order_by(CallEvent.id)).all()
        count = db.scalar(select(func.count()).select_from(CallEvent))
    assert count and len(rows) > 10
    assert ("verify", "enter", "") in [tuple(r) for r in rows]
    assert all("60614" not in r.detail and "4111" not in r.detail for r in rows)
