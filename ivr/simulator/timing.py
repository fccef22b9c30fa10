"""How long a caller listens: the standard calls played through the simulator, timed per state.

Each call runs on a throwaway SQLite database loaded with the demo accounts. What the line
says is timed with espeak-ng at ``ivr.prompts.spoken.RATE_WPM`` (real voices differ: the
figure is for comparing wordings, not a promise of call length). The answer-to-confirmation
estimate adds ``TURN_SECONDS`` (plus ``KEY_SECONDS`` a key after the first) for each question
answered, and ``ENTRY_SECONDS`` for typing card or bank details inside <Pay>; it stops at the
last confirmation number said (what the caller hears afterwards is counted apart).
"""

from __future__ import annotations

import argparse
import json
import re
import secrets
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

from ivr.prompts.spoken import SpokenLengths, words
from ivr.simulator.call import run_call
from ivr.simulator.callers import ScriptedCaller
from ivr.simulator.demo import DEMO_CALLER, DEMO_LINE, DEMO_SPANISH_CALLER, seed

# Allowances besides speech: deciding on and pressing one answer, each further key typed,
# and typing card (number, expiry, security code, ZIP) or bank details (routing number,
# account number twice) inside <Pay>.
TURN_SECONDS = 3.0
KEY_SECONDS = 0.3
ENTRY_SECONDS = {"credit-card": 30.0, "ach-debit": 40.0}
PAYING = "paying"
# A confirmation number as the line reads it: one character at a time, comma-separated.
_SPELLED_CODE = re.compile(r"\b(?:[A-Z0-9], ){5,}[A-Z0-9]\b")


@dataclass(frozen=True)
class StandardCall:
    """A call every wording change is measured on: who calls, and what they press."""

    name: str
    title: str
    from_number: str
    presses: tuple[str, ...]


# The keys follow the shipped flow; a call that no longer reaches its confirmation number
# fails the benchmark (and its smoke test) rather than timing something else.
STANDARD_CALLS: tuple[StandardCall, ...] = (
    StandardCall("happy", "caller ID, ZIP, full balance, card", DEMO_CALLER,
                 ("1", "60614", "1", "1")),
    StandardCall("typed", "typed account, ZIP, other amount, bank", "+15555550199",
                 ("1", "4402000011#", "60620", "5", "2000#", "1", "2", "1", "1")),
    StandardCall("spanish", "Spanish: caller ID, ZIP, full balance, card",
                 DEMO_SPANISH_CALLER, ("1", "60617", "1", "1")),
    StandardCall("arrangement", "more time: a down payment by card, the rest in 3",
                 "+15555550124", ("1", "60615", "4", "2", "1", "1")),
)
HAPPY_PATH = STANDARD_CALLS[0]


@dataclass
class Said:
    """One <Say>, timed, and the state whose question (or <Pay>) it led to."""

    text: str
    lang: str
    seconds: float = 0.0
    state: str = ""


@dataclass
class StateTime:
    """What one state cost the caller, to the confirmation number."""

    state: str
    words: int = 0
    seconds: float = 0.0
    turns: int = 0
    keys: int = 0


@dataclass
class CallTime:
    """One standard call, timed."""

    call: StandardCall
    states: list[StateTime] = field(default_factory=list)
    entry_seconds: float = 0.0
    after_seconds: float = 0.0  # speech after the confirmation number (the last menu)
    reached_confirmation: bool = False

    @property
    def words(self) -> int:
        """Words spoken to the confirmation number."""
        return sum(s.words for s in self.states)

    @property
    def speech_seconds(self) -> float:
        """Seconds of speech to the confirmation number."""
        return round(sum(s.seconds for s in self.states), 1)

    @property
    def turns(self) -> int:
        """Questions answered with keys."""
        return sum(s.turns for s in self.states)

    @property
    def total_seconds(self) -> float:
        """Answer to confirmation number: speech, keypress turns and detail entry."""
        keys = sum(s.turns * TURN_SECONDS + max(0, s.keys - s.turns) * KEY_SECONDS
                   for s in self.states)
        return round(self.speech_seconds + keys + self.entry_seconds, 1)


class _TimingCaller:
    """A scripted caller that also notes each <Say> and which question it led to."""

    def __init__(self, presses: tuple[str, ...]) -> None:
        self.script = ScriptedCaller(list(presses))
        self.said: list[Said] = []
        self.turns: list[tuple[str, str, int]] = []  # (state, keys, index into said)
        self.entries: list[tuple[str, int]] = []  # (<Pay> method, index into said)

    def hear(self, event: dict[str, object]) -> None:
        if event.get("event") == "say":
            self.said.append(Said(str(event["text"]), str(event.get("language") or "en-US")))
        elif event.get("event") == "pay":
            self._attribute(PAYING)  # the <Pay> prompts after the card number

    def _attribute(self, state: str) -> None:
        for item in self.said:
            if not item.state:
                item.state = state

    def press(self, spoken: list[str], gather: Mapping[str, str]) -> str | None:
        state = (gather.get("action") or "").rstrip("/").rsplit("/", 1)[-1]
        self._attribute(state)
        keys = self.script.press(spoken, gather)
        self.turns.append((state, keys or "", len(self.said)))
        return keys

    def card(self, pay: Mapping[str, str], prompts: list[str]) -> str:
        self._attribute(PAYING)
        self.entries.append((pay.get("paymentMethod", "credit-card"), len(self.said)))
        return self.script.card(pay, prompts)


