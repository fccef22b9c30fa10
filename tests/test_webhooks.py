"""Webhook security and robustness: signatures, proxies, repeated callbacks, bad input."""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import Engine, event, select
from twilio.request_validator import RequestValidator

from ivr.models import Account, OutboxEntry, Payment
from ivr.security import SigningKeys, signature_problem
from ivr.web.app import get_database
from tests.conftest import TOKEN, Twilio, make_app, new_sid, said_text, twiml


def valid_signature(auth_token: str, url: str, params: Any, signature: str) -> bool:
    keys = SigningKeys(auth_tokens=(auth_token,) if auth_token else ())
    return not signature_problem(keys, url, params, signature)


TWILIO_ROUTES = ["/voice/incoming", "/voice/step/main_menu", "/voice/pay/result",
                 "/voice/pay/status", "/voice/pay/fallback", "/voice/dial/done", "/voice/status"]


def test_known_answer_signature_vector() -> None:
    # Twilio's published example (webhooks-security docs, twilio-python tests).
    url = "https://example.com/myapp.php?foo=1&bar=2"
    params = {"CallSid": "CA1234567890ABCDE", "Caller": "+14158675310", "Digits": "1234",
              "From": "+14158675310", "To": "+18005551212"}
    expected = "L/OH5YylLD5NRKLltdqwSvS0BnU="
    assert RequestValidator("12345").compute_signature(url, params) == expected
    assert valid_signature("12345", url, params, expected)
    assert not valid_signature("12345", url, {**params, "Digits": "1235"}, expected)
    assert not valid_signature("", url, params, expected)


def test_a_form_with_a_repeated_field_validates_as_twilio_signs_it() -> None:
    # Twilio signs every value of a repeated field, sorted; the check reads them all.
    from werkzeug.datastructures import MultiDict

    url = "https://example.com/voice/incoming"
    form = MultiDict([("CallSid", "CA1"), ("StirVerstat", "B"), ("StirVerstat", "A")])
    expected = RequestValidator("12345").compute_signature(url, form)
    assert valid_signature("12345", url, form, expected)
    assert not valid_signature("12345", url, MultiDict([("CallSid", "CA1"),
                                                       ("StirVerstat", "B")]), expected)


@pytest.mark.parametrize("path", TWILIO_ROUTES)
def test_missing_or_wrong_signature_is_refused(lite_app: Flask, path: str) -> None:
    twilio = Twilio(lite_app)
    form = {"CallSid": new_sid(), "From": "+15555550123", "Digits": "1"}
    assert twilio.post(path, sign=False, **form).status_code == 403
    bad = twilio.post(path, sign=False, headers={"X-Twilio-Signature": "AAAA"}, **form)
    assert bad.status_code == 403


def test_tampered_parameter_is_refused(lite_app: Flask) -> None:
    client = lite_app.test_client()
    form = {"CallSid": new_sid(), "From": "+15555550123"}
    sig = RequestValidator(TOKEN).compute_signature("http://localhost/voice/incoming", form)
    tampered = {**form, "From": "+15555550124"}
    response = client.post("/voice/incoming", data=tampered, headers={"X-Twilio-Signature": sig})
    assert response.status_code == 403
    assert client.post("/voice/incoming", data=form,
                       headers={"X-Twilio-Signature": sig}).status_code == 200


def test_proxied_https_request_validates_with_public_base_url(sqlite_url: str,
                                                              prompts_dir: Any) -> None:
    app = make_app(sqlite_url, prompts_dir, public_base_url="https://pay.example.com")
    form = {"CallSid": new_sid(), "From": "+15555550123", "To": "+15555550100"}
    # Twilio signs the public https URL (no port); the app sees plain http on 127.0.0.1.
    sig = RequestValidator(TOKEN).compute_signature("https://pay.example.com/voice/incoming", form)
    response = app.test_client().post("/voice/incoming", data=form,
                                      headers={"X-Twilio-Signature": sig},
                                      base_url="http://127.0.0.1:8000")
    root = twiml(response)
    gather = root.find("Gather")
    assert gather is not None
    assert gather.get("action") == "https://pay.example.com/voice/step/confirm_account"
    # The same request signed for the internal URL is refused.
    inner = RequestValidator(TOKEN).compute_signature("http://127.0.0.1:8000/voice/incoming", form)
    refused = app.test_client().post("/voice/incoming", data=form,
                                     headers={"X-Twilio-Signature": inner},
                                     base_url="http://127.0.0.1:8000")
    assert refused.status_code == 403


