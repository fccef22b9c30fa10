"""More time to pay: who may ask, the offers, the read-back, and recording on the caller's 1.

Main menu 4 -> ``arrange_menu`` (the offers the rules allow) -> ``arrange_confirm`` (the
terms in full) -> on 1: an extension, or a plan without a down payment, is recorded at once
and its number read in ``arrange_done``; a plan with a down payment goes down the payment
path (method, fee, confirmation, <Pay>) for that amount, and is recorded only when <Pay>
succeeds (``after_down_payment``, called by ivr.money.payments). The terms recorded are the
ones kept on the call when they were read out, never rebuilt from keys.
"""

from __future__ import annotations

import html

from connectors.amounts import cents_to_text
from connectors.phones import normalize_e164
from ivr.arrangements import store
from ivr.arrangements.eligibility import Ineligible, why_not
from ivr.arrangements.terms import Offer, offers
from ivr.calls import account_rules
from ivr.calls.agent import closed_speech, transfer_open, transfer_step
from ivr.calls.context import CallContext
from ivr.calls.menu import Choice, SpeechList, State, say
from ivr.calls.states.after_pay import can_text
from ivr.calls.states.amount import _confirm_amount as pay_chosen_amount
from ivr.calls.steps import Finish, Go, Hangup, Outcome
from ivr.models import Arrangement, Payment
from ivr.prompts import speech
from ivr.statuses import ArrangementKind

DOWN_PAYMENT = "down_payment"  # CallSession.payment_purpose / Payment.purpose

# The one sentence a caller who may not have an arrangement hears, per reason.
WHY_NOT: dict[Ineligible, str] = {
    Ineligible.STATUS: "arrange.why_status",
    Ineligible.BALANCE_CAP: "arrange.why_balance_cap",
    Ineligible.TOO_NEW: "arrange.why_too_new",
    Ineligible.BROKEN: "arrange.why_broken",
    Ineligible.RETURNED: "arrange.why_returned",
    Ineligible.BILLER: "arrange.why_biller",
    # Not offered in the menu, so reached only if the account changed while the caller chose.
    Ineligible.DISABLED: "arrange.why_biller",
    Ineligible.NOTHING_DUE: "arrange.why_biller",
    Ineligible.ACTIVE: "arrange.exists",
}
# What main menu 4 may say, with the values each is given (required in every language).
ASK_SAYS: dict[str, tuple[str, ...]] = {
    **{prompt_id: () for prompt_id in WHY_NOT.values()},
    "arrange.why_balance_cap": ("amount",),
    "arrange.intro": (),
    "arrange.other_help": (),
}


# --- who may ask ----------------------------------------------------------------------------

def may_ask(ctx: CallContext) -> bool:
    """Arrangements are on, the account owes something, has no arrangement running, and is
    one arrangements are for: in a qualifying status (a disconnection notice, by default) or
    made eligible by the biller. Such a caller who fails another rule hears why; the others
    are not offered what they could never have."""
    account = ctx.account
    rules = ctx.settings.arrangements
    return bool(rules.enabled and account is not None
                and account.balance_due_cents > 0
                and (account.status in rules.statuses or account.arrangement_eligible)
                and store.active_arrangement(ctx.handle, account.id) is None)


def ask_for_time(ctx: CallContext) -> Outcome:
    """The offers the rules allow, or why not and a representative."""
    account = ctx.account
    assert account is not None  # noqa: S101 - only reachable after verification
    reason = why_not(ctx.settings.arrangements, account, ctx.today(),
                     store.active_arrangement(ctx.handle, account.id) is not None)
    drop_unfinished(ctx)
    if reason is None and _offers(ctx):
        return Go("arrange_menu", (say("arrange.intro"),))
    return _refuse(ctx, reason or Ineligible.BILLER)


def drop_unfinished(ctx: CallContext) -> None:
    """Forget terms read out but not agreed to, and a down payment not made."""
    ctx.call.arrangement_offer = None
    if ctx.call.payment_purpose == DOWN_PAYMENT:
        ctx.call.payment_purpose = None


