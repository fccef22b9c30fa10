"""The offline Twilio simulator, driven against a small signature-checking Flask app."""

from __future__ import annotations

import json
import re
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import MappingProxyType

import pytest
from flask import Flask, Response, request
from twilio.request_validator import RequestValidator

from ivr.simulator import (
    Caller,
    CallResult,
    FlaskTransport,
    HttpTransport,
    InteractiveCaller,
    ScriptedCaller,
    format_event,
    run_call,
)
from tests.servers.threaded import serving

TOKEN = "fedcba9876543210fedcba9876543210"
VISA = "4111111111111111"
FULL_NUMBERS = [VISA, "5555555555554444", "378282246310005", "6011111111111117",
                "4000000000000002", "4111111111111112", "3065930009020004", "123456789"]

Doc = str | tuple[int, str] | Callable[[dict[str, str]], str]


@dataclass
class Hit:
    url: str
    path: str
    form: dict[str, str]


class TwilioApp:
    """A canned-TwiML app that checks signatures like the real one and logs every webhook."""

    def __init__(self, docs: dict[str, Doc]) -> None:
        self.docs: dict[str, Doc] = {"/voice/status": "", "/voice/pay-status": "", **docs}
        self.hits: list[Hit] = []
        self.rejected = 0
        self.app = Flask(__name__)
        self.app.add_url_rule("/<path:path>", "hook", self.hook, methods=["POST"])

    def hook(self, path: str) -> Response:
        signature = request.headers.get("X-Twilio-Signature", "")
        if not RequestValidator(TOKEN).validate(request.url, request.form, signature):
            self.rejected += 1
            return Response("bad signature", status=403)
        form = request.form.to_dict()
        self.hits.append(Hit(request.url, "/" + path, form))
        doc = self.docs.get("/" + path)
        if doc is None:
            return Response("not found", status=404)
        if callable(doc):
            doc = doc(form)
        status, body = doc if isinstance(doc, tuple) else (200, doc)
        return Response(body, status=status, mimetype="text/xml")

    def forms(self, path: str) -> list[dict[str, str]]:
        return [hit.form for hit in self.hits if hit.path == path]

    def paths(self) -> list[str]:
        return [hit.path for hit in self.hits]


def twiml(body: str) -> str:
    return f'<?xml version="1.0" encoding="UTF-8"?><Response>{body}</Response>'


PAY_PROMPTS = """
<Prompt for="payment-card-number"><Say>Please enter your card number, then press pound.</Say>
</Prompt>
<Prompt for="payment-card-number" errorType="invalid-card-number" attempt="2 3">
  <Say>That card number was not valid.</Say></Prompt>
<Prompt for="expiration-date"><Say>Enter the expiration date.</Say></Prompt>
<Prompt for="security-code" cardType="amex"><Say>Enter the four digit code.</Say></Prompt>
<Prompt for="security-code" cardType="visa mastercard"><Say>Enter the three digit code.</Say>
</Prompt>
<Prompt for="postal-code"><Say>Enter the billing ZIP code.</Say></Prompt>
<Prompt for="payment-processing"><Say>Please wait while we process your payment.</Say></Prompt>
<Parameter name="account" value="1001"/>
"""


def menu(form: dict[str, str], zip_url: str) -> str:
    if form["Digits"] == "1":
        return twiml(f'<Gather action="{zip_url}" timeout="7" actionOnEmptyResult="true">'
                     "<Say>Enter your ZIP code, then press pound.</Say></Gather>")
    return twiml('<Say>Sorry.</Say><Redirect method="POST">/voice/incoming</Redirect>')


