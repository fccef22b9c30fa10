"""Properties of every call, whatever the caller presses (hypothesis drives the machine):

- nothing about an account is spoken before that account is verified: before, the line says
  only greetings, menus of identification and verification (the multi-account pick list
  included, which names accounts by their last four digits alone), help and goodbyes, and no
  value it speaks is an account's name, balance, ZIP or full number;
- no payment without an explicit confirmation: every <Pay> hand-off follows the caller's 1
  at the card confirmation or the bank authorization, or their card key at a method menu
  that said the amount and the account, and for an account paid in the last 24 hours,
  their 1 at "you already paid today";
- no arrangement without an explicit confirmation: a call records at most as many
  arrangements as its "agree" presses, and one with a down payment only with that payment.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import delete, select

from ivr.accounts.importer import import_accounts
from ivr.calls import machine
from ivr.calls.steps import Ask, PayCapture, Speech, Step
from ivr.models import (
    Account,
    AchAuthorization,
    Arrangement,
    CallEvent,
    CallSession,
    GuardEvent,
    OutboxEntry,
    Payment,
    PostingAttempt,
    VerificationFailure,
)
from ivr.money.payments import handle_pay_result
from ivr.prompts import speech
from ivr.simulator.demo import DEMO_LANDLORD, demo_file, demo_rows
from tests.conftest import OPEN_TIME
from tests.flow import (
    ANOTHER_ACCOUNT,
    AUTHORIZE,
    BANK,
    CARD,
    CHECKING,
    CONTINUE,
    EN,
    PAY,
    SILENCE,
    YES,
    Line,
    demo_line,
    key,
    pick,
)

# Prompts a caller may hear before the account in question is verified.
BEFORE_VERIFICATION = ("greeting.", "common.", "language.", "identify.", "account.",
                       "verify.", "agent.", "goodbye.", "pick.")
CALLERS = ("+15555550123", "+15555550124", "+15555550125", "+15555550126", "+15555550127",
           DEMO_LANDLORD, "+15555550199", "anonymous")
ROWS = demo_rows(OPEN_TIME.date())
ZIPS = sorted({row["service_zip"] for row in ROWS})
ACCOUNTS = [row["account_number"] + "#" for row in ROWS]
AGREE = key("arrange_confirm", "agree")
PAY_AGAIN = key("paid_today", "again")

# Mostly menu keys (1 most of all, as callers press it), now and then a ZIP, an account
# number, an amount or nonsense.
answers = st.sampled_from(
    ["1"] * 24 + ["2"] * 6 + ["3", "4", "4", "5", "*", "9", "0", "-", "#"]
    + ZIPS + ACCOUNTS + ["5000#", "100*5#", "1#", "999999#"] * 3)
# The way each caller usually gets to verification, so that examples reach the menus, the
# payment and the arrangement paths rather than dying at the language menu.
_ZIP = {row["account_number"]: row["service_zip"] for row in ROWS}
WAYS_IN = {
    "+15555550123": [[YES, "60614"]], "+15555550124": [[YES, "60615"]],
    "+15555550125": [[YES, "60617"]], "+15555550126": [[YES, "60616"]],
    "+15555550127": [[YES, "60618"]],
    DEMO_LANDLORD: [[EN, pick(n), _ZIP[number]]
                    for n, number in enumerate(("4402000011", "4402000022", "4402000033"), 1)],
    "+15555550199": [[EN, f"{number}#", zip_code] for number, zip_code in _ZIP.items()],
    "anonymous": [[EN, "4401005678#", "60615"]],
}


@st.composite
def calls(draw: st.DrawFn) -> tuple[str, list[str]]:
    """A caller and what they press: mostly the way in then anything, sometimes anything."""
    caller = draw(st.sampled_from(CALLERS))
    way_in = draw(st.sampled_from(WAYS_IN[caller])) if draw(st.integers(0, 4)) else []
    return caller, [*way_in, *draw(st.lists(answers, min_size=8, max_size=30))]


pay_results = st.sampled_from(["success", "success", "payment-connector-error",
                               "caller-interrupted-with-star", "caller-hung-up"])


@dataclass
class Trace:
    """What one call did: each answer with the state and account it was given in."""

    presses: list[tuple[str, str, int | None]] = field(default_factory=list)
    pay_starts: int = 0
    pay_successes: int = 0


def secrets_of_accounts() -> set[str]:
    """Values only a verified caller may hear: names, balances in words, ZIPs, numbers."""
    found: set[str] = set()
    for row in ROWS:
        found.add(row["account_number"])
        found.add(speech.digits(row["account_number"]))
        if row["customer_name"]:
            found.add(row["customer_name"])
        found.add(speech.digits(row["service_zip"]))
        cents = int(row["balance_due"].replace(".", "").replace("-", ""))
        for lang in ("en-US", "es-US"):
            found.add(speech.money(cents, lang))
    return found


SECRETS = secrets_of_accounts()


def check_unverified_speech(step: Step) -> None:
    for said in getattr(step, "speech", ()):
        assert isinstance(said, Speech)
        assert said.prompt_id.startswith(BEFORE_VERIFICATION), said.prompt_id
        for value in said.params.values():
            assert value not in SECRETS, (said.prompt_id, value)


def stored_call(line: Line, call_sid: str) -> CallSession:
    with line.database.session() as db:
        call = db.get(CallSession, call_sid)
        assert call is not None
        db.expunge(call)
        return call


def paid_recently(line: Line, account_id: int, call_sid: str, before: int) -> bool:
    """The account has a payment in the 24 hours before now other than this call's newest."""
    with line.database.session() as db:
        rows = db.scalars(select(Payment).where(
            Payment.account_id == account_id,
            Payment.paid_at > line.now - timedelta(hours=24))).all()
        return len(rows) > before


