"""Several accounts on the calling number: the caller picks one by its last four digits.

Before verification the list says nothing but the last four digits of each account number;
the account picked is then verified on its own (``start_verification``: the ZIP or PIN, and
the lockout of that account). Keys run 1 to 8 in account-number order: 9 and 0 are the
repeat and representative keys of every menu, so a number on more accounts than keys goes
to account entry instead. ``*`` asks for a different account number.
"""

from __future__ import annotations

from functools import partial

from connectors.phones import normalize_e164
from ivr.accounts import cache as accounts
from ivr.calls.account_switch import switch_account
from ivr.calls.context import CallContext
from ivr.calls.menu import GLOBAL_KEYS, Choice, SpeechList, State, say
from ivr.calls.states.verify import start_verification
from ivr.calls.steps import Go, Outcome, Retry, Speech
from ivr.models import Account
from ivr.prompts import speech

# One key per account listed: the digits no menu gives to the machine (1 to 8).
PICK_KEYS = tuple(d for d in "123456789" if d not in GLOBAL_KEYS)
OTHER_KEY = "*"
_CACHE = "ivr.pick_account.listed"


def listed(ctx: CallContext) -> list[Account]:
    """The accounts on the calling number, by account number, when there are 2 to
    ``len(PICK_KEYS)`` of them; otherwise none (one match is confirmed, more are typed)."""
    phone = normalize_e164(ctx.call.from_number)
    if not phone:
        return []
    # Read once per webhook: every choice of the menu asks.
    cache: dict[str, list[Account]] = ctx.handle.info.setdefault(_CACHE, {})
    if phone not in cache:
        found = accounts.find_by_phone(ctx.handle, phone, limit=len(PICK_KEYS) + 1)
        cache[phone] = found if 2 <= len(found) <= len(PICK_KEYS) else []
    return cache[phone]


def _pick(index: int, ctx: CallContext) -> Outcome:
    """The account listed at that key: ask for its ZIP or PIN (nothing carried over)."""
    accounts_listed = listed(ctx)
    if index >= len(accounts_listed):
        return Retry()
    switch_account(ctx.call, accounts_listed[index].id)
    return start_verification(ctx)


def _is_listed(index: int, ctx: CallContext) -> bool:
    """The calling number is on that many accounts."""
    return index < len(listed(ctx))


def _option(index: int, ctx: CallContext) -> dict[str, str]:
    accounts_listed = listed(ctx)
    number = accounts_listed[index].account_number if index < len(accounts_listed) else ""
    return {"key": PICK_KEYS[index], "last4": speech.digits(number[-4:])}


def _other(ctx: CallContext) -> Outcome:
    """Forget the list and ask for the account number."""
    switch_account(ctx.call, None)
    return Go("account_entry")


_CHOICES = (
    *(Choice(key, f"account_{i + 1}", partial(_pick, i), prompt="pick.option",
             params=partial(_option, i), when=partial(_is_listed, i))
      for i, key in enumerate(PICK_KEYS)),
    Choice(OTHER_KEY, "other", _other, prompt="pick.other"),
)


def _pick_prompt(ctx: CallContext) -> SpeechList:
    options = tuple(Speech(c.prompt or "", c.params(ctx) if c.params else {})
                    for c in PICK_ACCOUNT.offered(ctx) if c.prompt)
    return (say("pick.intro"), *options)


def pick_or_enter(ctx: CallContext) -> Go:
    """The pick list when the calling number is on several accounts, else account entry."""
    return Go("pick_account" if listed(ctx) else "account_entry")


PICK_ACCOUNT = State("pick_account", asks=("pick.intro", "pick.option", "pick.other"),
                     choices=_CHOICES, question=_pick_prompt)
