"""Who is on the other end of the line: a script of keys, or a person at a terminal."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Protocol

from ivr.simulator.connector import (
    CLOSED_BANK_ACCOUNT,
    DECLINED_CARD,
    DEFAULT_BANK_ACCOUNT,
    DEFAULT_CARD,
)
from ivr.simulator.transcript import format_event

DTMF_KEYS = frozenset("0123456789*#")
SILENCE_TOKENS = frozenset({"", "-", "_"})


class Hangup(Exception):
    """Raised by a Caller to hang up."""


class Caller(Protocol):
    """The person on the phone.

    A caller may also define ``hear(event)``; run_call then hands it every transcript event
    as it happens (InteractiveCaller uses this to print the call live).
    """

    def press(self, spoken: list[str], gather: Mapping[str, str]) -> str | None:
        """Keys typed at a <Gather> (None = silence); raise Hangup to hang up."""
        ...

    def card(self, pay: Mapping[str, str], prompts: list[str]) -> str:
        """A card or bank account number, "*" to cancel, or "hangup"."""
        ...


def check_keys(keys: str) -> None:
    """Refuse anything but phone keys (0-9, * and #)."""
    bad = set(keys) - DTMF_KEYS
    if bad:
        raise ValueError(f"not phone keys: {''.join(sorted(bad))!r} in {keys!r}")


class ScriptedCaller:
    """Presses keys from a script: one token per <Gather>, one card per <Pay>."""

    def __init__(self, presses: Sequence[str],
                 cards: Sequence[str] = (DEFAULT_CARD,),
                 bank_accounts: Sequence[str] = (DEFAULT_BANK_ACCOUNT,)) -> None:
        if isinstance(presses, str):
            # A bare string would be read one key per gather, which is never what was meant.
            raise TypeError("presses must be a sequence of tokens, e.g. ['1', '60614#']")
        if not cards or not bank_accounts:
            raise ValueError("cards and bank_accounts need at least one entry")
        for keys in presses:
            if keys not in SILENCE_TOKENS and keys != "hangup":
                check_keys(keys)
        self.presses = list(presses)
        self.cards = list(cards)
        self.bank_accounts = list(bank_accounts)
        self.used = 0
        self.pays = {"credit-card": 0, "ach-debit": 0}
        self.ran_out = False

    def press(self, spoken: list[str], gather: Mapping[str, str]) -> str | None:
        """The next scripted token; hangs up when the script is used up."""
        if self.used >= len(self.presses):
            self.ran_out = True
            raise Hangup("the script ran out of presses")
        keys = self.presses[self.used]
        self.used += 1
        if keys == "hangup":
            raise Hangup("scripted hang-up")
        return None if keys in SILENCE_TOKENS else keys

    def card(self, pay: Mapping[str, str], prompts: list[str]) -> str:
        """The next card (or bank account for ACH); the last one repeats."""
        method = "ach-debit" if pay.get("paymentMethod") == "ach-debit" else "credit-card"
        numbers = self.bank_accounts if method == "ach-debit" else self.cards
        index = min(self.pays[method], len(numbers) - 1)
        self.pays[method] += 1
        return numbers[index]


# Shortcuts InteractiveCaller accepts at <Pay>, so test numbers never need printing in full.
_CARD_SHORTCUTS = {
    "": DEFAULT_CARD,
    "visa": DEFAULT_CARD,
    "mc": "5555555555554444",
    "mastercard": "5555555555554444",
    "amex": "378282246310005",
    "discover": "6011111111111117",
    "declined": DECLINED_CARD,
    "bad": "4111111111111112",
}
_ACCOUNT_SHORTCUTS = {"": DEFAULT_BANK_ACCOUNT, "closed": CLOSED_BANK_ACCOUNT, "bad": "11"}


class InteractiveCaller:
    """A person at a terminal: prints the call as it goes and reads keys."""

    def __init__(self, input_fn: Callable[[str], str] = input,
                 output_fn: Callable[[str], None] = print) -> None:
        self.input_fn = input_fn
        self.output_fn = output_fn
        self._heard = False

    def hear(self, event: Mapping[str, object]) -> None:
        """Print one transcript event (except the caller's own keys)."""
        self._heard = True
        if event.get("event") in ("press", "silence"):
            return  # the person just typed them
        line = format_event(event)
        if line:
            self.output_fn(line)

    def _ask(self, prompt: str) -> str | None:
        try:
            return self.input_fn(prompt).strip()
        except EOFError:
            return None

    def press(self, spoken: list[str], gather: Mapping[str, str]) -> str | None:
        """Ask for keys: blank = silence, h = hang up, end of input = hang up."""
        if not self._heard:
            # Used without run_call's live events: show what was said first.
            for text in spoken:
                self.output_fn(f"IVR: {text}")
        while True:
            raw = self._ask("keys> ")
            if raw is None or raw.lower() in ("h", "hangup"):
                raise Hangup("caller hung up")
            keys = raw.replace(" ", "")
            if keys in SILENCE_TOKENS:
                return None
            if set(keys) <= DTMF_KEYS:
                return keys
            self.output_fn("Use the keys 0-9, * and # (blank = silence, h = hang up).")

    def card(self, pay: Mapping[str, str], prompts: list[str]) -> str:
        """Explain the test numbers and ask for one."""
        if not self._heard:
            for text in prompts:
                self.output_fn(f"IVR: {text}")
        ach = pay.get("paymentMethod") == "ach-debit"
        if ach:
            shortcuts = _ACCOUNT_SHORTCUTS
            self.output_fn(
                "[Payment, test mode] Enter a bank account number. Enter alone = a test "
                "account ending 89 that succeeds; 'closed' = a closed account; 'bad' = an "
                "invalid number; '*' = cancel; 'h' = hang up. The routing number is filled in.")
            prompt = "account> "
        else:
            shortcuts = _CARD_SHORTCUTS
            self.output_fn(
                "[Payment, test mode] Enter a card number. Enter alone = Visa test card "
                "xxxx1111; 'mc' = Mastercard xxxx4444; 'amex' = Amex xxxx0005; 'discover' = "
                "xxxx1117; 'declined' = a declined card; 'bad' = an invalid number; '*' = "
                "cancel; 'h' = hang up. Expiry, security code and ZIP are filled in.")
            prompt = "card> "
        while True:
            raw = self._ask(prompt)
            if raw is None or raw.lower() in ("h", "hangup"):
                return "hangup"
            entry = re.sub(r"[\s-]", "", raw)
            if entry.lower() in shortcuts:
                return shortcuts[entry.lower()]
            if entry == "*" or entry.isdigit():
                return entry
            self.output_fn("Type digits only, a shortcut, '*' or 'h'.")
