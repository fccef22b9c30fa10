"""Menus as data: the declarations, the machine's dispatch through them (driven by the flow
harness, no HTTP), the wording check, and what derives from the registry (metrics, docs)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from ivr import metrics
from ivr.calls import diagram
from ivr.calls.menu import ENDED, GLOBAL_KEYS, PAYING, Event
from ivr.calls.states import STATES
from ivr.calls.steps import Ask, PayCapture
from ivr.calls.wording import key_problems, named_keys
from ivr.models import Account
from ivr.prompts.catalog import check_catalog, load_catalog
from ivr.prompts.ids import PROMPT_PARAMS
from tests.conftest import REPO
from tests.flow import (
    AVOID_DISCONNECTION,
    CARD,
    EN,
    ES,
    PAY,
    RECENT,
    YES,
    demo_line,
    key,
)

PAST_DUE = "4401005678"  # ZIP 60615, disconnection pending, 312.80 due, 187.50 to avoid it

# --- the declarations -------------------------------------------------------------------------


def test_declarations_are_consistent() -> None:
    settings = load_catalog(REPO / "prompts").settings
    for name, state in STATES.items():
        assert state.name == name
        assert (state.handle is None) != (not state.choices and state.choices_for is None), name
        keys = [c.key for c in state.all_choices(settings)]
        assert len(keys) == len(set(keys)), name
        assert not set(keys) & GLOBAL_KEYS, name  # 9 and 0 belong to the machine
        # One phone key each: a digit, or * (a one-key <Gather> posts it; # ends the entry).
        assert all(len(k) == 1 and (k.isdigit() or k == "*") for k in keys), name
        for choice in state.choices:
            if isinstance(choice.then, str):
                assert choice.then in STATES, (name, choice.name)
        assert state.question_prompts, name
        assert set(state.question_prompts) <= set(PROMPT_PARAMS), name


def test_every_state_named_in_the_code_is_registered() -> None:
    named: set[str] = set()
    for path in (REPO / "ivr" / "calls").rglob("*.py"):
        named.update(re.findall(r'Go\("([a-z_]+)"', path.read_text(encoding="utf-8")))
    assert named and named <= set(STATES)


def test_language_keys_follow_the_configured_languages(tmp_path: Path) -> None:
    assert (EN, ES) == ("1", "2")
    prompts = tmp_path / "prompts"
    shutil.copytree(REPO / "prompts", prompts)
    settings = prompts / "settings.toml"
    settings.write_text(settings.read_text().replace(
        'languages = ["en-US", "es-US"]', 'languages = ["es-US", "en-US"]'))
    with demo_line(tmp_path, prompts) as line:
        assert key("language", "es-US", line.catalog.settings) == "1"
        flow = line.call("+15555550199")  # a number on no account: the language menu
        first = flow.steps[0]
        assert isinstance(first, Ask)
        assert [(s.prompt_id, s.params.get("key"), s.lang) for s in first.speech[1:]] == [
            ("language.option", "1", "es-US"), ("language.option", "2", "en-US")]
        flow.press("1")
        assert flow.session().language == "es-US"


# --- the machine dispatching through the declarations ------------------------------------------


def test_a_paid_call_through_the_harness_reaches_pay(tmp_path: Path) -> None:
    with demo_line(tmp_path) as line:
        flow = line.call()
        flow.press(YES, "60614")
        assert flow.state == "main_menu" and "menu.pay_full" in flow.heard()
        step = flow.press(PAY, CARD)
        assert isinstance(step, PayCapture)
        assert (step.charge_cents, step.method) == (12345, "credit-card")
        assert flow.state == PAYING


def test_pay_is_not_a_key_when_the_account_cannot_pay(tmp_path: Path) -> None:
    with demo_line(tmp_path) as line:
        with line.database.session() as db:
            account = db.query(Account).filter_by(account_number="4401001234").one()
            account.payment_allowed = False
        flow = line.call()
        flow.press(YES, "60614")
        assert flow.heard()[-1] == "menu.main_no_pay"
        flow.press(PAY)
        assert flow.state == "main_menu"
        assert flow.heard()[0] == "common.no_match" and flow.session().tries == 1
        flow.press(RECENT)
        assert "recent.payment" in flow.heard() or "recent.none" in flow.heard()
        assert flow.session().tries == 0


def test_the_disconnection_amount_is_offered_only_when_pending(tmp_path: Path) -> None:
    with demo_line(tmp_path) as line:
        current = line.call()
        current.press(YES, "60614")
        # Nothing but the balance to offer: it is offered at the main menu, 1 pays it.
        assert current.heard()[-1] == "menu.pay_full"
        current.press(PAY)
        assert current.state == "method" and current.session().amount_cents == 12345

        pending = line.call(from_number="+15555550124")
        pending.press(YES, "60615")
        assert pending.heard()[-2:] == ["menu.main", "menu.arrange"]
        pending.press(PAY)
        assert pending.heard() == [
            "amount.menu_full", "amount.menu_disconnect", "amount.menu_other"]
        pending.press(AVOID_DISCONNECTION)
        # Chosen from the menu: no read-back, the method menu says the amount.
        assert pending.state == "method" and pending.heard() == ["method.menu_pay"]
        assert pending.session().amount_cents == 18750


# --- the wording names only declared keys -----------------------------------------------------


def test_named_keys_are_digits_standing_alone() -> None:
    assert named_keys("To pay, press 1. Recent payments, 2. A representative, 0.") == [
        "1", "2", "0"]
    assert named_keys("oprima 3.") == ["3"]
    assert named_keys('Code<break time="300ms"/> {last4}, $1.50 or 5000 or 12th.') == []


def _texts(**by_id: dict[str, str]) -> dict[str, dict[str, dict[str, str]]]:
    return {"en-US": by_id}


def test_wording_is_checked_against_the_keys_of_its_state() -> None:
    settings = load_catalog(REPO / "prompts").settings
    assert key_problems(_texts(**{"menu.main": {"say": "press 1, 2, 3, 9 or 0"}}), settings) == []
    [problem] = key_problems(_texts(**{"receipt.menu": {"nomatch": "Main menu, press 5."}}),
                             settings)
    assert problem.startswith("en-US.toml: prompt 'receipt.menu' (nomatch) names key 5")
    # One key per configured language: a third is not accepted with two languages.
    assert key_problems(_texts(**{"language.option": {"say": "press 3"}}), settings)
    # Free entry is not a menu: digits there are examples ("5 0 0 0, pound").
    assert key_problems(_texts(**{"amount.enter": {"say": "enter 5 0 0 0"}}), settings) == []


@pytest.mark.parametrize(("file", "old", "new", "problem"), [
    ("en-US.toml", "Recent payments, 2. Account details, 3.",
     "Recent payments, 2. Account details, 8.",
     "en-US.toml: prompt 'menu.main' (say) names key 8"),
    ("en-US.toml", "Recent payments, 2. Details", "Recent payments, 8. Details",
     "en-US.toml: prompt 'menu.pay_full' (say) names key 8"),
    ("es-US.toml", "Para cancelar, oprima 2.\"\n\n[pay.intro_card]",
     "Para cancelar, oprima 7.\"\n\n[pay.intro_card]",
     "es-US.toml: prompt 'confirm.card_with_fee' (say) names key 7"),
])
def test_prompts_check_refuses_wording_naming_an_undeclared_key(
        tmp_path: Path, file: str, old: str, new: str, problem: str) -> None:
    prompts = tmp_path / "prompts"
    shutil.copytree(REPO / "prompts", prompts)
    assert check_catalog(prompts, PROMPT_PARAMS) == []
    path = prompts / file
    text = path.read_text(encoding="utf-8")
    assert old in text
    path.write_text(text.replace(old, new, 1), encoding="utf-8")
    problems = check_catalog(prompts, PROMPT_PARAMS)
    assert len(problems) == 1 and problems[0].startswith(problem), problems


# --- what derives from the registry -----------------------------------------------------------


def test_metrics_label_every_state_and_event() -> None:
    for name in (*STATES, PAYING, ENDED):
        before = metrics.CALL_EVENTS.labels(name, "enter")._value.get()
        metrics.observe_call_event(name, Event.ENTER, "")
        assert metrics.CALL_EVENTS.labels(name, "enter")._value.get() == before + 1
    for event in Event:
        before = metrics.CALL_EVENTS.labels("verify", str(event))._value.get()
        metrics.observe_call_event("verify", event, "")
        assert metrics.CALL_EVENTS.labels("verify", str(event))._value.get() == before + 1


def test_the_keypad_map_in_the_docs_is_current() -> None:
    doc = diagram.DOC.read_text(encoding="utf-8")
    assert diagram.current(doc) == diagram.render(), (
        "docs/call-flow.md is stale: run python -m ivr.calls.diagram --write")
    for name in STATES:
        assert f"| `{name}` |" in diagram.render()


def test_prompts_a_choice_says_it_speaks_are_required(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import ivr.calls.wording
    from ivr.prompts.ids import _LISTED, _CodePrompts

    assert dict(PROMPT_PARAMS) == {**ivr.calls.wording.declared_prompts(), **_LISTED}
    prompts = tmp_path / "prompts"
    shutil.copytree(REPO / "prompts", prompts)
    monkeypatch.setattr(ivr.calls.wording, "declared_prompts",
                        lambda: {"menu.made_up": ("date",), "summary.usage": ("quantity",)})
    code = _CodePrompts(_LISTED)  # read afresh (PROMPT_PARAMS reads the menus once)
    assert code["menu.made_up"] == ("date",)
    problems = check_catalog(prompts, code)
    assert problems == ["required prompt 'menu.made_up' is missing from every language file"]
    # The list in ivr.prompts.ids wins where both name a prompt: {unit} is still supplied.
    assert code["summary.usage"] == ("quantity", "unit")