def run_call(line: Line, caller: str, script: list[str], results: Iterator[str]) -> Trace:
    """Drive one call with ``script``; check the speech properties at every step."""
    trace = Trace()
    flow = line.call(from_number=caller)
    check_unverified_speech(flow.steps[-1])
    answers_left = list(script)
    while answers_left:
        step = flow.steps[-1]
        call = stored_call(line, flow.call_sid)
        if isinstance(step, PayCapture):
            result = next(results)
            form = {"Result": result}
            if result == "success":
                form |= {"PaymentConfirmationCode": f"C{len(flow.steps)}{flow.call_sid[-6:]}",
                         "PaymentCardNumber": "xxxx-xxxx-xxxx-1111", "PaymentCardType": "visa"}
                trace.pay_successes += 1
            with line.database.session() as db:
                live = db.get(CallSession, flow.call_sid)
                assert live is not None
                flow.steps.append(handle_pay_result(line.context(db, live), form))
        elif isinstance(step, Ask):
            answer = answers_left.pop(0)
            trace.presses.append((call.state, answer, call.account_id))
            with line.database.session() as db:
                live = db.get(CallSession, flow.call_sid)
                assert live is not None
                keys = "" if answer == "-" else answer
                flow.steps.append(machine.advance(line.context(db, live), step.state, keys))
        else:
            break  # a transfer, a goodbye: the call is over
        after = stored_call(line, flow.call_sid)
        new = flow.steps[-1]
        if not after.verified:
            check_unverified_speech(new)
        if isinstance(new, PayCapture):
            trace.pay_starts += 1
            check_confirmed(line, trace, after, flow.call_sid, step, new)
    check_arrangements(line, trace, flow.call_sid)
    return trace


def check_confirmed(line: Line, trace: Trace, call: CallSession, call_sid: str,
                    asked: Step, pay: PayCapture) -> None:
    """A <Pay> hand-off right after an explicit 1 to a question that said the amount and the
    account, and after "pay again" where it is asked."""
    state, answer, _account = trace.presses[-1]
    assert (state, answer) in (("final_confirm", CONTINUE), ("ach_authorize", AUTHORIZE),
                               ("method", CARD)), (state, answer)
    assert call.verified and call.account_id is not None
    if state == "method":
        # Card chosen at the method menu: that menu said what is charged, and to which account.
        [said] = [s for s in getattr(asked, "speech", ()) if s.prompt_id == "method.menu_pay"]
        with line.database.session() as db:
            account = db.get(Account, call.account_id)
            assert account is not None
            last4 = speech.digits(account.account_number[-4:])
        assert dict(said.params) == {"amount": speech.money(pay.charge_cents, call.language),
                                     "last4": last4}
    with line.database.session() as db:
        this_call = len(db.scalars(select(Payment).where(
            Payment.call_sid == call_sid, Payment.account_id == call.account_id)).all())
    if paid_recently(line, call.account_id, call_sid, 0) and this_call == 0:
        # Paid before this call: the caller must have said "pay again" for this account.
        assert ("paid_today", PAY_AGAIN, call.account_id) in trace.presses


def check_arrangements(line: Line, trace: Trace, call_sid: str) -> None:
    agreed = sum(1 for state, answer, _ in trace.presses
                 if state == "arrange_confirm" and answer == AGREE)
    with line.database.session() as db:
        made = db.scalars(select(Arrangement).where(Arrangement.call_sid == call_sid)).all()
        assert len(made) <= agreed
        for arrangement in made:
            if arrangement.down_payment_cents:
                down = db.get(Payment, arrangement.down_payment_id)
                assert down is not None and down.call_sid == call_sid
                assert down.amount_cents == arrangement.down_payment_cents
        paid = db.scalars(select(Payment).where(Payment.call_sid == call_sid)).all()
        assert len(paid) <= trace.pay_successes <= trace.pay_starts