def mini_flow(zip_url: str, pay_attrs: str = 'chargeAmount="12.34"') -> dict[str, Doc]:
    """gather -> gather (absolute action) -> redirect -> pay -> hangup."""
    return {
        "/voice/incoming": twiml(
            '<Say voice="Polly.Joanna-Neural" language="en-US">Welcome to <break time="1s"/>\n'
            '   <say-as interpret-as="characters">ABC</say-as>   Water.</Say>'
            "<Play>https://cdn.example.com/chime.mp3</Play>"
            '<Gather action="menu" numDigits="1" timeout="7" actionOnEmptyResult="true">'
            '<Say language="en-US">Press 1 to pay.</Say></Gather>'),
        "/voice/menu": lambda form: menu(form, zip_url),
        "/voice/zip": twiml('<Redirect method="POST">pay?amount=12.34</Redirect>'),
        "/voice/pay": twiml(
            f'<Pay {pay_attrs} action="/voice/paid" statusCallback="pay-status" '
            f'validCardTypes="visa mastercard amex" language="en-US">{PAY_PROMPTS}</Pay>'),
        "/voice/paid": lambda form: twiml(f"<Say>Result {form['Result']}.</Say><Hangup/>"),
    }


def call(docs: dict[str, Doc], caller: Caller,
         max_requests: int = 300) -> tuple[CallResult, TwilioApp]:
    app = TwilioApp(docs)
    result = run_call(FlaskTransport(app.app, TOKEN), caller, max_requests=max_requests)
    return result, app


def assert_no_full_numbers(result: CallResult, app: TwilioApp) -> None:
    text = result.to_json() + json.dumps([hit.form for hit in app.hits])
    for number in FULL_NUMBERS:
        assert number not in text


def assert_status_once_at_end(app: TwilioApp) -> dict[str, str]:
    assert app.paths().count("/voice/status") == 1
    assert app.paths()[-1] == "/voice/status"
    status = app.forms("/voice/status")[0]
    assert status["CallStatus"] == "completed"
    assert int(status["CallDuration"]) > 0
    return status