def test_allow_unsigned_is_announced(sqlite_url: str, prompts_dir: Any,
                                     caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("ivr")
    logger.addHandler(caplog.handler)
    try:
        app = make_app(sqlite_url, prompts_dir, allow_unsigned=True, twilio_auth_token="")
    finally:
        logger.removeHandler(caplog.handler)
    assert any("WITHOUT Twilio signatures" in r.getMessage() for r in caplog.records)
    response = app.test_client().post("/voice/incoming", data={"CallSid": new_sid()})
    assert response.status_code == 200


def walk_to_pay(twilio: Twilio, call_sid: str, method: str = "1") -> Any:
    """Drive a call by hand up to the <Pay> verb; return that TwiML."""
    base = {"CallSid": call_sid, "From": "+15555550123", "To": "+15555550100"}
    twiml(twilio.post("/voice/incoming", **base))
    # English on file: no language menu; 1 at the main menu pays the balance; the method
    # menu says the amount and account, so card goes straight to <Pay>.
    for state, digits in [("confirm_account", "1"), ("verify", "60614"), ("main_menu", "1")]:
        twiml(twilio.post(f"/voice/step/{state}", Digits=digits, **base))
    if method == "2":
        twiml(twilio.post("/voice/step/method", Digits=method, **base))
        twiml(twilio.post("/voice/step/bank_type", Digits="1", **base))
        return twiml(twilio.post("/voice/step/ach_authorize", Digits="1", **base))
    return twiml(twilio.post("/voice/step/method", Digits=method, **base))


def success_form(call_sid: str, code: str = "CONF12345X") -> dict[str, str]:
    return {"CallSid": call_sid, "From": "+15555550123", "Result": "success",
            "PaymentConfirmationCode": code, "PaymentCardNumber": "xxxx-xxxx-xxxx-4242",
            "PaymentCardType": "visa", "ExpirationDate": "1230", "PaymentMethod": "credit-card",
            "PaymentCardPostalCode": "94109"}


@pytest.mark.slow
def test_pay_twiml_is_built_from_server_data(app: Flask) -> None:
    twilio = Twilio(app)
    root = walk_to_pay(twilio, new_sid())
    pay = root.find("Pay")
    assert pay is not None
    assert pay.get("chargeAmount") == "123.45"
    assert pay.get("paymentMethod") == "credit-card"
    assert pay.get("paymentConnector") == "Default"
    assert pay.get("action") == "/voice/pay/result"
    assert pay.get("statusCallback") == "/voice/pay/status"
    assert pay.get("language") == "en-US"
    assert "4401001234" in (pay.get("description") or "")
    assert pay.get("validCardTypes") == "visa mastercard amex discover"
    fors = {p.get("for") for p in pay.findall("Prompt")}
    assert {"payment-card-number", "expiration-date", "security-code", "postal-code"} <= fors
    card_prompt = next(p for p in pay.findall("Prompt") if p.get("for") == "payment-card-number")
    say = card_prompt.find("Say")
    assert say is not None and say.text == said_text(app, "pay.card_number")


def test_pay_connector_from_environment(sqlite_url: str, prompts_dir: Any) -> None:
    app = make_app(sqlite_url, prompts_dir, pay_connector="Stripe_Prod")
    pay = walk_to_pay(Twilio(app), new_sid()).find("Pay")
    assert pay is not None and pay.get("paymentConnector") == "Stripe_Prod"


def test_bank_pay_twiml(app: Flask) -> None:
    pay = walk_to_pay(Twilio(app), new_sid(), method="2").find("Pay")
    assert pay is not None
    assert pay.get("paymentMethod") == "ach-debit"
    assert pay.get("bankAccountType") == "consumer-checking"
    fors = [p.get("for") for p in pay.findall("Prompt")]
    assert "bank-routing-number" in fors and "bank-account-number" in fors
    matching = [p for p in pay.findall("Prompt") if p.get("requireMatchingInputs") == "true"]
    assert matching, "the bank account number is asked twice"


def test_repeated_pay_callback_records_one_payment(app: Flask) -> None:
    twilio = Twilio(app)
    call_sid = new_sid()
    walk_to_pay(twilio, call_sid)
    first = twiml(twilio.post("/voice/pay/result", **success_form(call_sid)))
    second = twiml(twilio.post("/voice/pay/result", **success_form(call_sid)))
    texts = [" ".join("".join(s.itertext()).split()) for s in (first, second)]
    assert "C, O, N, F, 1, 2, 3, 4, 5, X" in texts[0]
    assert texts[0] == texts[1]
    with get_database(app).session() as db:
        assert len(db.scalars(select(Payment)).all()) == 1
        assert len(db.scalars(select(OutboxEntry)).all()) == 1
        acct = db.scalar(select(Account).where(Account.account_number == "4401001234"))
        assert acct is not None and acct.balance_due_cents == 0  # applied once, not twice


def test_concurrent_pay_callbacks_record_one_payment(app: Flask) -> None:
    twilio = Twilio(app)
    call_sid = new_sid()
    walk_to_pay(twilio, call_sid)
    barrier = threading.Barrier(6)
    bodies: list[str] = []
    errors: list[BaseException] = []

    def post() -> None:
        try:
            barrier.wait(timeout=10)
            response = twilio.post("/voice/pay/result", **success_form(call_sid))
            bodies.append(" ".join("".join(twiml(response).itertext()).split()))
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=post) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not errors, errors
    assert len(bodies) == 6
    assert all("C, O, N, F, 1, 2, 3, 4, 5, X" in b for b in bodies)
    with get_database(app).session() as db:
        assert len(db.scalars(select(Payment)).all()) == 1
        assert len(db.scalars(select(OutboxEntry)).all()) == 1
        acct = db.scalar(select(Account).where(Account.account_number == "4401001234"))
        assert acct is not None and acct.balance_due_cents == 0