def _refuse(ctx: CallContext, reason: Ineligible) -> Outcome:
    """Why, in one sentence; then a representative, or when the office opens and the menu."""
    params = ({"amount": ctx.money(ctx.settings.arrangements.balance_cap_cents)}
              if reason == Ineligible.BALANCE_CAP else {})
    before = (say(WHY_NOT[reason], **params), say("arrange.other_help"))
    if transfer_open(ctx):
        return Finish(transfer_step(ctx, before))
    return Go("main_menu", (*before, *closed_speech(ctx)))


# --- the offers -----------------------------------------------------------------------------

def _offers(ctx: CallContext) -> tuple[Offer, ...]:
    """What the rules allow, within the account's own rules: every payment of a plan at
    least its minimum, and for an account that pays in full only, the extension alone (the
    whole balance, later)."""
    account = ctx.account
    if account is None:
        return ()
    limits = ctx.settings.amount
    smallest = max(limits.minimum_cents, account_rules.account_minimum(account) or 0)
    found = offers(ctx.settings.arrangements, account.balance_due_cents, ctx.today(),
                   smallest, limits.maximum_cents)
    if account_rules.full_only(account):
        found = tuple(o for o in found if o.kind is ArrangementKind.EXTENSION)
    return found


def _offer(ctx: CallContext, kind: ArrangementKind) -> Offer | None:
    return next((o for o in _offers(ctx) if o.kind == kind), None)


def _menu_prompt(ctx: CallContext) -> SpeechList:
    items: list[tuple[str, dict[str, str]]] = []
    for offer in _offers(ctx):
        if offer.kind == ArrangementKind.EXTENSION:
            items.append(("arrange.menu_extension", {
                "amount": ctx.money(offer.balance_cents), "date": ctx.date(offer.last_date)}))
        else:
            prompt_id = "arrange.menu_instalments" if offer.down_cents else (
                "arrange.menu_instalments_no_down")
            items.append((prompt_id, {
                "down": ctx.money(offer.down_cents), "count": str(len(offer.instalments)),
                "amount": ctx.money(offer.instalments[-1].cents)}))
    return tuple(say(prompt_id, **params) for prompt_id, params in items)


def _choose(kind: ArrangementKind, ctx: CallContext) -> Outcome:
    offer = _offer(ctx, kind)
    if offer is None:
        return Go("main_menu")
    # What is read back and, on 1, recorded: kept on the call, never rebuilt from keys.
    ctx.call.arrangement_offer = offer.to_json()
    return Go("arrange_confirm")


def _extension(ctx: CallContext) -> Outcome:
    """The full balance by a later date: its terms read back."""
    return _choose(ArrangementKind.EXTENSION, ctx)


def _instalments(ctx: CallContext) -> Outcome:
    """A share now and the rest in instalments: its terms read back."""
    return _choose(ArrangementKind.INSTALMENTS, ctx)


def _offers_kind(kind: ArrangementKind, ctx: CallContext) -> bool:
    return _offer(ctx, kind) is not None


def _offers_extension(ctx: CallContext) -> bool:
    """The rules allow an extension."""
    return _offers_kind(ArrangementKind.EXTENSION, ctx)


def _offers_plan(ctx: CallContext) -> bool:
    """The rules allow an instalment plan for this balance."""
    return _offers_kind(ArrangementKind.INSTALMENTS, ctx)


ARRANGE_MENU = State(
    "arrange_menu",
    asks=("arrange.menu_extension", "arrange.menu_instalments",
          "arrange.menu_instalments_no_down"),
    question=_menu_prompt, choices=(
        Choice("1", "extension", _extension, when=_offers_extension),
        Choice("2", "instalments", _instalments, when=_offers_plan),
    ))


# --- the terms read back --------------------------------------------------------------------

def offer_on_call(ctx: CallContext) -> Offer | None:
    """The terms read to the caller and not yet recorded (None when there are none)."""
    kept = ctx.call.arrangement_offer
    if not kept:
        return None
    try:
        return Offer.from_json(kept)
    except ValueError:
        return None


def _confirm_prompt(ctx: CallContext) -> SpeechList:
    offer = offer_on_call(ctx)
    if offer is None:
        return (say("arrange.confirm_agree"),)
    if offer.kind == ArrangementKind.EXTENSION:
        first = say("arrange.confirm_extension", amount=ctx.money(offer.balance_cents),
                    date=ctx.date(offer.last_date))
        return (first, say("arrange.confirm_agree"))
    if offer.down_cents:
        first = say("arrange.confirm_down", amount=ctx.money(offer.down_cents))
    else:
        first = say("arrange.confirm_plan", amount=ctx.money(offer.balance_cents))
    each = tuple(say("arrange.confirm_instalment", amount=ctx.money(i.cents),
                     date=ctx.date(i.due)) for i in offer.instalments)
    return (first, *each, say("arrange.confirm_agree"))