def test_whole_call_through_flask() -> None:
    result, app = call(mini_flow("https://ivr.example.com/voice/zip?step=2"),
                       ScriptedCaller(["1", "60614#"]))

    assert result.ended_by == "line"
    assert app.rejected == 0
    assert app.paths() == ["/voice/incoming", "/voice/menu", "/voice/zip", "/voice/pay",
                           "/voice/pay-status", "/voice/paid", "/voice/status"]
    urls = {hit.path: hit.url for hit in app.hits}
    assert urls["/voice/incoming"] == "http://localhost/voice/incoming"
    assert urls["/voice/menu"] == "http://localhost/voice/menu"  # relative action
    assert urls["/voice/zip"] == "https://ivr.example.com/voice/zip?step=2"  # absolute
    assert urls["/voice/pay"] == "https://ivr.example.com/voice/pay?amount=12.34"
    assert urls["/voice/pay-status"] == "https://ivr.example.com/voice/pay-status"
    assert urls["/voice/paid"] == "https://ivr.example.com/voice/paid"
    assert urls["/voice/status"] == "http://localhost/voice/status"

    first = app.forms("/voice/incoming")[0]
    assert re.fullmatch(r"CA[0-9a-f]{32}", first["CallSid"])
    assert re.fullmatch(r"AC[0-9a-f]{32}", first["AccountSid"])
    assert first["CallSid"] == result.call_sid
    assert {k: first[k] for k in ("From", "To", "Caller", "Called", "CallStatus", "Direction",
                                  "ApiVersion")} == {
        "From": "+15555550123", "To": "+15555550100", "Caller": "+15555550123",
        "Called": "+15555550100", "CallStatus": "in-progress", "Direction": "inbound",
        "ApiVersion": "2010-04-01"}
    assert "Digits" not in first
    assert {hit.form["CallSid"] for hit in app.hits} == {result.call_sid}

    assert app.forms("/voice/menu")[0]["Digits"] == "1"
    assert app.forms("/voice/menu")[0]["FinishedOnKey"] == ""
    assert app.forms("/voice/zip")[0]["Digits"] == "60614"
    assert app.forms("/voice/zip")[0]["FinishedOnKey"] == "#"
    assert "Digits" not in app.forms("/voice/pay")[0]

    paid = app.forms("/voice/paid")[0]
    assert paid["Result"] == "success"
    assert re.fullmatch(r"[A-Z0-9]{10}", paid["PaymentConfirmationCode"])
    assert paid["PaymentCardNumber"] == "xxxx-xxxx-xxxx-1111"
    assert paid["PaymentCardType"] == "visa"
    assert paid["ExpirationDate"] == "1230"
    assert paid["PaymentCardPostalCode"] == "94109"
    assert paid["PaymentMethod"] == "credit-card"
    assert "SecurityCode" not in paid

    progress = app.forms("/voice/pay-status")[0]
    assert re.fullmatch(r"PK[0-9a-f]{32}", progress["Sid"])
    assert progress["CallSid"] == result.call_sid
    assert progress["Capture"] == "payment-card-number"
    assert progress["PartialResult"] == "false"
    assert progress["ChargeAmount"] == "12.34"

    assert_status_once_at_end(app)
    assert result.status_callback_status == 200
    assert_no_full_numbers(result, app)

    assert result.said().splitlines() == [
        "Welcome to ABC Water.",
        "Press 1 to pay.",
        "Enter your ZIP code, then press pound.",
        "Please enter your card number, then press pound.",
        "Enter the expiration date.",
        "Enter the three digit code.",
        "Enter the billing ZIP code.",
        "Please wait while we process your payment.",
        "Result success.",
    ]
    assert result.events[0] == {"event": "say", "text": "Welcome to ABC Water.",
                                "language": "en-US", "voice": "Polly.Joanna-Neural"}
    assert result.events[1] == {"event": "play", "url": "https://cdn.example.com/chime.mp3"}
    kinds = [event["event"] for event in result.events]
    assert kinds == ["say", "play", "say", "press", "say", "press", "say", "say", "say", "say",
                     "say", "pay", "say", "hangup"]
    assert result.events[3] == {"event": "press", "digits": "1"}
    pay = next(event for event in result.events if event["event"] == "pay")
    assert pay["method"] == "credit-card"
    assert pay["amount"] == "12.34"
    assert pay["card"] == "xxxx1111"
    assert pay["result"] == "success"
    assert pay["confirmation"] == paid["PaymentConfirmationCode"]
    assert result.events[-1] == {"event": "hangup", "by": "line"}
    assert json.loads(result.to_json())["events"] == result.events


def test_wrong_signature_is_an_application_error() -> None:
    app = TwilioApp(mini_flow("/voice/zip"))
    result = run_call(FlaskTransport(app.app, "not-the-token"), ScriptedCaller(["1"]))
    assert result.ended_by == "error"
    assert result.events == [{"event": "error", "status": 403,
                              "detail": "HTTP 403 from http://localhost/voice/incoming: "
                                        "bad signature"}]
    assert app.hits == []
    assert app.rejected == 2  # the incoming webhook and the status callback
    assert result.status_callback_status == 403


def test_base_url_prefix_and_account_sid() -> None:
    account = "AC" + "1" * 32
    app = TwilioApp({"/ivr/voice/incoming": twiml("<Say>Hi.</Say>")})
    result = run_call(FlaskTransport(app.app, TOKEN, base_url="https://pay.example.org/ivr"),
                      ScriptedCaller([]), base_url="https://pay.example.org/ivr",
                      from_number="+15555550199", auth_token_account_sid=account)
    assert result.ended_by == "line"
    assert [hit.url for hit in app.hits] == ["https://pay.example.org/ivr/voice/incoming",
                                             "https://pay.example.org/ivr/voice/status"]
    assert {hit.form["AccountSid"] for hit in app.hits} == {account}
    assert app.hits[0].form["From"] == "+15555550199"
    assert result.events[-1] == {"event": "hangup", "by": "line", "reason": "end of document"}


