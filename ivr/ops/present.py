"""How the console shows values: money, times, and text with personal data masked."""

from __future__ import annotations

import re
from datetime import datetime
from zoneinfo import ZoneInfo

from connectors.phones import mask_phone, normalize_e164
from ivr.models import Payment
from ivr.security import mask_account

# Six or more digits in a token (letters and single spaces or dashes between digit groups
# allowed, as in "4111 1111 1111 1111") look like an account, phone, card or bank number.
# Report line numbers ("line 123456") and ISO dates are ours and kept.
_LONG_NUMBER = re.compile(r"(?<!line )(?<![\w-])[A-Za-z]*\d[\dA-Za-z]*(?:[ -]\d[\dA-Za-z]*)*")
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}(?:[ T]\d{2}(?::\d{2}){0,2})?")


def scrub(text: str | None, limit: int = 2000) -> str:
    """Free text from systems and files (errors, reports) with long numbers masked."""
    if not text:
        return ""

    def mask(match: re.Match[str]) -> str:
        token = match.group(0)
        if sum(ch.isdigit() for ch in token) < 6 or _DATE.fullmatch(token):
            return token
        return mask_account(token)

    return _LONG_NUMBER.sub(mask, text[:limit])


def dollars(cents: int | None) -> str:
    """Integer cents as "$1,234.56" ("-$5.00" for a credit)."""
    if cents is None:
        return ""
    sign = "-" if cents < 0 else ""
    whole, part = divmod(abs(cents), 100)
    return f"{sign}${whole:,}.{part:02d}"


def local_time(value: datetime | None, zone: ZoneInfo) -> str:
    """A stored UTC time in the line's time zone, to the minute."""
    if value is None:
        return ""
    return value.astimezone(zone).strftime("%Y-%m-%d %H:%M %Z")


def seconds_text(seconds: float | None) -> str:
    """A duration as "3 min 05 s"."""
    if seconds is None:
        return "-"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest:02d} s" if minutes else f"{rest} s"


def instrument(payment: Payment) -> str:
    """How it was paid, masked: card brand and last 4, or bank account type and last digits."""
    if payment.method == "card":
        brand = (payment.card_brand or "card").title()
        return f"{brand} ending {payment.card_last4}" if payment.card_last4 else brand
    kind = (payment.bank_account_type or "bank").replace("consumer-", "")
    return f"Bank ({kind}) ending {payment.bank_last}" if payment.bank_last else f"Bank ({kind})"


def taken_by(payment: Payment) -> str:
    """Who took a payment: the line, or the agent by name."""
    if payment.channel == "agent":
        return f"agent {payment.agent_username or ''}".strip()
    return "the line"


def caller(number: str) -> str:
    """A caller's number masked for display (country code and last 4 digits)."""
    e164 = normalize_e164(number)
    return mask_phone(e164) if e164 else ("withheld" if number else "")


def account(number: str | None) -> str:
    """An account number masked to its last 4 characters."""
    return mask_account(number)
