"""The states of a call (docs/call-flow.md). Each state says what it asks and how it answers.

A state's ``prompt`` is what the caller hears on entering it (and on "9", repeat). Its
``handle`` gets the caller's keys (never empty, never the global 9 or 0) and returns an
outcome; the machine applies the outcome, counts failed tries and handles silence.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass

from connectors.amounts import cents_to_text
from connectors.phones import normalize_e164
from ivr.accounts import cache as accounts
from ivr.calls import guards
from ivr.calls.agent import escalate
from ivr.calls.context import CallContext
from ivr.calls.parsing import clean_number, parse_amount, parse_choice
from ivr.calls.steps import Finish, Go, Hangup, Outcome, PayCapture, Retry, Speech
from ivr.models import AchAuthorization, Payment
from ivr.prompts import speech
from ivr.security import check_pin

SpeechList = tuple[Speech, ...]


@dataclass(frozen=True)
class State:
    """One named state of the call."""

    name: str
    prompt: Callable[[CallContext], SpeechList]
    handle: Callable[[CallContext, str], Outcome]
    num_digits: Callable[[CallContext], int | None] = lambda _ctx: 1
    # Sensitive states never have their keys logged or stored (PIN, ZIP, account number).
    sensitive: bool = False
    # What silence means where it is not a failure (the language menu defaults to English).
    on_silence: Callable[[CallContext], Outcome] | None = None


def _say(prompt_id: str, **params: str) -> Speech:
    return Speech(prompt_id, params)


# --- language -------------------------------------------------------------------------------

def _language_prompt(ctx: CallContext) -> SpeechList:
    options = tuple(
        Speech("language.option", {"key": str(i + 1)}, lang=lang)
        for i, lang in enumerate(ctx.settings.languages)
    )
    return (Speech("greeting.welcome", lang=ctx.settings.default_language), *options)


def _language_handle(ctx: CallContext, digits: str) -> Outcome:
    keys = "".join(str(i + 1) for i in range(len(ctx.settings.languages)))
    choice = parse_choice(digits, keys)
    if choice is None:
        return Retry()
    ctx.call.language = ctx.settings.languages[int(choice) - 1]
    return _after_language(ctx)


def _language_silence(ctx: CallContext) -> Outcome:
    """Silence: the language on file for a caller-ID match, else the default."""
    ctx.call.language = ctx.settings.default_language
    phone = normalize_e164(ctx.call.from_number)
    matches = accounts.find_by_phone(ctx.db, phone) if phone else []
    if len(matches) == 1:
        wanted = matches[0].language
        for lang in ctx.settings.languages:
            if lang.split("-")[0] == wanted:
                ctx.call.language = lang
                break
    return _after_language(ctx)


def _after_language(ctx: CallContext) -> Outcome:
    outcome = identify(ctx)
    return Go(outcome.state, (Speech("common.tips"), *outcome.before))


# --- identify -------------------------------------------------------------------------------

def identify(ctx: CallContext) -> Go:
    """Caller-ID match when exactly one account lists the calling number, else account entry."""
    phone = normalize_e164(ctx.call.from_number)
    if phone:
        matches = accounts.find_by_phone(ctx.db, phone)
        if len(matches) == 1:
            ctx.call.account_id = matches[0].id
            return Go("confirm_account")
    return Go("account_entry")


def _confirm_prompt(ctx: CallContext) -> SpeechList:
    account = ctx.account
    last4 = account.account_number[-4:] if account else ""
    return (_say("identify.found", last4=speech.digits(last4)),)


def _confirm_handle(ctx: CallContext, digits: str) -> Outcome:
    choice = parse_choice(digits, "12")
    if choice == "1":
        return start_verification(ctx)
    if choice == "2":
        ctx.call.account_id = None
        return Go("account_entry")
    return Retry()


def _account_entry_handle(ctx: CallContext, digits: str) -> Outcome:
    # Bounded per calling number and per line across calls: otherwise anyone can learn
    # which account numbers exist by typing them, call after call.
    guards.lock_caller(ctx.db, guards.caller_key(ctx.call.from_number))
    if guards.lookup_limit(ctx.db, ctx.call, ctx.now, ctx.settings.limits) is not None:
        guards.record(ctx.db, guards.LOOKUP_BLOCKED, ctx.call, ctx.now)
        return Finish(escalate(ctx, (_say("account.lookup_limit"),)))
    number = clean_number(digits.replace("*", ""))
    account = accounts.find_by_number(ctx.db, number) if number else None
    if account is None:
        ctx.call.identify_failures += 1
        guards.record(ctx.db, guards.ACCOUNT_MISS, ctx.call, ctx.now)
        return Retry((_say("account.not_found"),))
    ctx.call.account_id = account.id
    return start_verification(ctx)


# --- verify ---------------------------------------------------------------------------------

def locked(ctx: CallContext) -> bool:
    """Whether this calling number is locked out of the call's account after failures."""
    account = ctx.account
    if account is None:
        return False
    until = accounts.locked_until(ctx.db, account.id, ctx.now,
                                  guards.caller_key(ctx.call.from_number),
                                  ctx.settings.verification)
    return until is not None


