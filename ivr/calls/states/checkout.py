"""From the amount to <Pay>: method, bank account type, fee, bank authorization, confirmation."""

from __future__ import annotations

import contextlib

from ivr.calls import account_rules, guards
from ivr.calls.agent import escalate
from ivr.calls.context import CallContext
from ivr.calls.menu import PAYING, Choice, SpeechList, State, say
from ivr.calls.steps import Finish, Go, Outcome, PayCapture, Speech
from ivr.models import AchAuthorization
from ivr.prompts import speech

# --- method ---------------------------------------------------------------------------------


def pay_by_card(ctx: CallContext) -> Outcome:
    """A fee to disclose, else the final confirmation."""
    ctx.call.method = "card"
    ctx.call.bank_account_type = None
    return after_method(ctx)


def _pay_by_bank(ctx: CallContext) -> Outcome:
    """Ask checking or savings."""
    ctx.call.method = "ach"
    return Go("bank_type")


def allowed_methods(ctx: CallContext) -> account_rules.Methods:
    """The ways this account may pay now (the line's, less what the account refuses)."""
    account = ctx.account
    assert account is not None  # noqa: S101 - only reachable after verification
    return account_rules.methods(account, ctx.settings, ctx.today())


def _card_allowed(ctx: CallContext) -> bool:
    """The account may pay by card now."""
    return account_rules.CARD in allowed_methods(ctx).allowed


def _bank_allowed(ctx: CallContext) -> bool:
    """The account may pay from a bank account now."""
    return account_rules.ACH in allowed_methods(ctx).allowed


def _says_amount(ctx: CallContext) -> bool:
    """No card fee: the method menu says the amount and the account, and stands for the
    card confirmation (a fee is disclosed, then confirmed, after the choice)."""
    return ctx.settings.fee.card_cents == 0


def _method_prompt(ctx: CallContext) -> SpeechList:
    if not _says_amount(ctx):
        return (say("method.menu"),)
    account = ctx.account
    assert account is not None  # noqa: S101 - only reachable after verification
    return (say("method.menu_pay", amount=ctx.money(ctx.call.amount_cents or 0),
                last4=speech.digits(account.account_number[-4:])),)


def _card_chosen(ctx: CallContext) -> Outcome:
    """`<Pay>` for the card when the menu said the amount and account, else a fee to
    disclose or the card confirmation."""
    if not _says_amount(ctx):
        return pay_by_card(ctx)
    ctx.call.method = "card"
    ctx.call.bank_account_type = None
    ctx.call.fee_cents = 0
    return _pay_card(ctx)


METHOD = State("method", asks=("method.menu_pay", "method.menu"), question=_method_prompt,
               choices=(
                   Choice("1", "card", _card_chosen, when=_card_allowed),
                   Choice("2", "bank", _pay_by_bank, when=_bank_allowed),
               ))


def _only_method_speech(method: str, why: str | None) -> SpeechList:
    """Why the method menu is skipped, in a few words (nothing when the line offers one)."""
    if why == account_rules.BY_RECONNECT:
        return (say("method.reconnect_bank_only") if method == account_rules.ACH
                else say("method.reconnect_card_only"),)
    if why == account_rules.BY_RETURN:
        return (say("method.card_only_returned"),)
    if why == account_rules.BY_ACCOUNT:
        return (say("method.bank_only") if method == account_rules.ACH
                else say("method.card_only"),)
    return ()


def choose_method(ctx: CallContext) -> Outcome:
    """The method menu, or, with one way to pay left, that way (saying why)."""
    methods = allowed_methods(ctx)
    if not methods.allowed:
        return Go("main_menu", (say("summary.no_phone_payments"),))
    if len(methods.allowed) > 1:
        return Go("method")
    only = methods.allowed[0]
    before = _only_method_speech(only, methods.why_one)
    if only == account_rules.ACH:
        ctx.call.method = "ach"
        return Go("bank_type", before)
    outcome = pay_by_card(ctx)
    if isinstance(outcome, Go):
        return Go(outcome.state, (*before, *outcome.before))
    return outcome


def _bank_account(kind: str, ctx: CallContext) -> Outcome:
    ctx.call.bank_account_type = kind
    return after_method(ctx)


def _checking(ctx: CallContext) -> Outcome:
    """A fee to disclose, else the bank authorization."""
    return _bank_account("consumer-checking", ctx)


def _savings(ctx: CallContext) -> Outcome:
    """A fee to disclose, else the bank authorization."""
    return _bank_account("consumer-savings", ctx)


