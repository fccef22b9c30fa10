"""A flow harness: the call machine driven by plain function calls, without HTTP or TwiML.

    with demo_line(tmp_path) as line:
        flow = line.call()                  # the first answer: the account found, in English
        flow.press(YES, "60614")            # one answer per key group, as a <Gather> posts
        assert flow.state == "main_menu"
        assert "menu.main" in flow.heard()

Each answer runs in its own database session, as a webhook does, on a real SQLite database
loaded with the demo accounts and the real prompt catalog. Named keys (``PAY``, ``FULL``...)
come from the state declarations, so a call script reads as what the caller chooses.
"""

from __future__ import annotations

import io
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from sqlalchemy.orm import Session

from ivr.accounts.importer import import_accounts
from ivr.calls import machine
from ivr.calls.context import CallContext
from ivr.calls.menu import AGENT_KEY, REPEAT_KEY
from ivr.calls.states import STATES
from ivr.calls.steps import Ask, Step
from ivr.config import AppConfig, load_config
from ivr.db import Database
from ivr.models import CallSession
from ivr.prompts.catalog import Catalog, load_catalog
from ivr.prompts.settings import LineSettings
from ivr.simulator.demo import demo_file
from tests.conftest import OPEN_TIME, REPO, TOKEN

PROMPTS = REPO / "prompts"
_SETTINGS = load_catalog(PROMPTS).settings


def key(state: str, name: str, settings: LineSettings = _SETTINGS) -> str:
    """The key of a declared choice; KeyError when the state declares no such choice."""
    for choice in STATES[state].all_choices(settings):
        if choice.name == name:
            return choice.key
    raise KeyError(f"{state} has no choice {name!r}")


# Named keys for call scripts, from the declarations (the shipped settings for languages).
EN, ES = key("language", "en-US"), key("language", "es-US")
YES, OTHER_ACCOUNT = key("confirm_account", "yes"), key("confirm_account", "other")
# A caller whose account has its language on file skips the language menu; this key at the
# account confirmation switches to the other language.
SWITCH_LANGUAGE = key("confirm_account", "language")
PAY, RECENT, SUMMARY = (key("main_menu", n) for n in ("pay", "recent", "summary"))
# Where the balance is the one amount to offer, PAY pays it; PAY_OTHER types another.
PAY_OTHER = key("main_menu", "other_amount")
FULL, AVOID_DISCONNECTION, OTHER_AMOUNT = (
    key("amount_menu", n) for n in ("full", "disconnect", "other"))
CONFIRM, CHANGE = key("amount_confirm", "confirm"), key("amount_confirm", "change")
CARD, BANK = key("method", "card"), key("method", "bank")
CHECKING, SAVINGS = key("bank_type", "checking"), key("bank_type", "savings")
ACCEPT_FEE, DECLINE_FEE = key("fee_accept", "accept"), key("fee_accept", "decline")
AUTHORIZE, REFUSE = key("ach_authorize", "authorize"), key("ach_authorize", "cancel")
CONTINUE, CANCEL = key("final_confirm", "continue"), key("final_confirm", "cancel")
HEAR_AGAIN, MAIN_MENU, TEXT_RECEIPT = (key("receipt", n) for n in ("again", "menu", "text"))
RETRY = key("pay_failed", "retry")
# Several accounts on the calling number: pick(1) is the first listed (by account number).
PICK_OTHER, ANOTHER_ACCOUNT = key("pick_account", "other"), key("receipt", "another")


def pick(n: int) -> str:
    """The pick-list key of the ``n``-th account on the calling number (1-based)."""
    return key("pick_account", f"account_{n}")


REPEAT, AGENT = REPEAT_KEY, AGENT_KEY
SILENCE = "-"  # what the simulator's scripts (tests.conftest.call) take for silence


@dataclass
class Line:
    """A line without a web app: its database, catalog, configuration and clock."""

    database: Database
    catalog: Catalog
    config: AppConfig
    now: datetime = OPEN_TIME

    def call(self, from_number: str = "+15555550123") -> Flow:
        """Start a call (its first answer is in ``steps``)."""
        flow = Flow(self, "CA" + uuid.uuid4().hex)
        with self.database.session() as db:
            call = CallSession(call_sid=flow.call_sid, from_number=from_number, to_number="",
                               language=self.catalog.settings.default_language,
                               state="language", prompts_version=self.catalog.version[:16],
                               started_at=self.now)
            db.add(call)
            db.flush()
            flow.steps.append(machine.start(self.context(db, call)))
        return flow

    def context(self, db: Session, call: CallSession) -> CallContext:
        """What a webhook would give the machine for this call."""
        return CallContext(handle=db, call=call, catalog=self.catalog, config=self.config,
                           now=self.now)


@dataclass
class Flow:
    """One call, answered step by step."""

    line: Line
    call_sid: str
    steps: list[Step] = field(default_factory=list)

    def press(self, *answers: str) -> Step:
        """Answer the current question once per argument ("-" is silence); the last step."""
        for answer in answers:
            last = self.steps[-1]
            assert isinstance(last, Ask), f"the call is not asking anything: {last}"
            with self.line.database.session() as db:
                call = db.get(CallSession, self.call_sid)
                assert call is not None
                keys = "" if answer == SILENCE else answer
                self.steps.append(
                    machine.advance(self.line.context(db, call), last.state, keys))
        return self.steps[-1]

    @property
    def state(self) -> str:
        """The state the call is in now."""
        return self.session().state

    def session(self) -> CallSession:
        """The stored call as it is now."""
        with self.line.database.session() as db:
            call = db.get(CallSession, self.call_sid)
            assert call is not None
            db.expunge(call)
            return call

    def heard(self, step: int = -1) -> list[str]:
        """The prompt ids of a step's speech (the last step by default)."""
        return [s.prompt_id for s in getattr(self.steps[step], "speech", ())]


@contextmanager
def demo_line(tmp_path: Path, prompts: Path = PROMPTS, now: datetime = OPEN_TIME,
              **config: str) -> Iterator[Line]:
    """A line on a fresh SQLite database with the demo accounts, closed afterwards."""
    url = f"sqlite:///{tmp_path / 'flow.sqlite3'}"
    database = Database(url)
    try:
        database.upgrade()
        report = import_accounts(database, io.BytesIO(demo_file(now.date())), "demo",
                                 pin_key="test-pin-key")
        assert report.applied, report.lines()
        settings = load_config({"database_url": url, "twilio_auth_token": TOKEN,
                                "prompts_dir": str(prompts), "pin_key": "test-pin-key",
                                **config})
        yield Line(database, load_catalog(prompts), settings, now)
    finally:
        database.dispose()