def _refuse_locked(ctx: CallContext) -> Outcome:
    guards.record(ctx.db, guards.VERIFY_LOCKED, ctx.call, ctx.now, ctx.call.account_id)
    return Finish(escalate(ctx, (_say("verify.locked"),)))


def start_verification(ctx: CallContext) -> Outcome:
    """Ask for the ZIP or PIN, unless the biller verifies nothing or the account is locked."""
    if ctx.settings.verification.method == "none":
        return verified(ctx)
    if locked(ctx):
        return _refuse_locked(ctx)
    return Go("verify")


def _verify_prompt(ctx: CallContext) -> SpeechList:
    if ctx.settings.verification.method == "pin":
        return (_say("verify.pin"),)
    return (_say("verify.zip"),)


def _verify_digits(ctx: CallContext) -> int | None:
    return 5 if ctx.settings.verification.method == "zip" else None


def _verify_handle(ctx: CallContext, digits: str) -> Outcome:
    account = ctx.account
    if account is None:  # the account vanished from the cache mid-call
        return Go("account_entry")
    # One guess at a time per account, on every worker and machine: the lockout check and
    # the failure it records must not interleave with another call's.
    guards.lock_account(ctx.db, account.id)
    # Checked before the entry: a locked account or a spent call never verifies, whatever
    # is typed (a caller coming back from a transfer that did not connect, say).
    if locked(ctx):
        return _refuse_locked(ctx)
    if ctx.call.verify_failures >= ctx.settings.verification.max_failures_per_call:
        return Finish(escalate(ctx, (_say("verify.failed_final"),)))
    entered = clean_number(digits, max_length=12) or ""
    if ctx.settings.verification.method == "pin":
        ok = check_pin(entered, account.pin_hash, ctx.config.pin_key)
    else:
        expected = (account.service_zip or "")[:5]
        ok = bool(expected) and len(entered) == 5 and entered == expected
    if ok:
        return verified(ctx)
    accounts.record_verification_failure(ctx.db, account.id, ctx.call.call_sid, ctx.now,
                                         guards.caller_key(ctx.call.from_number))
    ctx.call.verify_failures += 1
    if locked(ctx):
        return _refuse_locked(ctx)
    if ctx.call.verify_failures >= ctx.settings.verification.max_failures_per_call:
        return Finish(escalate(ctx, (_say("verify.failed_final"),)))
    return Retry((_say("verify.mismatch"),), counts=False)


def verified(ctx: CallContext) -> Outcome:
    """Verification passed: read the summary, then the main menu."""
    from ivr.calls.summary import summary_speech

    ctx.call.verified = True
    refresh_live_balance(ctx)
    return Go("main_menu", summary_speech(ctx))