@pytest.mark.parametrize(("attrs", "keys", "digits", "finished"), [
    ('numDigits="1"', "12", "1", ""),
    ("", "60614#", "60614", "#"),
    ("", "60614", "60614", ""),  # no pound: Twilio submits at the timeout
    ('numDigits="5"', "606149#", "60614", ""),
    ('finishOnKey=""', "1#", "1#", ""),
    ('finishOnKey=""', "#", "#", ""),
    ('finishOnKey="*"', "50*00#", "50", "*"),
    ("", "50*00#", "50*00", "#"),
    ("", "#", "", "#"),
    ("", "-", "", ""),
    ("", "_", "", ""),
])
def test_gather_digits(attrs: str, keys: str, digits: str, finished: str) -> None:
    docs: dict[str, Doc] = {
        "/voice/incoming": twiml(f'<Gather action="/voice/got" {attrs} '
                                 'actionOnEmptyResult="true"><Say>Go.</Say></Gather>'),
        "/voice/got": twiml("<Hangup/>"),
    }
    result, app = call(docs, ScriptedCaller([keys]))
    assert app.forms("/voice/got")[0]["Digits"] == digits
    assert app.forms("/voice/got")[0]["FinishedOnKey"] == finished
    expected = {"event": "silence"} if keys in "-_" else {"event": "press", "digits": digits}
    assert result.events[1] == expected
    assert result.ended_by == "line"


def test_silence_without_action_on_empty_result_falls_through() -> None:
    docs: dict[str, Doc] = {
        "/voice/incoming": twiml('<Gather action="/voice/got" numDigits="1">'
                                 "<Say>Press 1.</Say></Gather><Say>We did not hear you.</Say>"),
        "/voice/got": twiml("<Hangup/>"),
    }
    result, app = call(docs, ScriptedCaller(["-"]))
    assert app.paths() == ["/voice/incoming", "/voice/status"]
    assert result.said() == "Press 1.\nWe did not hear you."
    assert result.ended_by == "line"


def test_gather_without_action_posts_to_the_current_document() -> None:
    def incoming(form: dict[str, str]) -> str:
        if form.get("Digits") == "9":
            return twiml("<Say>Nine.</Say>")
        return twiml('<Gather numDigits="1"><Say>Press 9.</Say></Gather>')

    result, app = call({"/voice/incoming": incoming}, ScriptedCaller(["9"]))
    assert app.paths() == ["/voice/incoming", "/voice/incoming", "/voice/status"]
    assert result.said() == "Press 9.\nNine."


@pytest.mark.parametrize(("card", "outcome", "error", "masked", "card_type"), [
    (VISA, "success", None, "xxxx-xxxx-xxxx-1111", "visa"),
    ("5555555555554444", "success", None, "xxxx-xxxx-xxxx-4444", "mastercard"),
    ("378282246310005", "success", None, "xxxx-xxxx-xxxx-0005", "amex"),
    ("6011111111111117", "too-many-failed-attempts", "invalid-card-type", None, None),
    ("4000000000000002", "payment-connector-error", "card is declined",
     "xxxx-xxxx-xxxx-0002", "visa"),
    ("4111111111111112", "too-many-failed-attempts", "invalid-card-number", None, None),
    ("4111", "too-many-failed-attempts", "invalid-card-number", None, None),
    ("*", "caller-interrupted-with-star", None, None, None),
    ("internal-error", "internal-error", "internal error", None, None),
    ("validation-error", "validation-error", "validation error", None, None),
])
def test_pay_outcomes(card: str, outcome: str, error: str | None, masked: str | None,
                      card_type: str | None) -> None:
    result, app = call(mini_flow("/voice/zip"), ScriptedCaller(["1", "60614#"], cards=[card]))
    paid = app.forms("/voice/paid")[0]
    assert paid["Result"] == outcome
    assert paid.get("PaymentError") == error
    assert paid.get("PaymentCardNumber") == masked
    assert paid.get("PaymentCardType") == card_type
    assert ("PaymentConfirmationCode" in paid) == (outcome == "success")
    pay = next(event for event in result.events if event["event"] == "pay")
    assert pay["result"] == outcome
    assert pay.get("error") == error
    if card.isdigit():  # a too-short entry shows no digits at all
        assert pay["card"] == ("xxxx" + card[-4:] if len(card) > 4 else "xxxx")
    assert f"Result {outcome}." in result.said()
    assert "not valid" not in result.said()
    # The amex security-code prompt only plays for amex cards.
    assert ("four digit" in result.said()) == (card_type == "amex")
    assert app.paths().index("/voice/pay-status") < app.paths().index("/voice/paid")
    assert_status_once_at_end(app)
    assert_no_full_numbers(result, app)
    assert result.ended_by == "line"