def test_success_without_confirmation_code_is_not_recorded(app: Flask) -> None:
    twilio = Twilio(app)
    call_sid = new_sid()
    walk_to_pay(twilio, call_sid)
    form = success_form(call_sid)
    form["PaymentConfirmationCode"] = ""
    root = twiml(twilio.post("/voice/pay/result", **form))
    assert said_text(app, "pay.result.internal_error") in "".join(root.itertext())
    with get_database(app).session() as db:
        assert db.scalars(select(Payment)).all() == []


def test_only_masked_card_data_is_stored(app: Flask) -> None:
    twilio = Twilio(app)
    call_sid = new_sid()
    walk_to_pay(twilio, call_sid)
    form = success_form(call_sid)
    form["PaymentCardNumber"] = "4242424242424242"  # even if a connector misbehaved
    twiml(twilio.post("/voice/pay/result", **form))
    with get_database(app).session() as db:
        [payment] = db.scalars(select(Payment)).all()
        stored = " ".join(str(getattr(payment, c.key)) for c in Payment.__table__.columns)
    assert payment.card_last4 == "4242"
    assert "424242424242" not in stored


def test_status_callback_for_unknown_call_is_harmless(lite_app: Flask) -> None:
    response = Twilio(lite_app).post("/voice/status", CallSid=new_sid(), CallStatus="completed")
    twiml(response)


@pytest.mark.slow
def test_missing_call_sid_gets_an_apology_not_an_error(lite_app: Flask) -> None:
    root = twiml(Twilio(lite_app).post("/voice/incoming", From="+15555550123"))
    assert root.find("Hangup") is not None
    assert said_text(lite_app, "common.apology") in "".join(root.itertext())


def test_internal_failure_answers_apology_twiml(lite_app: Flask) -> None:
    twilio = Twilio(lite_app)
    call_sid = new_sid()
    twiml(twilio.post("/voice/incoming", CallSid=call_sid, From="+15555550123"))
    for state, digits in [("confirm_account", "1"), ("verify", "60614"), ("main_menu", "1")]:
        twiml(twilio.post(f"/voice/step/{state}", CallSid=call_sid, Digits=digits))
    with get_database(lite_app).session() as db:
        # The account vanishes from the cache mid-call: the flow cannot go on.
        db.delete(db.scalar(select(Account).where(Account.account_number == "4401001234")))
    root = twiml(twilio.post("/voice/step/method", CallSid=call_sid, Digits="1"))
    assert said_text(lite_app, "common.apology") in "".join(root.itertext())


