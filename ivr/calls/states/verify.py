"""Verification: the service ZIP or a PIN, with the per-call limit and the lockout."""

from __future__ import annotations

from datetime import datetime

from ivr.accounts import cache as accounts
from ivr.arrangements.store import arrangement_ahead
from ivr.calls import guards
from ivr.calls.agent import escalate
from ivr.calls.context import CallContext
from ivr.calls.menu import SpeechList, State, say
from ivr.calls.parsing import clean_number
from ivr.calls.steps import Finish, Go, Outcome, Retry
from ivr.db_driver import ReadAhead
from ivr.prompts.settings import LineSettings
from ivr.security import check_pin


def locked(ctx: CallContext) -> bool:
    """Whether this calling number is locked out of the call's account after failures."""
    account = ctx.account
    if account is None:
        return False
    until = accounts.locked_until(ctx.handle, account.id, ctx.now,
                                  guards.caller_key(ctx.call.from_number),
                                  ctx.settings.verification)
    return until is not None


def _refuse_locked(ctx: CallContext) -> Outcome:
    guards.record(ctx.db, guards.VERIFY_LOCKED, ctx.call, ctx.now, ctx.call.account_id)
    return Finish(escalate(ctx, (say("verify.locked"),)))


def start_verification(ctx: CallContext) -> Outcome:
    """Ask for the ZIP or PIN, unless the biller verifies nothing or the account is locked."""
    if ctx.settings.verification.method == "none":
        return verified(ctx)
    if locked(ctx):
        return _refuse_locked(ctx)
    return Go("verify")


def _verify_prompt(ctx: CallContext) -> SpeechList:
    if ctx.settings.verification.method == "pin":
        return (say("verify.pin"),)
    return (say("verify.zip"),)


def _verify_digits(ctx: CallContext) -> int | None:
    return 5 if ctx.settings.verification.method == "zip" else None


# What one ZIP/PIN entry came to (check_entry); the line and the agent's page share it.
PASSED, MISMATCH, LOCKED, SPENT = "passed", "mismatch", "locked", "spent"


def check_entry(ctx: CallContext, digits: str) -> str:
    """Check a ZIP or PIN for the call's account, counting a wrong one in the per-call limit
    and the cross-call lockout: PASSED, MISMATCH, LOCKED (this number is locked out of the
    account) or SPENT (the call has used its tries). The caller records LOCKED and SPENT."""
    account = ctx.account
    assert account is not None  # noqa: S101 - the caller checks
    # One guess at a time per account, on every worker and machine: the lockout check and
    # the failure it records must not interleave with another call's.
    guards.lock_account(ctx.handle, account.id)
    # Checked before the entry: a locked account or a spent call never verifies, whatever
    # is typed (a caller coming back from a transfer that did not connect, say).
    if locked(ctx):
        return LOCKED
    if ctx.call.verify_failures >= ctx.settings.verification.max_failures_per_call:
        return SPENT
    entered = clean_number(digits, max_length=12) or ""
    if ctx.settings.verification.method == "pin":
        ok = check_pin(entered, account.pin_hash, ctx.config.pin_key)
    else:
        expected = (account.service_zip or "")[:5]
        ok = bool(expected) and len(entered) == 5 and entered == expected
    if ok:
        return PASSED
    accounts.record_verification_failure(ctx.db, account.id, ctx.call.call_sid, ctx.now,
                                         guards.caller_key(ctx.call.from_number))
    ctx.call.verify_failures += 1
    if locked(ctx):
        return LOCKED
    if ctx.call.verify_failures >= ctx.settings.verification.max_failures_per_call:
        return SPENT
    return MISMATCH


def _verify_handle(ctx: CallContext, digits: str) -> Outcome:
    """The 5-digit service ZIP (or the PIN then `#`): the summary, then the main menu."""
    if ctx.account is None:  # the account vanished from the cache mid-call
        return Go("account_entry")
    check = check_entry(ctx, digits)
    if check == PASSED:
        return verified(ctx)
    if check == LOCKED:
        return _refuse_locked(ctx)
    if check == SPENT:
        return Finish(escalate(ctx, (say("verify.failed_final"),)))
    return Retry((say("verify.mismatch"),), counts=False)


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


def _verify_ahead(call_sid: str, settings: LineSettings, now: datetime) -> tuple[ReadAhead, ...]:
    # In check_entry's order: the account's lock, its failures under it, then the summary's
    # active arrangement.
    return (guards.account_lock_ahead(call_sid),
            accounts.lockout_ahead(call_sid, now, settings.verification),
            arrangement_ahead(call_sid))


def lockout_ahead(call_sid: str, settings: LineSettings, now: datetime) -> tuple[ReadAhead, ...]:
    """The lockout's read (``locked``), ahead: for a state whose answer starts verification."""
    return (accounts.lockout_ahead(call_sid, now, settings.verification),)


VERIFY = State("verify", asks=("verify.zip", "verify.pin"), question=_verify_prompt,
               handle=_verify_handle, num_digits=_verify_digits, sensitive=True,
               ahead=_verify_ahead)