def test_diners_test_card_when_accepted() -> None:
    docs = mini_flow("/voice/zip")
    docs["/voice/pay"] = twiml('<Pay chargeAmount="5" action="/voice/paid" '
                               'validCardTypes="visa diners-club"/>')
    result, app = call(docs, ScriptedCaller(["1", "1#"], cards=["3065930009020004"]))
    paid = app.forms("/voice/paid")[0]
    assert paid["Result"] == "success"
    assert paid["PaymentCardType"] == "diners-club"
    assert "/voice/pay-status" not in app.paths()  # no statusCallback attribute
    # Without <Prompt>s the caller hears Twilio's own wording.
    defaults = [e for e in result.events if e.get("source") == "twilio-default"]
    assert defaults[0]["text"] == "Please enter your credit card number."
    assert_no_full_numbers(result, app)


def test_cards_are_used_one_per_pay_and_the_last_repeats() -> None:
    docs = mini_flow("/voice/zip")
    docs["/voice/paid"] = lambda form: twiml(
        f"<Say>{form['Result']}</Say>" + (
            "" if form["Result"] == "success" else '<Redirect>/voice/pay</Redirect>'))
    caller = ScriptedCaller(["1", "1#"], cards=["4000000000000002", "*", VISA])
    result, app = call(docs, caller)
    assert [f["Result"] for f in app.forms("/voice/paid")] == [
        "payment-connector-error", "caller-interrupted-with-star", "success"]
    assert result.ended_by == "line"


def test_pay_hang_up_ends_the_call() -> None:
    result, app = call(mini_flow("/voice/zip"), ScriptedCaller(["1", "1#"], cards=["hangup"]))
    assert result.ended_by == "caller"
    paid = app.forms("/voice/paid")
    assert len(paid) == 1
    assert paid[0]["Result"] == "caller-hung-up"
    assert "Result caller-hung-up." not in result.said()  # nobody is left to hear it
    assert result.events[-1] == {"event": "hangup", "by": "caller"}
    assert_status_once_at_end(app)


def test_invalid_charge_amount_is_a_validation_error() -> None:
    caller = ScriptedCaller(["1", "1#"])
    result, app = call(mini_flow("/voice/zip", 'chargeAmount="12.345"'), caller)
    paid = app.forms("/voice/paid")[0]
    assert paid["Result"] == "validation-error"
    assert paid["PaymentError"] == (
        "paymentAmount='12.345' (not a number between 0.00 - 1,000,000.00)")
    assert caller.pays == {"credit-card": 0, "ach-debit": 0}  # never asked for a card
    assert "card number" not in result.said()


@pytest.mark.parametrize("amount", ["1000000.01", "-1", "abc", "1e3", "1,000"])
def test_out_of_range_amounts(amount: str) -> None:
    result, app = call(mini_flow("/voice/zip", f'chargeAmount="{amount}"'),
                       ScriptedCaller(["1", "1#"]))
    assert app.forms("/voice/paid")[0]["Result"] == "validation-error"
    assert result.ended_by == "line"