BANK_TYPE = State("bank_type", asks=("method.bank_type",), choices=(
    Choice("1", "checking", _checking),
    Choice("2", "savings", _savings),
))


def after_method(ctx: CallContext) -> Outcome:
    """Disclose a fee when one applies, else go on to authorization or confirmation."""
    fee = ctx.settings.fee
    ctx.call.fee_cents = fee.ach_cents if ctx.call.method == "ach" else fee.card_cents
    if ctx.call.fee_cents > 0:
        return Go("fee_accept")
    return after_fee(ctx)


def after_fee(ctx: CallContext) -> Outcome:
    """The bank authorization (bank debits) or the final confirmation (card)."""
    # The TEL authorization also serves as a bank debit's final confirmation.
    if ctx.call.method == "ach":
        start_authorization_recording(ctx)
        return Go("ach_authorize")
    return Go("final_confirm")


def start_authorization_recording(ctx: CallContext) -> None:
    """Record the call while the authorization is read and answered, where configured."""
    from ivr.calls.twilio_api import TwilioApiError, has_credentials, start_recording

    if (not ctx.settings.ach.record_authorization or ctx.call.ach_recording_sid
            or not has_credentials(ctx.config)):
        return
    try:
        ctx.call.ach_recording_sid = start_recording(ctx.config, ctx.call.call_sid)
    except TwilioApiError:
        # The stored authorization (script, version, time, call) still stands; the
        # operator sees a missing recording SID on it.
        ctx.call.ach_recording_sid = None


def stop_authorization_recording(ctx: CallContext) -> str | None:
    """Stop the authorization recording before anything else is said; return its SID."""
    from ivr.calls.twilio_api import TwilioApiError, stop_recording

    sid = ctx.call.ach_recording_sid
    ctx.call.ach_recording_sid = None
    if sid:
        # A failed stop leaves the recording running to the end of the call; it is kept.
        with contextlib.suppress(TwilioApiError):
            stop_recording(ctx.config, ctx.call.call_sid, sid)
    return sid


def total(ctx: CallContext) -> int:
    """The amount plus the fee: what <Pay> charges."""
    return (ctx.call.amount_cents or 0) + ctx.call.fee_cents


def method_words(ctx: CallContext) -> str:
    """"card" or "bank account" in the caller's language."""
    key = "words.method_ach" if ctx.call.method == "ach" else "words.method_card"
    return ctx.catalog.render(key, ctx.lang).ssml


# --- fee ------------------------------------------------------------------------------------

def _fee_prompt(ctx: CallContext) -> SpeechList:
    # With one way to pay (the line's or the account's) the choice is accept or cancel.
    choice = len(allowed_methods(ctx).allowed) > 1
    prompt_id = "fee.disclose" if choice else "fee.disclose_no_choice"
    return (say(prompt_id, fee=ctx.money(ctx.call.fee_cents), method=method_words(ctx),
                total=ctx.money(total(ctx))),)


def _decline_fee(ctx: CallContext) -> Outcome:
    """Back to the method (or, with one way to pay, cancel to the main menu)."""
    ctx.call.fee_cents = 0
    if len(allowed_methods(ctx).allowed) > 1:
        return Go("method", (say("fee.declined"),))
    return Go("main_menu", (say("pay.cancelled"),))


FEE_ACCEPT = State("fee_accept", asks=("fee.disclose", "fee.disclose_no_choice"),
                   question=_fee_prompt, choices=(
                       Choice("1", "accept", after_fee),
                       Choice("2", "decline", _decline_fee),
                   ))


# --- bank authorization ---------------------------------------------------------------------

def ach_params(ctx: CallContext) -> dict[str, str]:
    account = ctx.account
    assert account is not None  # noqa: S101
    kind = "words.savings" if ctx.call.bank_account_type == "consumer-savings" else "words.checking"
    return {
        "name": account.customer_name or "",
        "amount": ctx.money(total(ctx)),
        "date": ctx.date(ctx.today()),
        "account_type": ctx.catalog.render(kind, ctx.lang).ssml,
        "last4": speech.digits(account.account_number[-4:]),
        "phone": speech.phone_number(ctx.settings.ach.office_phone),
    }


def _authorize(ctx: CallContext) -> Outcome:
    """Keep the authorization (script, version, time, recording), then `<Pay>` for the bank."""
    record_authorization(ctx)
    return hand_off(ctx, (say("pay.intro_ach"),))