@pytest.fixture(scope="module")
def line(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Line]:
    """One line for every example: calls accumulate payments, arrangements and lockouts, as
    a real line's do, so later examples meet "already paid today" and active arrangements."""
    with demo_line(Path(tmp_path_factory.mktemp("properties"))) as built:
        yield built


@settings(max_examples=200, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(call=calls(), results=st.lists(pay_results, min_size=8, max_size=8))
def test_every_call_keeps_the_promises(line: Line, call: tuple[str, list[str]],
                                       results: list[str]) -> None:
    caller, script = call
    run_call(line, caller, script, iter(results * 5))


def test_a_landlord_paying_two_accounts_passes_the_checks(tmp_path: Path) -> None:
    """The checker follows a real call through both accounts (and so would see a slip)."""
    script = [EN, pick(1), "60620", PAY, CARD, ANOTHER_ACCOUNT, pick(3), "60622", PAY, CARD,
              SILENCE]
    with demo_line(tmp_path) as fresh:
        trace = run_call(fresh, DEMO_LANDLORD, script, iter(["success"] * 2))
        with fresh.database.session() as db:
            ids = {number: db.scalars(select(Account.id).where(
                Account.account_number == number)).one()
                for number in ("4402000011", "4402000033")}
    assert trace.pay_starts == 2 and trace.pay_successes == 2
    assert [account for state, _, account in trace.presses if state == "verify"] == [
        ids["4402000011"], ids["4402000033"]]


# Whole paths that pay or arrange, from tests.flow's named keys; the test below bends them.
MORE_TIME, EXTENSION, INSTALMENTS = (key("main_menu", "more_time"),
                                     key("arrange_menu", "extension"),
                                     key("arrange_menu", "instalments"))
RECONNECT = key("amount_menu", "reconnect")
PATHS = {
    "card": ("+15555550123", [YES, "60614", PAY, CARD, SILENCE]),
    "bank": ("+15555550123", [YES, "60614", PAY, BANK, CHECKING, AUTHORIZE, SILENCE]),
    "extension": ("+15555550124", [YES, "60615", MORE_TIME, EXTENSION, AGREE, SILENCE]),
    "plan": ("+15555550124", [YES, "60615", MORE_TIME, INSTALMENTS, AGREE, CARD, SILENCE]),
    "reconnect": ("+15555550127", [YES, "60618", PAY, RECONNECT, CONTINUE, SILENCE]),
    "landlord": (DEMO_LANDLORD, [EN, pick(1), "60620", PAY, CARD, ANOTHER_ACCOUNT, pick(3),
                                 "60622", PAY, CARD, SILENCE]),
}
_CALL_TABLES = (PostingAttempt, OutboxEntry, AchAuthorization, Arrangement, Payment,
                CallEvent, GuardEvent, VerificationFailure, CallSession)


def fresh_start(line: Line) -> None:
    """Forget every call, payment and arrangement; the accounts as the demo file has them."""
    with line.database.session() as db:
        for table in _CALL_TABLES:
            db.execute(delete(table))
    import_accounts(line.database, io.BytesIO(demo_file(line.now.date())), "demo",
                    pin_key="test-pin-key")


@st.composite
def bent(draw: st.DrawFn) -> tuple[str, list[str]]:
    """A paying or arranging path with a few keys dropped, doubled, changed or added: the
    near misses where an accidental payment or arrangement would hide."""
    caller, script = PATHS[draw(st.sampled_from(sorted(PATHS)))]
    script = list(script)
    for _ in range(draw(st.integers(1, 3))):
        at = draw(st.integers(0, len(script) - 1))
        kind = draw(st.sampled_from(["drop", "double", "change", "add"]))
        if kind == "drop":
            del script[at]
        elif kind == "double":
            script.insert(at, script[at])
        elif kind == "change":
            script[at] = draw(answers)
        else:
            script.insert(at, draw(answers))
    return caller, script or [SILENCE]


@settings(max_examples=100, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(first=bent(), second=bent(), results=st.lists(pay_results, min_size=8, max_size=8))
def test_near_misses_keep_the_promises(line: Line, first: tuple[str, list[str]],
                                       second: tuple[str, list[str]],
                                       results: list[str]) -> None:
    """Two bent calls on a fresh line: the second meets what the first paid or arranged."""
    fresh_start(line)
    for caller, script in (first, second):
        run_call(line, caller, script, iter(results * 5))


@pytest.mark.parametrize("name", sorted(PATHS))
def test_each_unbent_path_pays_or_arranges(line: Line, name: str) -> None:
    """The paths the near misses bend do reach <Pay> or record an arrangement as written."""
    fresh_start(line)
    caller, script = PATHS[name]
    trace = run_call(line, caller, script, iter(["success"] * 5))
    with line.database.session() as db:
        arranged = db.scalars(select(Arrangement)).all()
    assert trace.pay_successes >= 1 or len(arranged) == 1, name
