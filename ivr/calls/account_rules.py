"""An account's payment rules, from the account file and the line settings: which ways to pay
it may use, which amounts it may pay, and what a payment is for. Pure: no database, no call.

The account file's `ach_allowed`, `card_allowed`, `minimum_payment`, `full_payment_required`
and `reconnect_amount` (docs/files.md) narrow what the line allows (`[ach]`, `[amount]`,
`[reconnect]` in settings.toml); they never widen it. So does a recent bank return that
switched the account's bank payments off (`ach_off_until`, docs/returns.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from connectors.files.columns import AccountStatus
from ivr.models import Account
from ivr.prompts.settings import LineSettings

CARD = "card"
ACH = "ach"
# Why a single way to pay is left (None: the line itself offers only one, as before).
BY_ACCOUNT = "account"
BY_RECONNECT = "reconnect"
BY_RETURN = "return"  # bank payments off after a bank return (docs/returns.md)
# Payment.purpose of a payment that restores a disconnected account's service.
RECONNECT = "reconnect"


@dataclass(frozen=True)
class Methods:
    """The ways an account may pay now, in menu order, and why only one is left (if so)."""

    allowed: tuple[str, ...]
    why_one: str | None = None


@dataclass(frozen=True)
class Refusal:
    """An amount the account may not pay: the prompt that says why, and the amount it names
    (``name`` is the prompt's placeholder)."""

    prompt_id: str
    name: str
    cents: int


def reconnecting(account: Account, settings: LineSettings) -> bool:
    """A disconnected account that may pay by phone to have its service restored."""
    return account.status == AccountStatus.DISCONNECTED and settings.reconnect.enabled


def reconnect_amount(account: Account) -> int:
    """What restores the service: the file's `reconnect_amount`, else the balance."""
    if account.reconnect_cents is not None and account.reconnect_cents > 0:
        return account.reconnect_cents
    return account.balance_due_cents


def bank_off(account: Account, today: date) -> bool:
    """Bank payments are off today after a bank return (``ach_off_until``, inclusive)."""
    return account.ach_off_until is not None and today <= account.ach_off_until


def methods(account: Account, settings: LineSettings, today: date) -> Methods:
    """The line's ways to pay, less those the account refuses or a bank return switched
    off, and for a reconnection only those `[reconnect] methods` lists."""
    line = (CARD, ACH) if settings.ach.enabled else (CARD,)
    by_account = tuple(m for m in line
                       if (account.card_allowed if m == CARD else account.ach_allowed))
    allowed, why = by_account, BY_ACCOUNT
    if ACH in by_account and bank_off(account, today):
        by_account = tuple(m for m in by_account if m != ACH)
        allowed, why = by_account, BY_RETURN
    if reconnecting(account, settings):
        allowed = tuple(m for m in by_account if m in settings.reconnect.methods)
        if allowed != by_account:
            why = BY_RECONNECT
    return Methods(allowed, why if len(allowed) == 1 and len(line) > 1 else None)


def phone_payable(account: Account, settings: LineSettings, today: date) -> bool:
    """Payments by phone are allowed, the account is not closed, and a way to pay is left."""
    return (account.payment_allowed and account.status != AccountStatus.CLOSED
            and bool(methods(account, settings, today).allowed))


def full_only(account: Account) -> bool:
    """Only the whole balance may be paid (`full_payment_required`, with a balance owed)."""
    return account.full_payment_required and account.balance_due_cents > 0


def full_only_amounts(account: Account, settings: LineSettings) -> tuple[int, ...]:
    """What an account that takes the full balance only may pay: the balance, and for a
    reconnection its reconnection amount too (docs/files.md)."""
    amounts = [account.balance_due_cents]
    if reconnecting(account, settings):
        amounts.append(reconnect_amount(account))
    return tuple(dict.fromkeys(amounts))


def account_minimum(account: Account) -> int | None:
    """The account's own smallest payment, never above the balance owed (a balance below it
    can still be paid in full); None when the account sets none or owes nothing."""
    minimum = account.minimum_payment_cents
    if minimum is None or minimum <= 0 or account.balance_due_cents <= 0:
        return None
    return min(minimum, account.balance_due_cents)


def refusal(account: Account, settings: LineSettings, cents: int) -> Refusal | None:
    """Why the account may not pay ``cents`` now, or None: the line's limits first, then the
    account's full-balance rule, then its minimum."""
    limits = settings.amount
    if cents > limits.maximum_cents:
        return Refusal("amount.above_maximum", "maximum", limits.maximum_cents)
    if full_only(account) and cents not in full_only_amounts(account, settings):
        return Refusal("amount.full_only", "amount", account.balance_due_cents)
    if cents < limits.minimum_cents:
        return Refusal("amount.below_minimum", "minimum", limits.minimum_cents)
    minimum = account_minimum(account)
    if minimum is not None and cents < minimum:
        return Refusal("amount.below_account_minimum", "minimum", minimum)
    return None


def purpose(account: Account, settings: LineSettings, cents: int) -> str | None:
    """What a payment of ``cents`` is for: "reconnect" when it restores the service, else
    None (the bill)."""
    if reconnecting(account, settings) and cents >= reconnect_amount(account):
        return RECONNECT
    return None
