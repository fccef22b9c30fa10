"""Cell parsers: one value from the text of one cell, or a ``FieldError`` saying why not.

Every account layout reads its cells through these (``connectors.files.columns`` says which
column uses which), so a value is accepted or refused by the same rule in every layout.
``RowRules`` carries what a declared layout may spell its own way: amounts, dates and the
phone separator. A parser sees a cell already stripped and never blank: a blank cell takes
its column's default before any parser runs.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal

from connectors.phones import normalize_e164

__all__ = [
    "MAX_AMOUNT_INT_DIGITS",
    "YES_NO",
    "FieldError",
    "OneOf",
    "Parser",
    "ParserFactory",
    "RowRules",
    "account_number",
    "amount",
    "layout_date",
    "not_negative_amount",
    "parse_amount_cents",
    "parse_count",
    "parse_iso_date",
    "phones",
    "pin",
    "show_value",
    "text",
    "unit",
    "usage",
    "zip_code",
]

# ASCII-only classes throughout: str.isdigit() and \d accept Arabic-Indic and other digits,
# which Decimal and date would then happily parse.
_ACCOUNT_RE = re.compile(r"[A-Za-z0-9-]{1,32}")
_AMOUNT_RE = re.compile(r"-?[0-9]+(?:\.[0-9]{1,2})?")
# Fits the cache's NUMERIC(14, 3) column exactly, so nothing is rounded or overflows there.
_USAGE_RE = re.compile(r"-?[0-9]{1,11}(?:\.[0-9]{1,3})?")
_ZIP_RE = re.compile(r"([0-9]{5})(?:-[0-9]{4})?")
_PIN_RE = re.compile(r"[0-9]{4,8}")
_DATE_RE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_COUNT_RE = re.compile(r"[0-9]{1,12}")

# Keeps cents inside a signed 64-bit column with room to sum a large file.
MAX_AMOUNT_INT_DIGITS = 12
_MAX_SHOWN_VALUE = 60

Parser = Callable[[str, str], object]
"""``parse(column, cell)``: the value of a non-blank, stripped cell; raises ``FieldError``."""


class FieldError(Exception):
    """One cell failed validation; the message is the user-facing reason."""


def show_value(value: str) -> str:
    """Quote a bad value for a reason, cut short so one huge cell can't flood a report."""
    if len(value) > _MAX_SHOWN_VALUE:
        value = value[:_MAX_SHOWN_VALUE] + "..."
    return repr(value)


def parse_amount_cents(column: str, raw: str) -> int:
    """Parse ``123.45`` / ``-5`` / ``0.5`` into integer cents; anything else is an error."""
    text = raw.strip()
    # The regex rejects exponents, NaN, Infinity, thousands separators and currency signs,
    # all of which Decimal alone would accept or misread.
    if not _AMOUNT_RE.fullmatch(text):
        raise FieldError(f"{column}: {show_value(raw)} is not an amount")
    negative = text.startswith("-")
    whole, _, fraction = text.lstrip("-").partition(".")
    if len(whole.lstrip("0")) > MAX_AMOUNT_INT_DIGITS:
        raise FieldError(f"{column}: {show_value(raw)} is too large")
    # Exact integer arithmetic on the digits the regex allowed (at most two decimals).
    cents = int(whole) * 100 + int(fraction.ljust(2, "0"))
    return -cents if negative else cents


def parse_iso_date(column: str, raw: str) -> date | None:
    """Parse a ``YYYY-MM-DD`` cell; blank is None."""
    if not raw:
        return None
    # date.fromisoformat in 3.11 also takes "20240131" and week dates; the contract is
    # YYYY-MM-DD only.
    if not _DATE_RE.fullmatch(raw):
        raise FieldError(f"{column}: {show_value(raw)} is not a date (YYYY-MM-DD)")
    try:
        return date.fromisoformat(raw)
    except ValueError:
        raise FieldError(f"{column}: {show_value(raw)} is not a real date") from None


def parse_count(raw: str) -> int:
    """Parse a control record's record count (ASCII digits only)."""
    text = raw.strip()
    if not _COUNT_RE.fullmatch(text):
        raise FieldError(f"{show_value(text)} is not a record count")
    return int(text)


@dataclass(frozen=True)
class RowRules:
    """How a layout spells amounts, dates and phone lists; the defaults are the
    default layout's (docs/files.md).

    ``value_maps`` maps a column name to {file value: our value}; keys are matched without
    regard to case and values not in the map pass through to the column's own validation.
    """

    parse_amount: Callable[[str, str], int] = parse_amount_cents
    parse_date: Callable[[str, str], date | None] = parse_iso_date
    phone_separator: str = ";"
    value_maps: Mapping[str, Mapping[str, str]] = field(default_factory=dict)


ParserFactory = Callable[[RowRules], Parser]
"""Makes a column's parser for a layout's ``RowRules`` (most parsers ignore them)."""


# --- what a column's ``read`` may be: each is, or returns, a ParserFactory ------------------


def _account_number(column: str, raw: str) -> str:
    if not _ACCOUNT_RE.fullmatch(raw) or raw.strip("-") == "":
        raise FieldError(f"{column}: {show_value(raw)} must be 1-32 letters, digits or dashes")
    return raw


