"""The main menu, after the account summary: pay, recent payments, the summary again."""

from __future__ import annotations

from ivr.calls import account_rules
from ivr.calls.context import CallContext
from ivr.calls.menu import Choice, SpeechList, State, say
from ivr.calls.states.amount import (
    balance_is_the_choice,
    pay_in_full,
    start_payment,
    type_amount,
)
from ivr.calls.states.arrange import ASK_SAYS, ask_for_time, drop_unfinished, may_ask
from ivr.calls.steps import Go, Outcome


def can_pay(ctx: CallContext) -> bool:
    """The account can pay by phone: allowed, not closed, and a way to pay left to it."""
    account = ctx.account
    return account is not None and account_rules.phone_payable(account, ctx.settings, ctx.today())


def _main_prompt(ctx: CallContext) -> SpeechList:
    more_time = (say("menu.arrange"),) if _offers_more_time(ctx) else ()
    if _pays_balance(ctx):
        return (say("menu.pay_full"), *more_time)
    return (say("menu.main" if can_pay(ctx) else "menu.main_no_pay"), *more_time)


def _pays_balance(ctx: CallContext) -> bool:
    """The balance is the one amount to offer and other amounts may be typed.

    (The account can pay by phone; an account paid in full only hears the amount menu's
    notice.)
    """
    account = ctx.account
    return (can_pay(ctx) and balance_is_the_choice(ctx) and account is not None
            and not account_rules.full_only(account))


def _pay(ctx: CallContext) -> Outcome:
    """The balance where it is the one amount to offer, else the amount menu.

    Terms not agreed to, or a down payment not made, are dropped.
    """
    drop_unfinished(ctx)
    return start_payment(ctx, pay_in_full if _pays_balance(ctx) else None)


def _pay_other(ctx: CallContext) -> Outcome:
    """Amount entry, as for a payment begun at `1`."""
    drop_unfinished(ctx)
    return start_payment(ctx, type_amount)


def _offers_more_time(ctx: CallContext) -> bool:
    """The account can pay by phone and may ask for more time."""
    return can_pay(ctx) and may_ask(ctx)


def _recent_payments(ctx: CallContext) -> Outcome:
    """Read the recent payments, then the menu again."""
    from ivr.calls.summary import recent_payments_speech

    return Go("main_menu", recent_payments_speech(ctx))


def _summary_again(ctx: CallContext) -> Outcome:
    """Read the account summary again, with the last payment and usage, then the menu."""
    from ivr.calls.summary import summary_speech

    return Go("main_menu", summary_speech(ctx, details=True))


MAIN_MENU = State("main_menu", asks=("menu.pay_full", "menu.main", "menu.main_no_pay"),
                  question=_main_prompt,
                  choices=(
                      Choice("1", "pay", _pay, when=can_pay),
                      Choice("2", "recent", _recent_payments),
                      Choice("3", "summary", _summary_again),
                      Choice("4", "more_time", ask_for_time, prompt="menu.arrange",
                             when=_offers_more_time, says=ASK_SAYS),
                      Choice("5", "other_amount", _pay_other, when=_pays_balance),
                  ))
