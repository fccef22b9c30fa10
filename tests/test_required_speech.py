"""What the line must say, however short the call gets (docs/call-flow.md, "Call time"):

- before every <Pay>, the question the caller answered said the amount charged and the
  account it pays (the last four digits);
- before every bank <Pay>, the NACHA TEL authorization was read and the caller pressed 1;
- where a fee applies, it was disclosed with the total and the caller accepted it;
- the caller hears everything inside a <Gather>, so a caller who knows the line keys ahead.

Each rule is checked on every path to <Pay> the line has: the balance from the main menu,
an amount typed, the amount menu's choices, one way to pay, a full-balance-only account, a
typed account number, Spanish, and an arrangement's down payment; with and without fees.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest
from sqlalchemy import select

from ivr.calls.steps import Ask, PayCapture, Speech, Step
from ivr.models import Account, AchAuthorization, CallSession
from ivr.prompts import speech
from ivr.prompts.catalog import load_catalog
from tests.conftest import custom_prompts
from tests.flow import (
    ACCEPT_FEE,
    AUTHORIZE,
    AVOID_DISCONNECTION,
    BANK,
    CARD,
    CHECKING,
    CONFIRM,
    CONTINUE,
    DECLINE_FEE,
    EN,
    PAY,
    PAY_OTHER,
    SAVINGS,
    YES,
    Line,
    demo_line,
    key,
)

ALEX, JORDAN, ROSA, CASEY = "+15555550123", "+15555550124", "+15555550125", "+15555550127"
STRANGER = "+15555550199"
RECONNECT = key("amount_menu", "reconnect")
MORE_TIME, INSTALMENTS = key("main_menu", "more_time"), key("arrange_menu", "instalments")
AGREE = key("arrange_confirm", "agree")

# Every path to <Pay> without fees: (caller, keys).
PATHS: dict[str, tuple[str, list[str]]] = {
    "balance by card": (ALEX, [YES, "60614", PAY, CARD]),
    "amount typed, card": (ALEX, [YES, "60614", PAY_OTHER, "2000#", CONFIRM, CARD]),
    "balance by bank": (ALEX, [YES, "60614", PAY, BANK, CHECKING, AUTHORIZE]),
    "typed account, amount typed, bank": (STRANGER, [
        EN, "4402000011#", "60620", PAY_OTHER, "2000#", CONFIRM, BANK, SAVINGS, AUTHORIZE]),
    "amount menu: avoid disconnection": (JORDAN, [YES, "60615", PAY, AVOID_DISCONNECTION,
                                                  CARD]),
    "amount menu: reconnection, card only": (CASEY, [YES, "60618", PAY, RECONNECT, CONTINUE]),
    "one way to pay": (STRANGER, [EN, "4402000022#", "60621", PAY, CONTINUE]),
    "full balance only": (STRANGER, [EN, "4402000033#", "60622", PAY, CARD]),
    "Spanish": (ROSA, [YES, "60617", PAY, CARD]),
    "down payment by card": (JORDAN, [YES, "60615", MORE_TIME, INSTALMENTS, AGREE, CARD]),
    "down payment by bank": (JORDAN, [YES, "60615", MORE_TIME, INSTALMENTS, AGREE, BANK,
                                      CHECKING, AUTHORIZE]),
}
# The same paths where card and bank payments carry a fee.
FEE_PATHS: dict[str, tuple[str, list[str]]] = {
    "balance by card": (ALEX, [YES, "60614", PAY, CARD, ACCEPT_FEE, CONTINUE]),
    "balance by bank": (ALEX, [YES, "60614", PAY, BANK, CHECKING, ACCEPT_FEE, AUTHORIZE]),
    "one way to pay": (STRANGER, [EN, "4402000022#", "60621", PAY, ACCEPT_FEE, CONTINUE]),
    "Spanish": (ROSA, [YES, "60617", PAY, CARD, ACCEPT_FEE, CONTINUE]),
    "down payment by bank": (JORDAN, [YES, "60615", MORE_TIME, INSTALMENTS, AGREE, BANK,
                                      CHECKING, ACCEPT_FEE, AUTHORIZE]),
}
FEES = ('card = "0.00"\nach = "0.00"', 'card = "2.95"\nach = "1.50"')


@dataclass
class Walk:
    """One call to <Pay>: each answer with the state it was given in and the step before it."""

    line: Line
    call_sid: str = ""
    answers: list[tuple[str, str, Step]] = field(default_factory=list)
    pay: PayCapture | None = None
    language: str = ""
    last4: str = ""


def walk(line: Line, caller: str, keys: list[str]) -> Walk:
    """Press ``keys`` one at a time, noting where each was pressed, up to <Pay>."""
    flow = line.call(caller)
    done = Walk(line, flow.call_sid)
    for keys_now in keys:
        state, asked = flow.state, flow.steps[-1]
        step = flow.press(keys_now)
        done.answers.append((state, keys_now, asked))
        if isinstance(step, PayCapture):
            done.pay = step
            break
    session = flow.session()
    done.language = session.language
    with line.database.session() as db:
        account = db.get(Account, session.account_id)
        assert account is not None
        done.last4 = speech.digits(account.account_number[-4:])
    assert done.pay is not None, f"{keys} did not reach <Pay>: {done.answers[-1][:2]}"
    assert len(done.answers) == len(keys), "<Pay> came before the script's last key"
    return done


def _said(step: Step) -> tuple[Speech, ...]:
    assert isinstance(step, Ask)
    return step.speech


def _charged_words(done: Walk) -> str:
    assert done.pay is not None
    return speech.money(done.pay.charge_cents, done.language)


def check_amount_and_account(done: Walk) -> None:
    """The question answered last before <Pay> said the amount charged and the account."""
    _state, _keys, asked = done.answers[-1]
    told = [s for s in _said(asked)
            if s.params.get("total", s.params.get("amount")) == _charged_words(done)
            and s.params.get("last4") == done.last4]
    assert told, [(s.prompt_id, dict(s.params)) for s in _said(asked)]


@pytest.fixture(scope="module")
def fee_prompts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return custom_prompts(tmp_path_factory.mktemp("fees"), {"settings.toml": FEES})


@pytest.mark.parametrize("name", sorted(PATHS))
def test_amount_and_account_are_said_before_every_pay(tmp_path: Path, name: str) -> None:
    caller, keys = PATHS[name]
    with demo_line(tmp_path) as line:
        done = walk(line, caller, keys)
        check_amount_and_account(done)
        assert done.pay is not None and done.pay.charge_cents > 0


@pytest.mark.parametrize("name", sorted(FEE_PATHS))
def test_with_a_fee_the_total_and_account_are_said_before_pay(tmp_path: Path, name: str,
                                                              fee_prompts: Path) -> None:
    caller, keys = FEE_PATHS[name]
    with demo_line(tmp_path, fee_prompts) as line:
        check_amount_and_account(walk(line, caller, keys))


@pytest.mark.parametrize("name", sorted(n for n in PATHS if "bank" in n))
def test_every_bank_pay_follows_the_tel_authorization(tmp_path: Path, name: str) -> None:
    caller, keys = PATHS[name]
    with demo_line(tmp_path) as line:
        done = walk(line, caller, keys)
        assert done.pay is not None and done.pay.method == "ach-debit"
        state, pressed, asked = done.answers[-1]
        assert (state, pressed) == ("ach_authorize", AUTHORIZE)
        [script] = [s for s in _said(asked) if s.prompt_id == "ach.authorize"]
        # NACHA TEL: name, amount, account type, the account, the date, how to revoke.
        assert set(script.params) == {"name", "amount", "date", "account_type", "last4",
                                      "phone"}
        assert script.params["amount"] == _charged_words(done)
        assert script.params["last4"] == done.last4 and script.params["name"]
        with line.database.session() as db:
            [kept] = db.scalars(select(AchAuthorization).where(
                AchAuthorization.call_sid == done.call_sid)).all()
            rendered = line.catalog.render("ach.authorize", done.language,
                                           **script.params).ssml
            assert kept.script_text == rendered
            assert kept.script_version == line.catalog.settings.ach.script_version


def test_the_tel_script_is_the_one_its_version_names() -> None:
    # The authorization wording is not shortened with the rest: a change to it needs a new
    # [ach] script_version (prompts/settings.toml), and this pins the pair.
    catalog = load_catalog(Path(__file__).resolve().parents[1] / "prompts")
    assert catalog.settings.ach.script_version == "tel-2026-11-v1"
    assert catalog.raw("ach.authorize", "en-US")["say"].startswith(
        "{name}, you are authorizing a single, one-time electronic debit of {amount}")


@pytest.mark.parametrize("name", sorted(FEE_PATHS))
def test_a_fee_is_disclosed_and_accepted_before_pay(tmp_path: Path, name: str,
                                                    fee_prompts: Path) -> None:
    caller, keys = FEE_PATHS[name]
    with demo_line(tmp_path, fee_prompts) as line:
        done = walk(line, caller, keys)
        [(asked, pressed)] = [(asked, pressed) for state, pressed, asked in done.answers
                              if state == "fee_accept"]
        assert pressed == ACCEPT_FEE
        [disclosed] = [s for s in _said(asked) if s.prompt_id.startswith("fee.disclose")]
        fee = 150 if done.pay is not None and done.pay.method == "ach-debit" else 295
        assert disclosed.params["fee"] == speech.money(fee, done.language)
        assert disclosed.params["total"] == _charged_words(done)
        with line.database.session() as db:
            session = db.get(CallSession, done.call_sid)
            assert session is not None and session.fee_cents == fee


def test_a_declined_fee_never_reaches_pay(tmp_path: Path, fee_prompts: Path) -> None:
    with demo_line(tmp_path, fee_prompts) as line:
        flow = line.call(ALEX)
        steps = [flow.press(k) for k in (YES, "60614", PAY, CARD, DECLINE_FEE, CARD,
                                         DECLINE_FEE, BANK, CHECKING, DECLINE_FEE)]
        assert not any(isinstance(step, PayCapture) for step in steps)
        assert flow.state == "method" and flow.session().fee_cents == 0


def test_the_first_words_say_nothing_about_the_account_but_its_last_four(
        tmp_path: Path) -> None:
    # The language menu is skipped for a language on file; still nothing before the ZIP.
    with demo_line(tmp_path) as line:
        for caller in (ALEX, ROSA, JORDAN, CASEY):
            flow = line.call(caller)
            ids = [s.prompt_id for s in _said(flow.steps[0])]
            assert ids[:3] == ["greeting.welcome", "common.tips", "identify.found"]
            assert ids[3:] == ["language.option"]
            values = {v for s in _said(flow.steps[0]) for v in s.params.values()}
            assert values <= {"3"} | {speech.digits(n) for n in ("1234", "3456", "5678", "7890")}


def test_every_question_can_be_answered_while_it_is_spoken(tmp_path: Path) -> None:
    """Barge-in: each question's speech is inside its <Gather>, so keys cut it short."""
    from ivr.calls.twiml import TwimlBuilder

    with demo_line(tmp_path) as line:
        builder = TwimlBuilder(line.catalog, "en-US", "", "Default")
        for caller, keys in PATHS.values():
            flow = line.call(caller)
            for keys_now in keys:
                step = flow.steps[-1]
                if isinstance(step, Ask):
                    xml = str(builder.build(step))
                    before, _, _ = xml.partition("<Gather")
                    assert "<Say" not in before and "<Play" not in before, xml
                    assert xml.index("</Gather>") < xml.index("<Redirect"), xml
                flow.press(keys_now)
