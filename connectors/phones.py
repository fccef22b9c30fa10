"""Phone number normalisation to E.164 and masking for logs."""

from __future__ import annotations

import re

import phonenumbers

__all__ = ["mask_phone", "normalize_e164"]

# Twilio puts these in `From` when the caller hides their number (they spell ANONYMOUS,
# RESTRICTED, BLOCKED, UNKNOWN and UNAVAILABLE on a keypad). Matching an account on them
# would hand a stranger's account to every withheld caller.
_TWILIO_WITHHELD = frozenset({"+266696687", "+7378742833", "+2562533", "+8656696", "+86282452253"})

# phonenumbers rejects anything longer itself; checking first keeps junk cheap.
_MAX_INPUT = 64
# What people type around digits. Anything else (letters in "anonymous", "client:bob",
# "sip:...", "ext 12") is refused up front, before phonenumbers reads vanity letters as digits.
_PHONE_CHARS = re.compile(r"[0-9+()\-. /]+")
# Already-E.164 NANP numbers (most account files, every Twilio `From`) need no library call:
# phonenumbers would return them unchanged, and it costs ~40 us a number.
_NANP_E164 = re.compile(r"\+1[2-9][0-9]{9}")


def normalize_e164(raw: str, default_region: str = "US") -> str | None:
    """Return ``raw`` as E.164 (``+15551234567``), or None if it is not a phone number."""
    text = raw.strip() if raw else ""
    if not text or len(text) > _MAX_INPUT:
        return None
    if not _PHONE_CHARS.fullmatch(text):
        return None
    if _NANP_E164.fullmatch(text):
        return text
    try:
        number = phonenumbers.parse(text, default_region)
    except phonenumbers.NumberParseException:
        return None
    # is_possible (length only), not is_valid: fictional 555-01xx numbers used in tests and
    # demos must work. LOCAL_ONLY (7-digit US) is refused: without an area code it is ambiguous.
    reason = phonenumbers.is_possible_number_with_reason(number)
    if reason != phonenumbers.ValidationResult.IS_POSSIBLE:
        return None
    national = str(number.national_number)
    # NANP area codes never start with 0 or 1; this drops "0000000000" and "1234567890",
    # which length checks alone let through.
    if number.country_code == 1 and (len(national) != 10 or national[0] in "01"):
        return None
    e164 = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    if e164 in _TWILIO_WITHHELD:
        return None
    return e164


def _country_code(digits: str) -> str:
    """The country calling code ``digits`` start with ("" when none does).

    Calling codes are a prefix code (no code begins another), so the first known prefix of
    1-3 digits is the code: the answer phonenumbers.parse gives, without its ~40 us a call
    (every webhook logs a masked caller)."""
    for length in (1, 2, 3):
        if int(digits[:length] or "0") in phonenumbers.COUNTRY_CODE_TO_REGION_CODE:
            return digits[:length]
    return ""


def mask_phone(e164: str) -> str:
    """Mask a number for logs, keeping country code and last 4 digits: ``+1******4567``."""
    if not e164.startswith("+") or not e164[1:].isdigit() or not e164.isascii():
        # Not a number we produced ("anonymous", junk); never echo it, it may be PII.
        return "***"
    digits = e164[1:]
    country = _country_code(digits)
    rest = digits[len(country) :]
    if len(rest) <= 4:
        # Too short to hide anything while showing 4 digits; show less rather than all.
        return "+" + country + "*" * len(rest)
    return "+" + country + "*" * (len(rest) - 4) + rest[-4:]