@pytest.mark.parametrize(("account", "outcome", "error", "masked"), [
    ("123456789", "success", None, "*******89"),
    ("12345678", "success", None, "******78"),
    ("000000000", "payment-connector-error", "account closed", "*******00"),
    ("42", "too-many-failed-attempts", "invalid-bank-account-number", None),
])
def test_ach_outcomes(account: str, outcome: str, error: str | None,
                      masked: str | None) -> None:
    docs = mini_flow("/voice/zip")
    docs["/voice/pay"] = twiml(
        '<Pay paymentMethod="ach-debit" bankAccountType="commercial-checking" '
        'chargeAmount="40.00" action="/voice/paid" statusCallback="/voice/pay-status"/>')
    result, app = call(docs, ScriptedCaller(["1", "1#"], bank_accounts=[account]))
    paid = app.forms("/voice/paid")[0]
    assert paid["Result"] == outcome
    assert paid["PaymentMethod"] == "ach-debit"
    assert paid.get("PaymentError") == error
    assert paid.get("BankAccountNumber") == masked
    if masked:
        assert paid["BankRoutingNumber"] == "121000248"
        assert paid["BankAccountType"] == "commercial-checking"
    assert app.forms("/voice/pay-status")[0]["PaymentMethod"] == "ach-debit"
    pay = next(event for event in result.events if event["event"] == "pay")
    assert pay["method"] == "ach-debit"
    assert pay["account"] == "*" * (len(account) - 2) + account[-2:]
    assert "Please enter your bank account number." in result.said()
    assert_status_once_at_end(app)
    assert_no_full_numbers(result, app)


def test_dial_with_and_without_action() -> None:
    docs: dict[str, Doc] = {
        "/voice/incoming": twiml(
            '<Dial timeout="20">+15555550111</Dial><Say>Back again.</Say>'
            '<Dial action="after-dial" timeout="20"><Number>+15555550100</Number></Dial>'
            "<Say>Not reached.</Say>"),
        "/voice/after-dial": twiml("<Say>Goodbye.</Say><Hangup/>"),
    }
    result, app = call(docs, ScriptedCaller([]))
    dials = [event for event in result.events if event["event"] == "dial"]
    assert dials == [{"event": "dial", "number": "+15555550111"},
                     {"event": "dial", "number": "+15555550100"}]
    after = app.forms("/voice/after-dial")[0]
    assert after["DialCallStatus"] == "completed"
    assert after["DialCallDuration"] == "60"
    assert result.said() == "Back again.\nGoodbye."
    assert int(assert_status_once_at_end(app)["CallDuration"]) >= 120


@pytest.mark.parametrize(("doc", "status", "detail"), [
    ((500, "<h1>Internal Server Error</h1>"), 500, "HTTP 500"),
    ("<Response><Say>oops</Response>", 200, "invalid TwiML"),
    ("<Html/>", 200, "not <Response>"),
    (twiml("<Say>Leave a message.</Say><Record/>"), 200, "unsupported verb <Record>"),
])
def test_application_errors(doc: Doc, status: int, detail: str) -> None:
    result, app = call({"/voice/incoming": doc}, ScriptedCaller([]))
    assert result.ended_by == "error"
    error = result.events[-1]
    assert error["event"] == "error"
    assert error["status"] == status
    assert detail in str(error["detail"])
    assert_status_once_at_end(app)


def test_error_after_a_gather() -> None:
    docs: dict[str, Doc] = {
        "/voice/incoming": twiml('<Gather action="/voice/boom" numDigits="1"><Say>Hi.</Say>'
                                 "</Gather>"),
        "/voice/boom": (500, "boom"),
    }
    result, app = call(docs, ScriptedCaller(["1"]))
    assert result.ended_by == "error"
    assert result.events[-1] == {"event": "error", "status": 500,
                                 "detail": "HTTP 500 from http://localhost/voice/boom: boom"}
    assert_status_once_at_end(app)