def record_authorization(ctx: CallContext) -> AchAuthorization:
    """Stop the recording and keep the authorization the caller gave (script, version, time,
    recording); record_payment links it to the payment."""
    recording = stop_authorization_recording(ctx)
    account = ctx.account
    assert account is not None  # noqa: S101
    script = ctx.catalog.render("ach.authorize", ctx.lang, **ach_params(ctx)).ssml
    authorization = AchAuthorization(
        call_sid=ctx.call.call_sid, account_id=account.id,
        account_number=account.account_number, caller_number=ctx.call.from_number,
        amount_cents=ctx.call.amount_cents or 0, fee_cents=ctx.call.fee_cents,
        bank_account_type=ctx.call.bank_account_type or "consumer-checking",
        script_version=ctx.settings.ach.script_version, script_text=script,
        language=ctx.lang, authorized_at=ctx.now, recording_sid=recording,
    )
    ctx.db.add(authorization)
    return authorization


def _refuse_authorization(ctx: CallContext) -> Outcome:
    """Stop the recording; the payment is cancelled, back to the main menu."""
    stop_authorization_recording(ctx)
    return cancel(ctx)


def cancel(ctx: CallContext) -> Outcome:
    """The payment is cancelled: back to the main menu."""
    return Go("main_menu", (say("pay.cancelled"),))


ACH_AUTHORIZE = State("ach_authorize", asks=("ach.authorize",),
                      question=lambda ctx: (Speech("ach.authorize", ach_params(ctx)),),
                      choices=(
                          Choice("1", "authorize", _authorize),
                          Choice("2", "cancel", _refuse_authorization),
                      ))


# --- final confirmation (card) --------------------------------------------------------------

def _final_prompt(ctx: CallContext) -> SpeechList:
    account = ctx.account
    assert account is not None  # noqa: S101
    last4 = speech.digits(account.account_number[-4:])
    if ctx.call.fee_cents:
        return (say("confirm.card_with_fee", amount=ctx.money(ctx.call.amount_cents or 0),
                    fee=ctx.money(ctx.call.fee_cents), total=ctx.money(total(ctx)),
                    last4=last4),)
    return (say("confirm.card", amount=ctx.money(ctx.call.amount_cents or 0), last4=last4),)


def _pay_card(ctx: CallContext) -> Outcome:
    """`<Pay>` for the card."""
    return hand_off(ctx, (say("pay.intro_card"),))


FINAL_CONFIRM = State("final_confirm", asks=("confirm.card", "confirm.card_with_fee"),
                      question=_final_prompt, choices=(
                          Choice("1", "continue", _pay_card),
                          Choice("2", "cancel", cancel),
                      ))


# --- the hand-off to <Pay> ------------------------------------------------------------------

def pay_limited(ctx: CallContext) -> bool:
    """Whether a card-testing limit stops another <Pay> session on this call (recorded)."""
    account = ctx.account
    assert account is not None  # noqa: S101 - only reachable after verification
    # The row lock makes the count and this call's own hand-off one step per account.
    guards.lock_account(ctx.handle, account.id)
    limit = guards.pay_limit(ctx.db, ctx.call, account.id, ctx.now, ctx.settings.limits)
    if limit is None:
        return False
    guards.record(ctx.db, guards.PAY_BLOCKED, ctx.call, ctx.now, account.id)
    return True


def refuse_payment(ctx: CallContext, before: SpeechList = ()) -> Finish:
    """A card-testing limit was reached: say why, then a representative or a goodbye."""
    return Finish(escalate(ctx, (*before, say("pay.limit_reached"))))


def hand_off(ctx: CallContext, before: SpeechList) -> Outcome:
    """Hand the call to <Pay>, unless a limit was reached while the caller chose."""
    if pay_limited(ctx):
        return refuse_payment(ctx)
    return Finish(pay_step(ctx, before), state=PAYING)


def pay_step(ctx: CallContext, before: SpeechList) -> PayCapture:
    """The <Pay> hand-off, with the amount taken from the stored call, never from keypad text."""
    account = ctx.account
    assert account is not None  # noqa: S101
    return PayCapture(
        speech=before,
        charge_cents=total(ctx),
        method="ach-debit" if ctx.call.method == "ach" else "credit-card",
        bank_account_type=ctx.call.bank_account_type if ctx.call.method == "ach" else None,
        description=f"Account {account.account_number} call {ctx.call.call_sid}",
    )
