"""Every state answers any input with valid TwiML and HTTP 200 (property-based)."""

from __future__ import annotations

import logging
import xml.etree.ElementTree as ET
from collections.abc import Iterator

import pytest
from flask import Flask
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from ivr.calls.states import STATES
from ivr.models import Account, CallSession
from ivr.web.app import get_database
from tests.conftest import Twilio, new_sid

pytestmark = pytest.mark.slow

ALL_STATES = [*sorted(STATES), "paying", "ended", "no-such-state"]
PROFILE = settings(max_examples=150, deadline=None,
                   suppress_health_check=[HealthCheck.function_scoped_fixture])

keys = st.one_of(
    st.none(),  # parameter missing
    st.just(""),  # silence
    st.sampled_from(["0", "9", "1", "2", "3", "#", "*", "60614", "50*00", "4401001234"]),
    st.text(alphabet="0123456789*#", max_size=40),
    st.text(max_size=300),  # garbage, including non-ASCII and control characters
    st.text(alphabet="0123456789", min_size=500, max_size=3000),  # overlong
)


class _Failures(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage() + str(getattr(record, "fields", "")))


@pytest.fixture(autouse=True)
def no_internal_errors() -> Iterator[None]:
    """Beyond answering 200, the flow must not have hit an exception on the way."""
    handler = _Failures()
    logger = logging.getLogger("ivr")
    logger.addHandler(handler)
    yield
    logger.removeHandler(handler)
    assert handler.messages == []


def seed_call(app: Flask, state: str, lang: str, method: str | None) -> str:
    """A verified call standing in ``state``, as if the caller had got there."""
    call_sid = new_sid()
    with get_database(app).session() as db:
        account = db.scalar(select(Account).where(Account.account_number == "4401005678"))
        assert account is not None
        db.add(CallSession(call_sid=call_sid, from_number="+15555550124", language=lang,
                           state=state, account_id=account.id, verified=True,
                           amount_cents=4200, method=method,
                           bank_account_type="consumer-savings" if method == "ach" else None))
    return call_sid


def assert_valid_twiml(response: object) -> None:
    status = getattr(response, "status_code", None)
    assert status in (200, 204), status
    if status == 200:
        root = ET.fromstring(getattr(response, "data", b""))  # noqa: S314
        assert root.tag == "Response"


@PROFILE
@given(state=st.sampled_from(ALL_STATES), digits=keys, url_state=st.sampled_from(ALL_STATES),
       lang=st.sampled_from(["en-US", "es-US", "fr-FR"]),
       method=st.sampled_from([None, "card", "ach"]))
def test_any_keys_in_any_state(lite_app: Flask, state: str, digits: str | None, url_state: str,
                               lang: str, method: str | None) -> None:
    call_sid = seed_call(lite_app, state, lang, method)
    form = {"CallSid": call_sid, "From": "+15555550124"}
    if digits is not None:
        form["Digits"] = digits
    assert_valid_twiml(Twilio(lite_app).post(f"/voice/step/{url_state}", **form))


results = st.one_of(st.sampled_from([
    "success", "too-many-failed-attempts", "payment-connector-error",
    "caller-interrupted-with-star", "caller-hung-up", "validation-error", "internal-error"]),
    st.text(max_size=50))


@PROFILE
@given(state=st.sampled_from(ALL_STATES), result=results,
       code=st.one_of(st.just(""), st.text(max_size=80),
                      st.from_regex(r"[A-Z0-9]{10}", fullmatch=True)),
       card=st.one_of(st.none(), st.text(max_size=40)),
       exp=st.one_of(st.none(), st.text(max_size=6)))
def test_any_pay_result(lite_app: Flask, state: str, result: str, code: str, card: str | None,
                        exp: str | None) -> None:
    call_sid = seed_call(lite_app, state, "en-US", "card")
    form = {"CallSid": call_sid, "Result": result, "PaymentConfirmationCode": code}
    if card is not None:
        form["PaymentCardNumber"] = card
    if exp is not None:
        form["ExpirationDate"] = exp
    assert_valid_twiml(Twilio(lite_app).post("/voice/pay/result", **form))


@PROFILE
@given(path=st.sampled_from(["/voice/incoming", "/voice/status", "/voice/dial/done",
                             "/voice/pay/status", "/voice/pay/fallback"]),
       params=st.dictionaries(st.sampled_from(["CallSid", "From", "To", "CallStatus",
                                               "DialCallStatus", "Digits", "Junk"]),
                              st.text(max_size=100), max_size=6))
def test_other_webhooks_with_arbitrary_params(lite_app: Flask, path: str,
                                              params: dict[str, str]) -> None:
    assert_valid_twiml(Twilio(lite_app).post(path, **params))