def _agree(ctx: CallContext) -> Outcome:
    """Recorded now (its number read out), or the down payment first, through `<Pay>`."""
    offer = offer_on_call(ctx)
    if offer is None:
        return Go("main_menu")
    if not offer.down_cents:
        return _record(ctx, offer)
    return _pay_down(ctx, offer)


def _pay_down(ctx: CallContext, offer: Offer) -> Outcome:
    if ctx.call.pay_tries >= ctx.settings.pay.max_tries_per_call:
        return Go("main_menu", (say("pay.tries_exhausted"),))
    ctx.call.amount_cents = offer.down_cents
    ctx.call.fee_cents = 0
    ctx.call.payment_purpose = DOWN_PAYMENT
    return pay_chosen_amount(ctx)


def _back(ctx: CallContext) -> Outcome:
    """Back to the offers; nothing is recorded."""
    ctx.call.arrangement_offer = None
    return Go("arrange_menu")


ARRANGE_CONFIRM = State(
    "arrange_confirm",
    asks=("arrange.confirm_agree", "arrange.confirm_extension", "arrange.confirm_down",
          "arrange.confirm_plan", "arrange.confirm_instalment"),
    question=_confirm_prompt, choices=(
        Choice("1", "agree", _agree, says={"arrange.recorded": ("date",), "arrange.exists": ()}),
        Choice("2", "back", _back),
    ))


# --- recording ------------------------------------------------------------------------------

def _store(ctx: CallContext, offer: Offer, payment: Payment | None = None) -> Arrangement | None:
    """Record the offer as agreed; None when the account has an arrangement already."""
    account = ctx.account
    assert account is not None  # noqa: S101 - only reachable after verification
    ctx.call.arrangement_offer = None
    ctx.call.payment_purpose = None
    try:
        arrangement = store.record_arrangement(
            ctx.db, call_sid=ctx.call.call_sid, account=account, offer=offer,
            language=ctx.lang, now=ctx.now, simulated=ctx.config.simulated,
            down_payment_id=payment.id if payment is not None else None)
    except store.AlreadyActive:
        return None
    ctx.call.arrangement_id = arrangement.id
    return arrangement


def _record(ctx: CallContext, offer: Offer) -> Outcome:
    arrangement = _store(ctx, offer)
    if arrangement is None:
        return Go("main_menu", (say("arrange.exists"),))
    post_now(ctx, arrangement.id)
    return Go("arrange_done", _recorded_speech(ctx, offer))


def post_now(ctx: CallContext, arrangement_id: int) -> None:
    """Tell the biller at once: an arrangement holds the service, so the disconnection crew
    must know of it before its next run. Durable first; the worker retries what fails."""
    if ctx.accounting is None or ctx.config.simulated:
        return
    ctx.db.commit()
    ctx.accounting.post_arrangement_now(arrangement_id)


def _recorded_speech(ctx: CallContext, offer: Offer) -> SpeechList:
    return (say("arrange.recorded", date=ctx.date(offer.last_date)),)


def after_down_payment(ctx: CallContext, payment: Payment) -> SpeechList:
    """A payment just recorded: when it is the down payment of the terms the caller agreed
    to, record the arrangement in the same transaction; what to say about it."""
    offer = offer_on_call(ctx)
    if (ctx.call.payment_purpose != DOWN_PAYMENT or payment.purpose != DOWN_PAYMENT
            or offer is None or payment.amount_cents != offer.down_cents):
        return ()
    if _store(ctx, offer, payment) is None:
        return (say("arrange.exists"),)
    return _recorded_speech(ctx, offer)


def after_payment_state(ctx: CallContext, payment: Payment) -> str:
    """Where a successful payment goes: its arrangement's numbers, or the receipt."""
    arrangement = _recorded(ctx)
    if arrangement is not None and arrangement.down_payment_id == payment.id:
        return "arrange_done"
    return "receipt"