def refresh_live_balance(ctx: CallContext) -> None:
    """Read the balance from the accounting system when it can say, quickly; else the cache."""
    account = ctx.account
    if account is None or ctx.accounting is None:
        return
    live = ctx.accounting.live_balance_cents(account.account_number)
    if live is not None and live != account.balance_due_cents:
        account.balance_due_cents = live


# --- main menu ------------------------------------------------------------------------------

def _can_pay(ctx: CallContext) -> bool:
    account = ctx.account
    return bool(account and account.payment_allowed and account.status not in {"closed"})


def _main_prompt(ctx: CallContext) -> SpeechList:
    return (_say("menu.main" if _can_pay(ctx) else "menu.main_no_pay"),)


def _main_handle(ctx: CallContext, digits: str) -> Outcome:
    from ivr.calls.summary import recent_payments_speech, summary_speech

    choice = parse_choice(digits, "123" if _can_pay(ctx) else "23")
    if choice == "1":
        return start_payment(ctx)
    if choice == "2":
        return Go("main_menu", recent_payments_speech(ctx))
    if choice == "3":
        return Go("main_menu", summary_speech(ctx))
    return Retry()


def start_payment(ctx: CallContext) -> Outcome:
    """Begin the payment: the amount menu, or amount entry when nothing is due."""
    account = ctx.account
    assert account is not None  # noqa: S101 - only reachable after verification
    if ctx.call.pay_tries >= ctx.settings.pay.max_tries_per_call:
        return Go("main_menu", (_say("pay.tries_exhausted"),))
    if pay_limited(ctx):
        return refuse_payment(ctx)
    ctx.call.amount_cents = None
    ctx.call.fee_cents = 0
    if account.balance_due_cents <= 0:
        return Go("amount_entry")
    return Go("amount_menu")


# --- amount ---------------------------------------------------------------------------------

def _disconnect_amount(ctx: CallContext) -> int | None:
    """What it takes to stop a pending disconnection, when one is pending."""
    account = ctx.account
    if account is None or account.status != "disconnect_pending":
        return None
    needed = account.past_due_cents if account.past_due_cents > 0 else account.balance_due_cents
    return needed if needed > 0 else None


def _amount_menu_prompt(ctx: CallContext) -> SpeechList:
    account = ctx.account
    assert account is not None  # noqa: S101
    items = [_say("amount.menu_full", amount=ctx.money(account.balance_due_cents))]
    needed = _disconnect_amount(ctx)
    if needed is not None and needed != account.balance_due_cents:
        items.append(_say("amount.menu_disconnect", amount=ctx.money(needed)))
    items.append(_say("amount.menu_other"))
    return tuple(items)


def _choose_amount(ctx: CallContext, cents: int) -> Outcome:
    limits = ctx.settings.amount
    if cents > limits.maximum_cents:
        return Go("amount_entry", (_say("amount.above_maximum",
                                        maximum=ctx.money(limits.maximum_cents)),))
    if cents < limits.minimum_cents:
        return Go("amount_entry", (_say("amount.below_minimum",
                                        minimum=ctx.money(limits.minimum_cents)),))
    ctx.call.amount_cents = cents
    return Go("amount_confirm")


def _amount_menu_handle(ctx: CallContext, digits: str) -> Outcome:
    account = ctx.account
    assert account is not None  # noqa: S101
    needed = _disconnect_amount(ctx)
    offers_needed = needed is not None and needed != account.balance_due_cents
    choice = parse_choice(digits, "123" if offers_needed else "13")
    if choice == "1":
        return _choose_amount(ctx, account.balance_due_cents)
    if choice == "2" and needed is not None:
        return _choose_amount(ctx, needed)
    if choice == "3":
        return Go("amount_entry")
    return Retry()


def _amount_entry_handle(ctx: CallContext, digits: str) -> Outcome:
    cents = parse_amount(digits)
    limits = ctx.settings.amount
    if cents is None:
        return Retry((_say("amount.invalid"),))
    if cents < limits.minimum_cents:
        return Retry((_say("amount.below_minimum", minimum=ctx.money(limits.minimum_cents)),))
    if cents > limits.maximum_cents:
        return Retry((_say("amount.above_maximum", maximum=ctx.money(limits.maximum_cents)),))
    ctx.call.amount_cents = cents
    return Go("amount_confirm")


