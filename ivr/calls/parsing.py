"""Turning keypad input into values. Nothing here trusts the caller's text."""

from __future__ import annotations

import re

_AMOUNT_STAR = re.compile(r"^(\d{1,9})\*(\d{0,2})$")
_AMOUNT_DIGITS = re.compile(r"^\d{1,11}$")


def parse_amount(digits: str) -> int | None:
    """Keypad amount to cents: "5000" is $50.00 (last two digits are cents), "50*5" is $50.50.

    ``*`` stands for the decimal point, as the prompt explains. Returns None when unreadable.
    """
    text = digits.strip().rstrip("#")
    match = _AMOUNT_STAR.match(text)
    if match:
        dollars, cents = match.groups()
        return int(dollars) * 100 + int(cents.ljust(2, "0"))
    if _AMOUNT_DIGITS.match(text):
        return int(text)
    return None


def parse_choice(digits: str, allowed: str) -> str | None:
    """A single menu key among ``allowed``, or None."""
    text = digits.strip()
    if len(text) == 1 and text in allowed:
        return text
    return None


def clean_number(digits: str, max_length: int = 32) -> str | None:
    """Digits typed for an account number or PIN, or None when there are none or too many."""
    text = digits.strip().rstrip("#")
    if not text or len(text) > max_length or not text.isdigit():
        return None
    return text