def failed_payment_state(ctx: CallContext) -> str:
    """Where a failed payment goes: a down payment's own retry menu, or the usual one."""
    if ctx.call.payment_purpose == DOWN_PAYMENT and offer_on_call(ctx) is not None:
        return "down_payment_failed"
    return "pay_failed"


# --- the numbers, and the terms by text -----------------------------------------------------

def _recorded(ctx: CallContext) -> Arrangement | None:
    if ctx.call.arrangement_id is None:
        return None
    return ctx.db.get(Arrangement, ctx.call.arrangement_id)


def _done_prompt(ctx: CallContext) -> SpeechList:
    arrangement = _recorded(ctx)
    if arrangement is None:
        return (say("arrange.done_menu"),)
    items: list[tuple[str, str]] = []
    payment = (ctx.db.get(Payment, arrangement.down_payment_id)
               if arrangement.down_payment_id else None)
    if payment is not None:
        items.append(("arrange.payment_number", payment.confirmation_code))
    items.append(("arrange.number", arrangement.confirmation_code))
    menu = "arrange.done_menu_text" if can_text(ctx) else "arrange.done_menu"
    return (*(say(pid, code=speech.spell(code)) for pid, code in items), say(menu))


def _terms_text(ctx: CallContext, arrangement: Arrangement) -> str:
    """The terms in words for a text message (masked data only)."""
    def render(prompt_id: str, **params: str) -> str:
        return html.unescape(ctx.catalog.render(prompt_id, ctx.lang, **params).ssml)

    parts = []
    if arrangement.down_payment_cents:
        parts.append(render("arrange.text_down",
                            amount=cents_to_text(arrangement.down_payment_cents)))
    parts += [render("arrange.text_instalment", amount=cents_to_text(i.amount_cents),
                     date=speech.date_words(i.due_date, ctx.lang, ctx.today()))
              for i in arrangement.instalments]
    return render("arrange.text_body", code=arrangement.confirmation_code,
                  account_last4=arrangement.account_number[-4:], terms=" ".join(parts))


def _send_terms(ctx: CallContext) -> Outcome:
    """Text the terms to the calling number, then the numbers again."""
    from ivr.calls.receipts import ReceiptError, send_text

    arrangement = _recorded(ctx)
    phone = normalize_e164(ctx.call.from_number)
    if arrangement is None or phone is None:
        return Go("arrange_done", (say("receipt.text_failed"),))
    try:
        send_text(ctx.config, phone, _terms_text(ctx, arrangement))
    except ReceiptError:
        return Go("arrange_done", (say("receipt.text_failed"),))
    ctx.call.text_receipt_sent = True
    return Go("arrange_done", (say("arrange.text_sent", last4=speech.digits(phone[-4:])),))


def _done_silence(ctx: CallContext) -> Outcome:
    """A goodbye: the caller has what they called for."""
    return Finish(Hangup((say("goodbye.thanks"),)))


ARRANGE_DONE = State(
    "arrange_done",
    asks=("arrange.done_menu", "arrange.done_menu_text", "arrange.number",
          "arrange.payment_number"),
    question=_done_prompt, on_silence=_done_silence, choices=(
        Choice("1", "again", "arrange_done"),
        Choice("2", "menu", "main_menu"),
        Choice("3", "text", _send_terms, when=can_text, says={
            "arrange.text_sent": ("last4",), "receipt.text_failed": (),
            "arrange.text_body": ("code", "account_last4", "terms"),
            "arrange.text_down": ("amount",), "arrange.text_instalment": ("amount", "date")}),
    ))


# --- a down payment that did not go through --------------------------------------------------

def _retry_down_payment(ctx: CallContext) -> Outcome:
    """The same down payment again: the way to pay, then `<Pay>`."""
    offer = offer_on_call(ctx)
    if offer is None or not offer.down_cents:
        return Go("main_menu")
    return _pay_down(ctx, offer)


def _drop_offer(ctx: CallContext) -> Outcome:
    """The main menu; no arrangement was made."""
    ctx.call.arrangement_offer = None
    ctx.call.payment_purpose = None
    return Go("main_menu", (say("arrange.not_made"),))


DOWN_PAYMENT_FAILED = State("down_payment_failed", asks=("pay.retry_menu",), choices=(
    Choice("1", "retry", _retry_down_payment),
    Choice("2", "menu", _drop_offer, says={"arrange.not_made": ()}),
))