def _tally(call: StandardCall, caller: _TimingCaller, lengths: SpokenLengths) -> CallTime:
    caller._attribute("ended")
    found = lengths.many((escape(s.text), s.lang) for s in caller.said)
    for item, seconds in zip(caller.said, found, strict=True):
        item.seconds = seconds
    confirmed = [i for i, s in enumerate(caller.said) if _SPELLED_CODE.search(s.text)]
    end = confirmed[-1] + 1 if confirmed else len(caller.said)
    timed = CallTime(call, reached_confirmation=bool(confirmed))
    per_state: dict[str, StateTime] = {}
    for item in caller.said[:end]:
        row = per_state.setdefault(item.state, StateTime(item.state))
        row.words += words(item.text)
        row.seconds = round(row.seconds + item.seconds, 2)
    for state, keys, index in caller.turns:
        if index <= end:
            row = per_state.setdefault(state, StateTime(state))
            row.turns += 1
            row.keys += len(keys)
    timed.states = list(per_state.values())
    timed.entry_seconds = sum(ENTRY_SECONDS.get(method, 30.0)
                              for method, index in caller.entries if index <= end)
    timed.after_seconds = round(sum(s.seconds for s in caller.said[end:]), 1)
    return timed


def time_calls(calls: tuple[StandardCall, ...] = STANDARD_CALLS, *,
               prompts_dir: Path | None = None,
               lengths: SpokenLengths | None = None) -> list[CallTime]:
    """Play ``calls`` on a fresh demo line (in process, test payments) and time each.

    The line is an app of its own on a throwaway database, with throwaway keys; run it in
    a process of its own next to a running line (see ``main``), whose metrics it would count.
    """
    from ivr.simulator.transport import FlaskTransport
    from ivr.web.app import create_app, get_config, get_database

    lengths = lengths or SpokenLengths()
    token = secrets.token_hex(16)
    with tempfile.TemporaryDirectory(prefix="ivr-call-time-") as folder:
        overrides: dict[str, Any] = {
            "twilio_auth_token": token, "allow_unsigned": False, "log_level": "WARNING",
            "database_url": f"sqlite:///{Path(folder) / 'timing.sqlite3'}",
            "pin_key": secrets.token_hex(16), "secret_key": secrets.token_hex(32),
            "accounting": "none", "simulated": True}
        if prompts_dir is not None:
            overrides["prompts_dir"] = prompts_dir
        app = create_app(overrides)
        database = get_database(app)
        database.upgrade()
        config = get_config(app)
        seed(database, datetime.now(UTC).date(), config.pin_key)
        base_url = config.base_url or "http://localhost"
        results = []
        for call in calls:
            caller = _TimingCaller(call.presses)
            run_call(FlaskTransport(app, token, base_url=base_url), caller,
                     base_url=base_url, from_number=call.from_number, to_number=DEMO_LINE)
            results.append(_tally(call, caller, lengths))
        database.dispose()
    return results


def summary(timed: CallTime) -> dict[str, object]:
    """A timed call's totals, as plain values."""
    return {"call": timed.call.name, "words": timed.words, "speech_seconds": timed.speech_seconds,
            "turns": timed.turns, "total_seconds": timed.total_seconds,
            "reached_confirmation": timed.reached_confirmation}


def main(argv: list[str] | None = None) -> int:
    """`python -m ivr.simulator.timing`: the standard calls' totals as JSON lines.

    A process of its own, so the simulated calls' webhooks never reach a running line's
    metrics or logs (the ops console runs it this way).
    """
    parser = argparse.ArgumentParser(prog="python -m ivr.simulator.timing")
    parser.add_argument("--call", action="append", choices=[c.name for c in STANDARD_CALLS],
                        help="a standard call (default: all)")
    parser.add_argument("--prompts", type=Path, help="a prompts folder")
    parser.add_argument("--cache", type=Path, help="spoken lengths already measured")
    args = parser.parse_args(argv)
    calls = tuple(c for c in STANDARD_CALLS if not args.call or c.name in args.call)
    for timed in time_calls(calls, prompts_dir=args.prompts,
                            lengths=SpokenLengths(args.cache)):
        print(json.dumps(summary(timed)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
