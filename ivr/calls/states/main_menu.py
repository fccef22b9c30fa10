"""The main menu, after the account summary: pay, recent payments, the summary again."""

from __future__ import annotations

from ivr.calls import account_rules
from ivr.calls.context import CallContext
from ivr.calls.menu import Choice, SpeechList, State, say
from ivr.calls.states.amount import start_payment
from ivr.calls.steps import Go, Outcome


def can_pay(ctx: CallContext) -> bool:
    """The account can pay by phone: allowed, not closed, and a way to pay left to it."""
    account = ctx.account
    return account is not None and account_rules.phone_payable(account, ctx.settings)


def _main_prompt(ctx: CallContext) -> SpeechList:
    return (say("menu.main" if can_pay(ctx) else "menu.main_no_pay"),)


def _recent_payments(ctx: CallContext) -> Outcome:
    """Read the recent payments, then the menu again."""
    from ivr.calls.summary import recent_payments_speech

    return Go("main_menu", recent_payments_speech(ctx))


def _summary_again(ctx: CallContext) -> Outcome:
    """Read the account summary again, then the menu."""
    from ivr.calls.summary import summary_speech

    return Go("main_menu", summary_speech(ctx))


MAIN_MENU = State("main_menu", asks=("menu.main", "menu.main_no_pay"), question=_main_prompt,
                  choices=(
                      Choice("1", "pay", start_payment, when=can_pay),
                      Choice("2", "recent", _recent_payments),
                      Choice("3", "summary", _summary_again),
                  ))
