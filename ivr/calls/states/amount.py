"""How much: "you already paid today", the amount menu, an amount typed, and its read-back."""

from __future__ import annotations

from collections.abc import Callable

from connectors.files.columns import AccountStatus
from ivr.arrangements.store import active_arrangement, next_instalment
from ivr.calls import account_rules
from ivr.calls.context import CallContext
from ivr.calls.menu import Choice, SpeechList, State, say, until_pound
from ivr.calls.parsing import parse_amount
from ivr.calls.states.checkout import choose_method, pay_limited, refuse_payment
from ivr.calls.states.paid_today import payment_today
from ivr.calls.steps import Go, Outcome, Retry, Speech
from ivr.models import Account


def _account(ctx: CallContext) -> Account:
    account = ctx.account
    assert account is not None  # noqa: S101 - only reachable after verification
    return account


def start_payment(ctx: CallContext, then: Callable[[CallContext], Outcome] | None = None
                  ) -> Outcome:
    """Begin the payment: "you already paid today" when so, then the amount menu or entry
    (or ``then``: the full balance, or an amount typed, chosen at the main menu)."""
    account = _account(ctx)
    if ctx.call.pay_tries >= ctx.settings.pay.max_tries_per_call:
        return Go("main_menu", (say("pay.tries_exhausted"),))
    if pay_limited(ctx):
        return refuse_payment(ctx)
    if not account_rules.phone_payable(account, ctx.settings, ctx.today()):
        return Go("main_menu", (say("summary.no_phone_payments"),))
    ctx.call.amount_cents = None
    ctx.call.fee_cents = 0
    ctx.call.payment_purpose = None
    if not ctx.call.paid_today_confirmed and payment_today(ctx) is not None:
        return Go("paid_today")
    return (then or choose_amount)(ctx)


def balance_is_the_choice(ctx: CallContext) -> bool:
    """Something is due and the amount menu would offer only the balance (or another
    amount): no disconnection, reconnection or arrangement amount to choose."""
    account = ctx.account
    return (account is not None and account.balance_due_cents > 0
            and not (_offers_disconnect(ctx) or _offers_reconnect(ctx)
                     or _has_arrangement(ctx)))


def pay_in_full(ctx: CallContext) -> Outcome:
    """The full balance, chosen at the main menu, straight to the way to pay."""
    return _choose_amount(ctx, _balance(ctx))


def type_amount(ctx: CallContext) -> Outcome:
    """Another amount, chosen at the main menu: to amount entry."""
    return Go("amount_entry")


def choose_amount(ctx: CallContext) -> Outcome:
    """The amount menu; amount entry when nothing is due; the read-back of the balance when
    the account takes the full balance only."""
    account = _account(ctx)
    if account_rules.full_only(account) and not _offers_reconnect(ctx):
        notice = (say("amount.full_only", amount=ctx.money(account.balance_due_cents)),)
        refusal = account_rules.refusal(account, ctx.settings, account.balance_due_cents)
        if refusal is not None:  # the balance is above the line's maximum: nothing to pay
            return Go("main_menu", (*notice, *_refusal_speech(ctx, refusal)))
        return _choose_amount(ctx, account.balance_due_cents, notice=notice)
    if account.balance_due_cents <= 0:
        return Go("amount_entry")
    return Go("amount_menu")


def _balance(ctx: CallContext) -> int:
    return _account(ctx).balance_due_cents


def _disconnect_amount(ctx: CallContext) -> int | None:
    """What it takes to stop a pending disconnection, when one is pending."""
    account = ctx.account
    if account is None or account.status != AccountStatus.DISCONNECT_PENDING:
        return None
    needed = account.past_due_cents if account.past_due_cents > 0 else account.balance_due_cents
    return needed if needed > 0 else None


def _allowed(ctx: CallContext, cents: int) -> bool:
    return account_rules.refusal(_account(ctx), ctx.settings, cents) is None


def _offers_disconnect(ctx: CallContext) -> bool:
    """A disconnection is pending, avoiding it takes less than the balance, and is allowed."""
    needed = _disconnect_amount(ctx)
    # An active arrangement holds the service: its instalment is the amount to offer.
    return (needed is not None and needed != _balance(ctx) and _allowed(ctx, needed)
            and not _has_arrangement(ctx))


def _reconnect_amount(ctx: CallContext) -> int:
    return account_rules.reconnect_amount(_account(ctx))


def _offers_reconnect(ctx: CallContext) -> bool:
    """The service is disconnected, restoring it takes other than the balance, and is allowed.

    (The full balance restores the service too: choice 1 is then the reconnection payment.)
    """
    account = _account(ctx)
    needed = account_rules.reconnect_amount(account)
    return (account_rules.reconnecting(account, ctx.settings) and needed > 0
            and needed != account.balance_due_cents and _allowed(ctx, needed))


def _any_amount(ctx: CallContext) -> bool:
    """The account takes other amounts than its balance (no `full_payment_required`)."""
    return not account_rules.full_only(_account(ctx))


def _refusal_speech(ctx: CallContext, refusal: account_rules.Refusal) -> SpeechList:
    return (Speech(refusal.prompt_id, {refusal.name: ctx.money(refusal.cents)}),)


def _set_amount(ctx: CallContext, cents: int) -> None:
    """The amount chosen, and what it is for (a reconnection, or the bill)."""
    ctx.call.amount_cents = cents
    ctx.call.payment_purpose = account_rules.purpose(_account(ctx), ctx.settings, cents)