def test_logs_mask_the_caller(lite_app: Flask, caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("ivr")
    logger.addHandler(caplog.handler)
    try:
        twilio = Twilio(lite_app)
        walk_to_pay(twilio, new_sid())
    finally:
        logger.removeHandler(caplog.handler)
    lines = [str(getattr(r, "fields", "")) + r.getMessage() for r in caplog.records]
    assert lines
    text = "\n".join(lines)
    assert "+15555550123" not in text and "+1******0123" in text
    assert "60614" not in text  # the ZIP typed in the verify state is never logged
    assert "4401001234" not in text


@pytest.mark.slow
def test_dropped_connection_is_retried_not_pinged(postgres_url: str, prompts_dir: Any,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    """The served pool does not ping on checkout; a webhook whose pooled connection the server
    dropped (a restart, a proxy's idle timeout) is answered on a fresh one all the same."""
    import psycopg

    app = make_app(postgres_url, prompts_dir, serve_threads=2)
    database = get_database(app)
    assert database.engine.pool._pre_ping is False
    twilio = Twilio(app)
    call_sid = new_sid()
    first = twiml(twilio.post("/voice/incoming", CallSid=call_sid, From="+15555550123"))
    assert first.find("Gather") is not None
    admin = postgres_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(admin, autocommit=True) as killer:  # every pooled connection dies
        killed = killer.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()").fetchone()
    assert killed is not None and killed[0] >= 1
    logger = logging.getLogger("ivr")
    logger.addHandler(caplog.handler)
    try:
        second = twiml(twilio.post("/voice/step/confirm_account", CallSid=call_sid,
                                   From="+15555550123", Digits="1"))
    finally:
        logger.removeHandler(caplog.handler)
    assert "connection was dead" in caplog.text
    said = " ".join("".join(second.itertext()).split())
    assert "sorry" not in said.lower(), said
    assert second.find("Gather") is not None


@contextmanager
def sent_statements(engine: Engine) -> Iterator[list[str]]:
    """The SQL ``engine`` sends meanwhile, each on one line."""
    statements: list[str] = []

    def capture(_conn: Any, _cursor: Any, statement: str, *_rest: Any) -> None:
        statements.append(" ".join(statement.split()))

    event.listen(engine, "before_cursor_execute", capture)
    try:
        yield statements
    finally:
        event.remove(engine, "before_cursor_execute", capture)


def test_one_statement_loads_the_call_and_its_account(app: Flask) -> None:
    """A webhook of an identified call reads the call (locked, on PostgreSQL) and its account
    in one statement, not two; the lock is the call's row only, never the account's."""
    twilio = Twilio(app)
    call_sid = new_sid()
    twilio.post("/voice/incoming", CallSid=call_sid, From="+15555550123")  # identified
    engine = get_database(app).engine
    with sent_statements(engine) as statements:
        answer = twiml(twilio.post("/voice/step/confirm_account", CallSid=call_sid,
                                   From="+15555550123", Digits="1"))
    gather = answer.find("Gather")
    assert gather is not None and gather.get("action", "").endswith("/voice/step/verify")
    loads = [s for s in statements if "FROM call_sessions" in s]
    assert loads and "LEFT OUTER JOIN accounts" in loads[0], statements
    if engine.dialect.name == "postgresql":
        assert loads[0].endswith("FOR UPDATE OF call_sessions"), loads[0]
    assert not [s for s in statements if re.search(r"FROM accounts WHERE accounts\.id =", s)]


def test_a_new_call_is_written_whole_with_its_first_steps(app: Flask) -> None:
    """The first webhook writes the new call's row, every column's default included, and the
    steps it took; on PostgreSQL in one statement (the steps' insert as a WITH)."""
    from ivr.models import CallEvent, CallSession

    twilio = Twilio(app)
    call_sid = new_sid()
    engine = get_database(app).engine
    with sent_statements(engine) as statements:
        answer = twiml(twilio.post("/voice/incoming", CallSid=call_sid, From="+15555550123"))
    gather = answer.find("Gather")
    assert gather is not None and gather.get("action", "").endswith("/voice/step/confirm_account")
    with get_database(app).session() as db:
        row = db.get(CallSession, call_sid)
        steps = db.scalars(select(CallEvent.state).where(CallEvent.call_sid == call_sid)).all()
    assert row is not None and row.state == "confirm_account" and row.account_id is not None
    assert (row.tries, row.silences, row.verify_failures, row.fee_cents, row.pay_tries) == (
        0, 0, 0, 0, 0)
    assert not (row.verified or row.extended_time or row.text_receipt_sent)
    assert row.to_number == "" and row.started_at <= row.updated_at and row.ended_at is None
    assert steps, "the call's first steps are recorded"
    writes = [s for s in statements if s.split()[0] in ("INSERT", "UPDATE", "WITH")]
    if engine.dialect.name == "postgresql":
        assert len(writes) == 1 and writes[0].startswith("WITH steps AS"), writes
        assert "INSERT INTO call_sessions" in writes[0]
