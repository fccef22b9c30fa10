"""How a state of the call is declared: its question, its choices, or its free entry.

A menu state lists its choices as data (key, name, the prompt that announces it, when it is
offered, what happens next), the way FreeSWITCH menus list ``<entry digits=...>``; the
machine parses the key and dispatches. Only free entry (account number, ZIP or PIN, an
amount) keeps a handler. The same declarations feed the registry in ``ivr.calls.states``,
metrics labels, the console's prompt usage, ``ivr prompts check`` and docs/call-flow.md.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from ivr.calls.context import CallContext
from ivr.calls.parsing import parse_choice
from ivr.calls.steps import Go, Outcome, Retry, Speech
from ivr.db_driver import ReadAhead
from ivr.prompts.settings import LineSettings

SpeechList = tuple[Speech, ...]

# Keys that work in every state (the machine handles them): repeat and representative.
REPEAT_KEY = "9"
AGENT_KEY = "0"
GLOBAL_KEYS = frozenset({REPEAT_KEY, AGENT_KEY})

# States outside the menu system: waiting on <Pay>, or finished.
PAYING = "paying"
ENDED = "ended"


class Event(StrEnum):
    """What the machine records about a call step (metrics labels and the funnel read these)."""

    ENTER = "enter"
    OK = "ok"
    NOINPUT = "noinput"
    NOMATCH = "nomatch"
    REPEAT = "repeat"
    AGENT = "agent"
    MAX_TRIES = "max_tries"
    MORE_TIME = "more_time"
    STALE = "stale"
    DEFAULT = "default"
    TRANSFER = "transfer"
    TRANSFER_DONE = "transfer_done"
    TRANSFER_FAILED = "transfer_failed"
    PAY_START = "pay_start"
    PAY_RESULT = "pay_result"
    PAY_REPEAT = "pay_repeat"
    PAY_UNEXPECTED = "pay_unexpected"
    GOODBYE = "goodbye"
    CALL_END = "call_end"
    DEADLINE = "deadline"


Next = str | Callable[[CallContext], Outcome]


@dataclass(frozen=True)
class Choice:
    """One key of a menu.

    ``then`` is a state name or a function returning the outcome. ``prompt`` announces the
    choice; when a state has no ``question`` of its own, its question is the prompts of the
    choices offered, in order, with ``params``. ``when`` offers the choice only sometimes.
    ``says`` names the prompts choosing it speaks, each with the values it is given: every
    language must have them (`ivr prompts check`), as for ``ivr.prompts.ids``.
    """

    key: str
    name: str
    then: Next
    prompt: str | None = None
    params: Callable[[CallContext], Mapping[str, str]] | None = None
    when: Callable[[CallContext], bool] | None = None
    says: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def offered(self, ctx: CallContext) -> bool:
        """Whether this call is offered the choice now."""
        return self.when is None or self.when(ctx)

    def go(self, ctx: CallContext) -> Outcome:
        """What choosing it does."""
        return Go(self.then) if isinstance(self.then, str) else self.then(ctx)


def _one_key(_ctx: CallContext) -> int | None:
    return 1


@dataclass(frozen=True)
class State:
    """One named state of the call: a menu (``choices``) or free entry (``handle``).

    ``asks`` names the prompts of its question (every form it can take); ``question`` builds
    what is said on entering it (and on 9, repeat), by default from the choices offered or
    else the first of ``asks``. ``choices_for`` computes choices from the line settings where
    they depend on them (one key per configured language).
    """

    name: str
    asks: tuple[str, ...] = ()
    choices: tuple[Choice, ...] = ()
    choices_for: Callable[[LineSettings], tuple[Choice, ...]] | None = None
    question: Callable[[CallContext], SpeechList] | None = None
    handle: Callable[[CallContext, str], Outcome] | None = None
    num_digits: Callable[[CallContext], int | None] = _one_key
    # Sensitive states never have their keys logged or stored (PIN, ZIP, account number).
    sensitive: bool = False
    # What silence means where it is not a failure (the language menu defaults to English).
    on_silence: Callable[[CallContext], Outcome] | None = None
    # The reads its answer will ask (call SID, settings, now), sent with the call's load.
    ahead: Callable[[str, LineSettings, datetime], tuple[ReadAhead, ...]] | None = None

    def all_choices(self, settings: LineSettings) -> tuple[Choice, ...]:
        """Every choice the state declares for a line, offered or not."""
        return self.choices_for(settings) if self.choices_for else self.choices

    def offered(self, ctx: CallContext) -> tuple[Choice, ...]:
        """The choices this call is offered now."""
        return tuple(c for c in self.all_choices(ctx.settings) if c.offered(ctx))

    def prompt(self, ctx: CallContext) -> SpeechList:
        """What the caller hears on entering the state."""
        if self.question is not None:
            return self.question(ctx)
        announced = tuple(
            Speech(c.prompt, c.params(ctx) if c.params else {})
            for c in self.offered(ctx) if c.prompt)
        return announced or tuple(Speech(pid) for pid in self.asks[:1])

    def answer(self, ctx: CallContext, keys: str) -> Outcome:
        """The outcome of the caller's keys (never empty, never the global 9 or 0)."""
        if self.handle is not None:
            return self.handle(ctx, keys)
        offered = self.offered(ctx)
        key = parse_choice(keys, "".join(c.key for c in offered))
        chosen = next((c for c in offered if c.key == key), None)
        return Retry() if chosen is None else chosen.go(ctx)

    @property
    def question_prompts(self) -> tuple[str, ...]:
        """Every prompt that asks this state's question or announces one of its choices."""
        ids = [*self.asks, *(c.prompt for c in self.choices if c.prompt)]
        return tuple(dict.fromkeys(ids))


def say(prompt_id: str, **params: str) -> Speech:
    """A prompt with its values."""
    return Speech(prompt_id, params)


def until_pound(_ctx: CallContext) -> int | None:
    """Keys are collected until # (or the timeout), not counted."""
    return None