def test_caller_hangs_up_at_a_gather() -> None:
    caller = ScriptedCaller(["1", "hangup"])
    result, app = call(mini_flow("/voice/zip"), caller)
    assert result.ended_by == "caller"
    assert result.events[-1]["event"] == "hangup"
    assert result.events[-1]["by"] == "caller"
    assert "/voice/zip" not in app.paths()
    assert not caller.ran_out
    assert_status_once_at_end(app)


def test_script_running_out_hangs_up_and_is_recorded() -> None:
    caller = ScriptedCaller(["1"])
    result, app = call(mini_flow("/voice/zip"), caller)
    assert caller.ran_out
    assert result.ended_by == "caller"
    assert result.events[-1] == {"event": "hangup", "by": "caller",
                                 "reason": "the script ran out of presses"}
    assert_status_once_at_end(app)


def test_redirect_loop_stops_at_max_requests() -> None:
    docs: dict[str, Doc] = {"/voice/incoming": twiml("<Redirect>/voice/incoming</Redirect>")}
    result, app = call(docs, ScriptedCaller([]), max_requests=5)
    assert result.ended_by == "error"
    assert app.paths().count("/voice/incoming") == 5
    assert "redirect loop" in str(result.events[-1]["detail"])
    assert_status_once_at_end(app)


def test_scripted_caller_rejects_bad_scripts() -> None:
    with pytest.raises(ValueError, match="not phone keys"):
        ScriptedCaller(["1", "12a#"])
    with pytest.raises(TypeError):
        ScriptedCaller("11")
    with pytest.raises(ValueError, match="at least one"):
        ScriptedCaller(["1"], cards=[])


class Terminal:
    """Scripted keyboard input and captured output for InteractiveCaller."""

    def __init__(self, lines: list[str]) -> None:
        self.lines: Iterator[str] = iter(lines)
        self.prompts: list[str] = []
        self.output: list[str] = []

    def input(self, prompt: str) -> str:
        self.prompts.append(prompt)
        try:
            return next(self.lines)
        except StopIteration:
            raise EOFError from None

    def print(self, line: str) -> None:
        self.output.append(line)


def test_interactive_caller() -> None:
    term = Terminal(["1", "6061x", "60614#", ""])  # a typo, then Enter = the Visa test card
    caller = InteractiveCaller(input_fn=term.input, output_fn=term.print)
    result, app = call(mini_flow("/voice/zip"), caller)
    assert result.ended_by == "line"
    assert term.prompts == ["keys> ", "keys> ", "keys> ", "card> "]
    out = "\n".join(term.output)
    assert term.output[0] == "IVR: Welcome to ABC Water."
    assert "IVR: Press 1 to pay." in term.output
    assert "IVR: Please enter your card number, then press pound." in term.output
    assert "Use the keys 0-9, * and #" in out
    assert "[Payment, test mode]" in out
    assert "xxxx1111" in out
    assert "[payment credit-card 12.34 xxxx1111: success" in out
    assert term.output[-1] == "[call ended by the line]"
    for number in FULL_NUMBERS:
        assert number not in out
    assert app.forms("/voice/paid")[0]["Result"] == "success"


def test_interactive_caller_hangs_up_on_eof_and_h() -> None:
    term = Terminal([])
    result, _ = call(mini_flow("/voice/zip"),
                     InteractiveCaller(input_fn=term.input, output_fn=term.print))
    assert result.ended_by == "caller"
    assert term.output[-1] == "[call ended by the caller]"

    term = Terminal(["", "h"])  # silence, then hang up at the repeated menu
    result, app = call(mini_flow("/voice/zip"),
                       InteractiveCaller(input_fn=term.input, output_fn=term.print))
    assert result.ended_by == "caller"
    assert app.paths() == ["/voice/incoming", "/voice/menu", "/voice/incoming", "/voice/status"]
    assert app.forms("/voice/menu")[0]["Digits"] == ""
    assert "IVR: Sorry." in term.output