def _amount_confirm_prompt(ctx: CallContext) -> SpeechList:
    return (_say("amount.confirm", amount=ctx.money(ctx.call.amount_cents or 0)),)


def _amount_confirm_handle(ctx: CallContext, digits: str) -> Outcome:
    choice = parse_choice(digits, "12")
    if choice == "1":
        if ctx.settings.ach.enabled:
            return Go("method")
        ctx.call.method = "card"
        return after_method(ctx)
    if choice == "2":
        account = ctx.account
        if account is not None and account.balance_due_cents > 0:
            return Go("amount_menu")
        return Go("amount_entry")
    return Retry()


# --- method, fee, authorization, confirmation -----------------------------------------------

def _method_handle(ctx: CallContext, digits: str) -> Outcome:
    choice = parse_choice(digits, "12")
    if choice == "1":
        ctx.call.method = "card"
        ctx.call.bank_account_type = None
        return after_method(ctx)
    if choice == "2":
        ctx.call.method = "ach"
        return Go("bank_type")
    return Retry()


def _bank_type_handle(ctx: CallContext, digits: str) -> Outcome:
    choice = parse_choice(digits, "12")
    if choice is None:
        return Retry()
    ctx.call.bank_account_type = "consumer-checking" if choice == "1" else "consumer-savings"
    return after_method(ctx)


def after_method(ctx: CallContext) -> Outcome:
    """Disclose a fee when one applies, else go on to authorization or confirmation."""
    fee = ctx.settings.fee
    ctx.call.fee_cents = fee.ach_cents if ctx.call.method == "ach" else fee.card_cents
    if ctx.call.fee_cents > 0:
        return Go("fee_accept")
    return after_fee(ctx)


def after_fee(ctx: CallContext) -> Outcome:
    """Bank debits need the TEL authorization, which also serves as their final confirmation."""
    if ctx.call.method == "ach":
        _start_authorization_recording(ctx)
        return Go("ach_authorize")
    return Go("final_confirm")


def _start_authorization_recording(ctx: CallContext) -> None:
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


def _stop_authorization_recording(ctx: CallContext) -> str | None:
    """Stop the authorization recording before anything else is said; return its SID."""
    from ivr.calls.twilio_api import TwilioApiError, stop_recording

    sid = ctx.call.ach_recording_sid
    ctx.call.ach_recording_sid = None
    if sid:
        # A failed stop leaves the recording running to the end of the call; it is kept.
        with contextlib.suppress(TwilioApiError):
            stop_recording(ctx.config, ctx.call.call_sid, sid)
    return sid


def _total(ctx: CallContext) -> int:
    return (ctx.call.amount_cents or 0) + ctx.call.fee_cents


def _method_words(ctx: CallContext) -> str:
    key = "words.method_ach" if ctx.call.method == "ach" else "words.method_card"
    return ctx.catalog.render(key, ctx.lang).ssml


def _fee_prompt(ctx: CallContext) -> SpeechList:
    # Without bank payments there is no other way to pay: the choice is accept or cancel.
    prompt_id = "fee.disclose" if ctx.settings.ach.enabled else "fee.disclose_no_choice"
    return (_say(prompt_id, fee=ctx.money(ctx.call.fee_cents), method=_method_words(ctx),
                 total=ctx.money(_total(ctx))),)


def _fee_handle(ctx: CallContext, digits: str) -> Outcome:
    choice = parse_choice(digits, "12")
    if choice == "1":
        return after_fee(ctx)
    if choice == "2":
        ctx.call.fee_cents = 0
        if ctx.settings.ach.enabled:
            return Go("method", (_say("fee.declined"),))
        return Go("main_menu", (_say("pay.cancelled"),))
    return Retry()