def _choose_amount(ctx: CallContext, cents: int, notice: SpeechList = ()) -> Outcome:
    """An amount chosen from a menu: on to the way to pay without a read-back (the card
    confirmation or the bank authorization says the amount before any capture)."""
    refusal = account_rules.refusal(_account(ctx), ctx.settings, cents)
    if refusal is not None:
        return Go("amount_entry", _refusal_speech(ctx, refusal))
    _set_amount(ctx, cents)
    outcome = choose_method(ctx)
    if notice and isinstance(outcome, Go):
        return Go(outcome.state, (*notice, *outcome.before))
    return outcome


def _full_balance(ctx: CallContext) -> Outcome:
    """The full balance, within the limits, to the way to pay."""
    return _choose_amount(ctx, _balance(ctx))


def _avoid_disconnection(ctx: CallContext) -> Outcome:
    """The amount that avoids disconnection, within the limits, to the way to pay."""
    return _choose_amount(ctx, _disconnect_amount(ctx) or 0)


def _reconnect(ctx: CallContext) -> Outcome:
    """The amount that restores the service (a reconnection payment), to the way to pay."""
    return _choose_amount(ctx, _reconnect_amount(ctx))


def _next_instalment(ctx: CallContext) -> int | None:
    """The next instalment of the account's active arrangement, when it has one."""
    account = ctx.account
    arrangement = active_arrangement(ctx.handle, account.id) if account is not None else None
    return next_instalment(arrangement, ctx.today()).amount_cents if arrangement else None


def _has_arrangement(ctx: CallContext) -> bool:
    """The account has an active payment arrangement."""
    return _next_instalment(ctx) is not None


def _pay_instalment(ctx: CallContext) -> Outcome:
    """The next instalment of the arrangement, within the limits, to the way to pay."""
    return _choose_amount(ctx, _next_instalment(ctx) or 0)


AMOUNT_MENU = State("amount_menu", choices=(
    Choice("1", "full", _full_balance, prompt="amount.menu_full",
           params=lambda ctx: {"amount": ctx.money(_balance(ctx))}),
    Choice("2", "disconnect", _avoid_disconnection, prompt="amount.menu_disconnect",
           params=lambda ctx: {"amount": ctx.money(_disconnect_amount(ctx) or 0)},
           when=_offers_disconnect),
    Choice("3", "other", "amount_entry", prompt="amount.menu_other", when=_any_amount),
    Choice("4", "reconnect", _reconnect, prompt="amount.menu_reconnect",
           params=lambda ctx: {"amount": ctx.money(_reconnect_amount(ctx))},
           when=_offers_reconnect),
    Choice("5", "instalment", _pay_instalment, prompt="amount.menu_instalment",
           params=lambda ctx: {"amount": ctx.money(_next_instalment(ctx) or 0)},
           when=_has_arrangement),
))


def _amount_entry_handle(ctx: CallContext, digits: str) -> Outcome:
    """Dollars and cents then `#` (`*` is the decimal point), within every rule: read back.

    The line's limits and the account's rules (full balance only, its minimum) apply; an
    amount outside them is refused with the reason, and asked again.
    """
    cents = parse_amount(digits)
    if cents is None:
        return Retry((say("amount.invalid"),))
    refusal = account_rules.refusal(_account(ctx), ctx.settings, cents)
    if refusal is not None:
        return Retry(_refusal_speech(ctx, refusal))
    _set_amount(ctx, cents)
    return Go("amount_confirm")


AMOUNT_ENTRY = State("amount_entry", asks=("amount.enter",), handle=_amount_entry_handle,
                     num_digits=until_pound)


def _amount_confirm_prompt(ctx: CallContext) -> SpeechList:
    return (say("amount.confirm", amount=ctx.money(ctx.call.amount_cents or 0)),)


def _confirm_amount(ctx: CallContext) -> Outcome:
    """The method menu, or the one way left to pay this account, saying why."""
    return choose_method(ctx)


def _change_amount(ctx: CallContext) -> Outcome:
    """Back to the amount menu (amount entry when nothing is due, or for the balance only)."""
    account = ctx.account
    if (account is not None and account.balance_due_cents > 0
            and (_any_amount(ctx) or _offers_reconnect(ctx))):
        return Go("amount_menu")
    return Go("amount_entry")


AMOUNT_CONFIRM = State("amount_confirm", asks=("amount.confirm",),
                       question=_amount_confirm_prompt, choices=(
                           Choice("1", "confirm", _confirm_amount),
                           Choice("2", "change", _change_amount),
                       ))


def amount_choices(ctx: CallContext) -> dict[str, int]:
    """The amounts the amount menu offers this account now, by choice name ("full",
    "disconnect", "reconnect", "instalment"), each within every rule (for the agent's page,
    which offers the same amounts as the line, and "other" checked like amount entry)."""
    account = _account(ctx)
    amounts = {"full": account.balance_due_cents,
               "disconnect": _disconnect_amount(ctx) or 0,
               "reconnect": _reconnect_amount(ctx),
               "instalment": _next_instalment(ctx) or 0}
    offered: dict[str, int] = {}
    for choice in AMOUNT_MENU.choices:
        cents = amounts.get(choice.name)
        if cents is None or cents <= 0 or (choice.when is not None and not choice.when(ctx)):
            continue
        if _allowed(ctx, cents):
            offered[choice.name] = cents
    return offered


def set_amount(ctx: CallContext, cents: int) -> account_rules.Refusal | None:
    """Set up a payment of ``cents`` if the account's rules allow it; else why not."""
    refusal = account_rules.refusal(_account(ctx), ctx.settings, cents)
    if refusal is None:
        _set_amount(ctx, cents)
    return refusal