def test_interactive_caller_at_pay_can_hang_up() -> None:
    term = Terminal(["1", "1#", "h"])
    result, app = call(mini_flow("/voice/zip"),
                       InteractiveCaller(input_fn=term.input, output_fn=term.print))
    assert result.ended_by == "caller"
    assert app.forms("/voice/paid")[0]["Result"] == "caller-hung-up"


def test_interactive_caller_without_run_call_prints_what_was_said() -> None:
    term = Terminal(["5"])
    caller = InteractiveCaller(input_fn=term.input, output_fn=term.print)
    assert caller.press(["Press 5."], {"numDigits": "1"}) == "5"
    assert term.output == ["IVR: Press 5."]


def test_format_event() -> None:
    assert format_event({"event": "say", "text": "Hi."}) == "IVR: Hi."
    assert format_event({"event": "silence"}) == "CALLER: (silence)"
    assert format_event({"event": "pay", "method": "ach-debit", "amount": "4.00",
                         "account": "*******89", "result": "success",
                         "confirmation": "ABC"}) == (
        "[payment ach-debit 4.00 *******89: success ABC]")
    assert format_event({"event": "unknown"}) is None


@pytest.fixture
def served() -> Iterator[tuple[TwilioApp, str]]:
    app = TwilioApp({})
    with serving(app.app) as base:
        yield app, base


def test_http_transport(served: tuple[TwilioApp, str]) -> None:
    app, base = served
    app.docs.update(mini_flow(f"{base}/voice/zip?step=2"))
    with HttpTransport(TOKEN) as transport:
        result = run_call(transport, ScriptedCaller(["1", "60614#"]), base_url=base)
    assert result.ended_by == "line"
    assert app.rejected == 0
    assert app.paths() == ["/voice/incoming", "/voice/menu", "/voice/zip", "/voice/pay",
                           "/voice/pay-status", "/voice/paid", "/voice/status"]
    assert app.hits[2].url == f"{base}/voice/zip?step=2"
    assert app.forms("/voice/zip")[0]["Digits"] == "60614"
    assert app.forms("/voice/paid")[0]["Result"] == "success"
    assert_status_once_at_end(app)
    assert_no_full_numbers(result, app)


def test_http_transport_wrong_token_and_no_server(served: tuple[TwilioApp, str]) -> None:
    app, base = served
    app.docs.update(mini_flow("/voice/zip"))
    with HttpTransport("wrong") as transport:
        result = run_call(transport, ScriptedCaller([]), base_url=base)
    assert result.ended_by == "error"
    assert result.events[-1]["status"] == 403

    # A port nobody listens on: held (bound, never listening) for the whole test, so no
    # other process can start listening on it meanwhile.
    with socket.socket() as sock, HttpTransport(TOKEN, timeout=2) as transport:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        status, detail = transport.post(f"http://127.0.0.1:{port}/voice/incoming", {})
        result = run_call(transport, ScriptedCaller([]), base_url=f"http://127.0.0.1:{port}")
    assert status == 0
    assert "ConnectionError" in detail
    assert result.ended_by == "error"
    assert result.status_callback_status == 0


def test_flask_transport_accepts_relative_urls_and_mappings() -> None:
    app = TwilioApp({"/voice/ping": twiml("<Hangup/>")})
    transport = FlaskTransport(app.app, TOKEN, base_url="https://ivr.example.com")
    status, body = transport.post("/voice/ping?x=1", MappingProxyType({"CallSid": "CA1"}))
    assert status == 200
    assert "<Hangup/>" in body
    assert app.hits[0].url == "https://ivr.example.com/voice/ping?x=1"