def _ach_params(ctx: CallContext) -> dict[str, str]:
    account = ctx.account
    assert account is not None  # noqa: S101
    kind = "words.savings" if ctx.call.bank_account_type == "consumer-savings" else "words.checking"
    return {
        "name": account.customer_name or "",
        "amount": ctx.money(_total(ctx)),
        "date": ctx.date(ctx.today()),
        "account_type": ctx.catalog.render(kind, ctx.lang).ssml,
        "last4": speech.digits(account.account_number[-4:]),
        "phone": speech.phone_number(ctx.settings.ach.office_phone),
    }


def _ach_prompt(ctx: CallContext) -> SpeechList:
    return (Speech("ach.authorize", _ach_params(ctx)),)


def _ach_handle(ctx: CallContext, digits: str) -> Outcome:
    choice = parse_choice(digits, "12")
    recording = _stop_authorization_recording(ctx) if choice else None
    if choice == "1":
        account = ctx.account
        assert account is not None  # noqa: S101
        script = ctx.catalog.render("ach.authorize", ctx.lang, **_ach_params(ctx)).ssml
        ctx.db.add(AchAuthorization(
            call_sid=ctx.call.call_sid, account_id=account.id,
            account_number=account.account_number, caller_number=ctx.call.from_number,
            amount_cents=ctx.call.amount_cents or 0, fee_cents=ctx.call.fee_cents,
            bank_account_type=ctx.call.bank_account_type or "consumer-checking",
            script_version=ctx.settings.ach.script_version, script_text=script,
            language=ctx.lang, authorized_at=ctx.now, recording_sid=recording,
        ))
        return hand_off(ctx, (_say("pay.intro_ach"),))
    if choice == "2":
        return Go("main_menu", (_say("pay.cancelled"),))
    return Retry()


def _final_prompt(ctx: CallContext) -> SpeechList:
    account = ctx.account
    assert account is not None  # noqa: S101
    last4 = speech.digits(account.account_number[-4:])
    if ctx.call.fee_cents:
        return (_say("confirm.card_with_fee", amount=ctx.money(ctx.call.amount_cents or 0),
                     fee=ctx.money(ctx.call.fee_cents), total=ctx.money(_total(ctx)),
                     last4=last4),)
    return (_say("confirm.card", amount=ctx.money(ctx.call.amount_cents or 0), last4=last4),)


def _final_handle(ctx: CallContext, digits: str) -> Outcome:
    choice = parse_choice(digits, "12")
    if choice == "1":
        return hand_off(ctx, (_say("pay.intro_card"),))
    if choice == "2":
        return Go("main_menu", (_say("pay.cancelled"),))
    return Retry()


def pay_limited(ctx: CallContext) -> bool:
    """Whether a card-testing limit stops another <Pay> session on this call (recorded)."""
    account = ctx.account
    assert account is not None  # noqa: S101 - only reachable after verification
    # The row lock makes the count and this call's own hand-off one step per account.
    guards.lock_account(ctx.db, account.id)
    limit = guards.pay_limit(ctx.db, ctx.call, account.id, ctx.now, ctx.settings.limits)
    if limit is None:
        return False
    guards.record(ctx.db, guards.PAY_BLOCKED, ctx.call, ctx.now, account.id)
    return True


def refuse_payment(ctx: CallContext, before: SpeechList = ()) -> Finish:
    """A card-testing limit was reached: say why, then a representative or a goodbye."""
    return Finish(escalate(ctx, (*before, _say("pay.limit_reached"))))


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
        charge_cents=_total(ctx),
        method="ach-debit" if ctx.call.method == "ach" else "credit-card",
        bank_account_type=ctx.call.bank_account_type if ctx.call.method == "ach" else None,
        description=f"Account {account.account_number} call {ctx.call.call_sid}",
    )


# --- after <Pay> ----------------------------------------------------------------------------

def _payment(ctx: CallContext) -> Payment | None:
    if ctx.call.payment_id is None:
        return None
    return ctx.db.get(Payment, ctx.call.payment_id)


