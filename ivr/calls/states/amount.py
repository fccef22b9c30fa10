"""How much: the amount menu, an amount typed, and its read-back."""

from __future__ import annotations

from connectors.files.columns import AccountStatus
from ivr.arrangements.store import active_arrangement, next_instalment
from ivr.calls.context import CallContext
from ivr.calls.menu import Choice, SpeechList, State, say, until_pound
from ivr.calls.parsing import parse_amount
from ivr.calls.states.checkout import after_method, pay_limited, refuse_payment
from ivr.calls.steps import Go, Outcome, Retry


def start_payment(ctx: CallContext) -> Outcome:
    """Begin the payment: the amount menu, or amount entry when nothing is due."""
    account = ctx.account
    assert account is not None  # noqa: S101 - only reachable after verification
    if ctx.call.pay_tries >= ctx.settings.pay.max_tries_per_call:
        return Go("main_menu", (say("pay.tries_exhausted"),))
    if pay_limited(ctx):
        return refuse_payment(ctx)
    ctx.call.amount_cents = None
    ctx.call.fee_cents = 0
    if account.balance_due_cents <= 0:
        return Go("amount_entry")
    return Go("amount_menu")


def _balance(ctx: CallContext) -> int:
    account = ctx.account
    assert account is not None  # noqa: S101 - only reachable after verification
    return account.balance_due_cents


def _disconnect_amount(ctx: CallContext) -> int | None:
    """What it takes to stop a pending disconnection, when one is pending."""
    account = ctx.account
    if account is None or account.status != AccountStatus.DISCONNECT_PENDING:
        return None
    needed = account.past_due_cents if account.past_due_cents > 0 else account.balance_due_cents
    return needed if needed > 0 else None


def _offers_disconnect(ctx: CallContext) -> bool:
    """A disconnection is pending and avoiding it takes less than the full balance."""
    needed = _disconnect_amount(ctx)
    return needed is not None and needed != _balance(ctx)


def _choose_amount(ctx: CallContext, cents: int) -> Outcome:
    limits = ctx.settings.amount
    if cents > limits.maximum_cents:
        return Go("amount_entry", (say("amount.above_maximum",
                                       maximum=ctx.money(limits.maximum_cents)),))
    if cents < limits.minimum_cents:
        return Go("amount_entry", (say("amount.below_minimum",
                                       minimum=ctx.money(limits.minimum_cents)),))
    ctx.call.amount_cents = cents
    return Go("amount_confirm")


def _full_balance(ctx: CallContext) -> Outcome:
    """The full balance, within the limits, to its read-back."""
    return _choose_amount(ctx, _balance(ctx))


def _avoid_disconnection(ctx: CallContext) -> Outcome:
    """The amount that avoids disconnection, within the limits, to its read-back."""
    return _choose_amount(ctx, _disconnect_amount(ctx) or 0)


def _next_instalment(ctx: CallContext) -> int | None:
    """The next instalment of the account's active arrangement, when it has one."""
    account = ctx.account
    arrangement = active_arrangement(ctx.db, account.id) if account is not None else None
    return next_instalment(arrangement, ctx.today()).amount_cents if arrangement else None


def _has_arrangement(ctx: CallContext) -> bool:
    """The account has an active payment arrangement."""
    return _next_instalment(ctx) is not None


def _pay_instalment(ctx: CallContext) -> Outcome:
    """The next instalment of the arrangement, within the limits, to its read-back."""
    return _choose_amount(ctx, _next_instalment(ctx) or 0)


AMOUNT_MENU = State("amount_menu", choices=(
    Choice("1", "full", _full_balance, prompt="amount.menu_full",
           params=lambda ctx: {"amount": ctx.money(_balance(ctx))}),
    Choice("2", "disconnect", _avoid_disconnection, prompt="amount.menu_disconnect",
           params=lambda ctx: {"amount": ctx.money(_disconnect_amount(ctx) or 0)},
           when=_offers_disconnect),
    Choice("3", "other", "amount_entry", prompt="amount.menu_other"),
    Choice("4", "instalment", _pay_instalment, prompt="amount.menu_instalment",
           params=lambda ctx: {"amount": ctx.money(_next_instalment(ctx) or 0)},
           when=_has_arrangement),
))


def _amount_entry_handle(ctx: CallContext, digits: str) -> Outcome:
    """Dollars and cents then `#` (`*` is the decimal point), within the limits: read back."""
    cents = parse_amount(digits)
    limits = ctx.settings.amount
    if cents is None:
        return Retry((say("amount.invalid"),))
    if cents < limits.minimum_cents:
        return Retry((say("amount.below_minimum", minimum=ctx.money(limits.minimum_cents)),))
    if cents > limits.maximum_cents:
        return Retry((say("amount.above_maximum", maximum=ctx.money(limits.maximum_cents)),))
    ctx.call.amount_cents = cents
    return Go("amount_confirm")


AMOUNT_ENTRY = State("amount_entry", asks=("amount.enter",), handle=_amount_entry_handle,
                     num_digits=until_pound)


def _amount_confirm_prompt(ctx: CallContext) -> SpeechList:
    return (say("amount.confirm", amount=ctx.money(ctx.call.amount_cents or 0)),)


def _confirm_amount(ctx: CallContext) -> Outcome:
    """The method menu, or straight to card when bank payments are off."""
    if ctx.settings.ach.enabled:
        return Go("method")
    ctx.call.method = "card"
    return after_method(ctx)


def _change_amount(ctx: CallContext) -> Outcome:
    """Back to the amount menu (amount entry when nothing is due)."""
    account = ctx.account
    if account is not None and account.balance_due_cents > 0:
        return Go("amount_menu")
    return Go("amount_entry")


AMOUNT_CONFIRM = State("amount_confirm", asks=("amount.confirm",),
                       question=_amount_confirm_prompt, choices=(
                           Choice("1", "confirm", _confirm_amount),
                           Choice("2", "change", _change_amount),
                       ))