def account_number(rules: RowRules) -> Parser:
    """1 to 32 letters, digits or dashes (not dashes alone), kept as text."""
    return _account_number


def amount(rules: RowRules) -> Parser:
    """An amount in the layout's spelling; negative is a credit."""
    return rules.parse_amount


def not_negative_amount(rules: RowRules) -> Parser:
    """An amount in the layout's spelling that cannot be negative."""
    parse_amount = rules.parse_amount

    def parse(column: str, raw: str) -> int:
        cents = parse_amount(column, raw)
        if cents < 0:
            raise FieldError(f"{column}: {show_value(raw)} cannot be negative")
        return cents

    return parse


_SMALL_COUNT_RE = re.compile(r"[0-9]{1,4}")


def _count(column: str, raw: str) -> int:
    if not _SMALL_COUNT_RE.fullmatch(raw):
        raise FieldError(f"{column}: {show_value(raw)} is not a whole number from 0 to 9999")
    return int(raw)


def count(rules: RowRules) -> Parser:
    """A whole number from 0 to 9999 (how many times something happened), ASCII digits."""
    return _count


def layout_date(rules: RowRules) -> Parser:
    """A calendar date in the layout's date format."""
    return rules.parse_date


def phones(rules: RowRules) -> Parser:
    """Phone numbers separated by the layout's separator, normalised to E.164, each once."""
    separator = rules.phone_separator

    def parse(column: str, raw: str) -> tuple[str, ...]:
        found: list[str] = []
        for part in raw.split(separator):
            piece = part.strip()
            if not piece:
                # Tolerate "a;b;" and "a;;b" from hand-edited sheets.
                continue
            e164 = normalize_e164(piece)
            if e164 is None:
                raise FieldError(f"{column}: {show_value(piece)} is not a phone number")
            if e164 not in found:
                found.append(e164)
        return tuple(found)

    return parse


class text:  # lower case: used like the function factories beside it
    """Free text of at most ``max_length`` characters (control characters are refused for
    every column alike)."""

    def __init__(self, max_length: int) -> None:
        self.max_length = max_length

    def _parse(self, column: str, raw: str) -> str:
        if len(raw) > self.max_length:
            raise FieldError(
                f"{column}: {show_value(raw)} is longer than {self.max_length} characters")
        return raw

    def __call__(self, rules: RowRules) -> Parser:
        return self._parse


class OneOf:
    """A ``read`` for one of ``choices``, in any case (stored in lower case)."""

    def __init__(self, choices: frozenset[str]) -> None:
        self.choices = choices
        self._shown = ", ".join(sorted(choices))

    def _parse(self, column: str, raw: str) -> str:
        value = raw.lower()
        if value not in self.choices:
            raise FieldError(f"{column}: {show_value(raw)} is not one of {self._shown}")
        return value

    def __call__(self, rules: RowRules) -> Parser:
        return self._parse


def _zip_code(column: str, raw: str) -> str:
    match = _ZIP_RE.fullmatch(raw)
    if match is None:
        raise FieldError(f"{column}: {show_value(raw)} is not a ZIP code (12345 or 12345-6789)")
    return match.group(1)


def zip_code(rules: RowRules) -> Parser:
    """A US ZIP code, ``12345`` or ``12345-6789``; the first five digits are kept."""
    return _zip_code


def _pin(column: str, raw: str) -> str:
    if not _PIN_RE.fullmatch(raw):
        # The value is a credential (or a typo of one): never echo it into reports or logs.
        raise FieldError(f"{column}: must be 4 to 8 digits (value not shown)")
    return raw


def pin(rules: RowRules) -> Parser:
    """A PIN of 4 to 8 digits; a bad one is reported without showing it."""
    return _pin


class _YesNo:
    """A ``read`` for ``Y`` or ``N``, in any case, as a bool."""

    choices = frozenset({"Y", "N"})

    @staticmethod
    def _parse(column: str, raw: str) -> bool:
        value = raw.upper()
        if value == "Y":
            return True
        if value == "N":
            return False
        raise FieldError(f"{column}: {show_value(raw)} is not Y or N")

    def __call__(self, rules: RowRules) -> Parser:
        return self._parse


YES_NO = _YesNo()


def _usage(column: str, raw: str) -> Decimal:
    # Negative usage is real (net-metered solar); exponents and NaN are not.
    if not _USAGE_RE.fullmatch(raw):
        raise FieldError(f"{column}: {show_value(raw)} is not a number with at most 3 decimals")
    return Decimal(raw)


def usage(rules: RowRules) -> Parser:
    """A quantity with at most 3 decimals, possibly negative."""
    return _usage


class unit:  # lower case: used like the function factories beside it
    """A unit name (``kWh``): printable, at most ``max_length`` characters."""

    def __init__(self, max_length: int) -> None:
        self.max_length = max_length

    def _parse(self, column: str, raw: str) -> str:
        if len(raw) > self.max_length or not raw.isprintable():
            raise FieldError(f"{column}: {show_value(raw)} is not a unit name")
        return raw

    def __call__(self, rules: RowRules) -> Parser:
        return self._parse