def _receipt_prompt(ctx: CallContext) -> SpeechList:
    payment = _payment(ctx)
    code = speech.spell(payment.confirmation_code) if payment else ""
    menu = "receipt.menu_text" if _can_text(ctx) else "receipt.menu"
    return (_say("receipt.number", code=code), _say(menu))


def _can_text(ctx: CallContext) -> bool:
    """A text receipt is offered once, when enabled and the caller's number is usable."""
    from ivr.calls.receipts import can_send

    return (ctx.settings.receipt.text and can_send(ctx.config)
            and normalize_e164(ctx.call.from_number) is not None
            and not ctx.call.text_receipt_sent)


def _receipt_handle(ctx: CallContext, digits: str) -> Outcome:
    choice = parse_choice(digits, "123" if _can_text(ctx) else "12")
    if choice == "1":
        return Go("receipt")
    if choice == "2":
        return Go("main_menu")
    if choice == "3":
        return Go("receipt", _send_text_receipt(ctx))
    return Retry()


def _send_text_receipt(ctx: CallContext) -> SpeechList:
    from ivr.calls.receipts import ReceiptError, send_text
    from ivr.security import mask_account

    payment = _payment(ctx)
    phone = normalize_e164(ctx.call.from_number)
    if payment is None or phone is None:
        return (_say("receipt.text_failed"),)
    total = payment.amount_cents + payment.fee_cents
    body = ctx.catalog.render(
        "receipt.text_body", ctx.lang, amount=cents_to_text(total),
        account_last4=mask_account(payment.account_number)[-4:],
        method=_method_words(ctx), payment_last4=payment.card_last4 or payment.bank_last or "",
        code=payment.confirmation_code).ssml
    try:
        send_text(ctx.config, phone, _plain(body))
    except ReceiptError:
        return (_say("receipt.text_failed"),)
    ctx.call.text_receipt_sent = True
    return (_say("receipt.text_sent", last4=speech.digits(phone[-4:])),)


def _plain(text: str) -> str:
    """Prompt text without escaping, for a text message (our templates carry no tags)."""
    import html

    return html.unescape(text)


def _receipt_silence(ctx: CallContext) -> Outcome:
    return Finish(Hangup((_say("goodbye.thanks"),)))


def _pay_failed_prompt(ctx: CallContext) -> SpeechList:
    return (_say("pay.retry_menu"),)


def _pay_failed_handle(ctx: CallContext, digits: str) -> Outcome:
    choice = parse_choice(digits, "12")
    if choice == "1":
        return start_payment(ctx)
    if choice == "2":
        return Go("main_menu")
    return Retry()


def _until_pound(ctx: CallContext) -> int | None:
    return None


STATES: dict[str, State] = {
    s.name: s
    for s in (
        State("language", _language_prompt, _language_handle, on_silence=_language_silence),
        State("confirm_account", _confirm_prompt, _confirm_handle),
        State("account_entry", lambda _c: (_say("account.enter"),), _account_entry_handle,
              num_digits=_until_pound, sensitive=True),
        State("verify", _verify_prompt, _verify_handle, num_digits=_verify_digits,
              sensitive=True),
        State("main_menu", _main_prompt, _main_handle),
        State("amount_menu", _amount_menu_prompt, _amount_menu_handle),
        State("amount_entry", lambda _c: (_say("amount.enter"),), _amount_entry_handle,
              num_digits=_until_pound),
        State("amount_confirm", _amount_confirm_prompt, _amount_confirm_handle),
        State("method", lambda _c: (_say("method.menu"),), _method_handle),
        State("bank_type", lambda _c: (_say("method.bank_type"),), _bank_type_handle),
        State("fee_accept", _fee_prompt, _fee_handle),
        State("ach_authorize", _ach_prompt, _ach_handle),
        State("final_confirm", _final_prompt, _final_handle),
        State("receipt", _receipt_prompt, _receipt_handle, on_silence=_receipt_silence),
        State("pay_failed", _pay_failed_prompt, _pay_failed_handle),
    )
}

# States outside the menu system: waiting on <Pay>, or finished.
PAYING = "paying"
ENDED = "ended"
