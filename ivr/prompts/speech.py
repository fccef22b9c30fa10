"""Words a text-to-speech voice reads correctly: money, dates, times, codes, per language.

All functions are pure. ``lang`` is a BCP-47 tag such as ``"en-US"`` or ``"es-US"``; only
the primary subtag is used (``"en"`` and ``"es"`` are supported, anything else raises
``ValueError``). Number words come from num2words, month and weekday names from Babel,
with small fix-ups on top (see ``_cardinal``).
"""

from __future__ import annotations

import datetime
import functools
import re
from decimal import Decimal
from typing import Final

from babel.dates import format_date
from num2words import num2words

__all__ = [
    "SUPPORTED_LANGUAGES",
    "date_words",
    "digits",
    "language",
    "money",
    "ordinal",
    "quantity",
    "spell",
    "time_words",
    "weekday_name",
]

SUPPORTED_LANGUAGES: Final = frozenset({"en", "es"})

# Babel locale used for month and weekday names.
_LOCALES: Final = {"en": "en_US", "es": "es_US"}

# (singular, plural) unit names: dollars, then cents.
_DOLLAR: Final = {"en": ("dollar", "dollars"), "es": ("dólar", "dólares")}
_CENT: Final = {"en": ("cent", "cents"), "es": ("centavo", "centavos")}
_MONEY_JOINER: Final = {"en": " and ", "es": " con "}
_DECIMAL_POINT: Final = {"en": "point", "es": "coma"}
_EN_SUFFIXES: Final = {1: "st", 2: "nd", 3: "rd"}

# Spanish: a count ending in "millón"/"millones"/... takes "de" before the noun.
_ES_NEEDS_DE: Final = re.compile(r"(?:millón|millones|billón|billones|trillón|trillones)$")
# Spanish: "uno" shortens to "un" before "mil"/"millones" ("veintiún mil").
_ES_UNO_BEFORE_BIG: Final = re.compile(r"\b(veinti)?uno(?= (?:mil|millones|billones|trillones)\b)")
# Spanish: "uno" shortens to "un" anywhere in a count of a masculine noun.
_ES_UNO_ANYWHERE: Final = re.compile(r"\b(veinti)?uno\b")

_DROP_FROM_CODES: Final = frozenset("-\u2010\u2011\u2012\u2013\u2014\u2212")


def language(lang: str) -> str:
    """Return the supported primary language subtag of ``lang`` ("es-US" -> "es")."""
    if not isinstance(lang, str):
        raise TypeError(f"lang must be a str, not {type(lang).__name__}")
    primary = re.split(r"[-_]", lang.strip(), maxsplit=1)[0].lower()
    if primary not in SUPPORTED_LANGUAGES:
        raise ValueError(f"unsupported language: {lang!r}")
    return primary


def _require_int(value: object, name: str) -> int:
    """Return ``value`` if it is a real int (not bool, not float), else raise TypeError."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    return value


def _apocope(match: re.Match[str]) -> str:
    """Shorten a matched Spanish "uno"/"veintiuno" to "un"/"veintiún"."""
    return "veintiún" if match.group(1) else "un"


def _cardinal(n: int, code: str, *, masculine_noun: bool = False) -> str:
    """Cardinal number words for ``n`` >= 0 in language ``code``.

    English: drop num2words' British "and" and its commas ("one thousand thirty-four").
    Spanish: "uno" -> "un" before "mil"/"millones" and, when counting a masculine noun,
    everywhere ("veintiún dólares", "ciento un dólares").
    """
    words = str(num2words(n, lang=code))
    if code == "en":
        words = words.replace(",", "").replace(" and ", " ")
    elif masculine_noun:
        words = _ES_UNO_ANYWHERE.sub(_apocope, words)
    else:
        words = _ES_UNO_BEFORE_BIG.sub(_apocope, words)
    return words


def _count(n: int, code: str, forms: tuple[str, str]) -> str:
    """``n`` followed by the singular or plural noun ("one dollar", "un millón de dólares")."""
    words = _cardinal(n, code, masculine_noun=True)
    noun = forms[0] if n == 1 else forms[1]
    if code == "es" and _ES_NEEDS_DE.search(words):
        return f"{words} de {noun}"
    return f"{words} {noun}"


def money(cents: int, lang: str) -> str:
    """Speak an amount of US cents.

    en 12345 -> "one hundred twenty-three dollars and forty-five cents",
    es 12345 -> "ciento veintitrés dólares con cuarenta y cinco centavos".
    Raises TypeError for anything but an int (floats and bools included) and ValueError for
    a negative amount; callers word credits themselves using ``abs()``.
    """
    _require_int(cents, "cents")
    if cents < 0:
        raise ValueError("cents must not be negative")
    code = language(lang)
    dollars, rest = divmod(cents, 100)
    parts: list[str] = []
    if dollars or not rest:
        parts.append(_count(dollars, code, _DOLLAR[code]))
    if rest:
        parts.append(_count(rest, code, _CENT[code]))
    return _MONEY_JOINER[code].join(parts)


def ordinal(n: int, lang: str) -> str:
    """Ordinal words for ``n`` >= 1: en "twenty-second", es "vigésimo segundo"."""
    _require_int(n, "n")
    if n < 1:
        raise ValueError("ordinal needs n >= 1")
    code = language(lang)
    words = str(num2words(n, to="ordinal", lang=code))
    if code == "en":
        words = words.replace(",", "").replace(" and ", " ")
    return words


def _en_ordinal_suffix(n: int) -> str:
    """English ordinal with digits: 1 -> "1st", 11 -> "11th", 22 -> "22nd"."""
    suffix = "th" if n % 100 in (11, 12, 13) else _EN_SUFFIXES.get(n % 10, "th")
    return f"{n}{suffix}"


@functools.cache
def _month_name(month: int, code: str) -> str:
    """The month's name in the language (Babel's CLDR data; 24 names, so kept)."""
    return format_date(datetime.date(2000, month, 1), "MMMM", locale=_LOCALES[code])


def date_words(d: datetime.date, lang: str, today: datetime.date | None = None) -> str:
    """Speak a date: en "December 5th", es "5 de diciembre".

    The year is added when ``today`` is given and falls in another year:
    en "January 3rd, 2027", es "3 de enero de 2027".
    """
    code = language(lang)
    month = _month_name(d.month, code)
    with_year = today is not None and today.year != d.year
    if code == "en":
        text = f"{month} {_en_ordinal_suffix(d.day)}"
        return f"{text}, {d.year}" if with_year else text
    text = f"{d.day} de {month}"
    return f"{text} de {d.year}" if with_year else text


def time_words(t: datetime.time, lang: str) -> str:
    """Speak a clock time: en "8 AM", "5:30 PM"; es "8 de la mañana", "5:30 de la tarde".

    Seconds and time zone are ignored. Spanish uses "de la mañana" from 1:00 to 11:59,
    "del mediodía" at 12:00 exactly, "de la tarde" until 19:59 and "de la noche" from 20:00
    and for the midnight hour (00:00-00:59, "12 de la noche").
    """
    code = language(lang)
    hour12 = t.hour % 12 or 12
    clock = f"{hour12}:{t.minute:02d}" if t.minute else str(hour12)
    if code == "en":
        return f"{clock} {'AM' if t.hour < 12 else 'PM'}"
    if t.hour == 12 and t.minute == 0:
        period = "del mediodía"
    elif 1 <= t.hour < 12:
        period = "de la mañana"
    elif 12 <= t.hour < 20:
        period = "de la tarde"
    else:
        period = "de la noche"
    return f"{clock} {period}"


def weekday_name(d: datetime.date, lang: str) -> str:
    """Weekday name: en "Monday", es "lunes"."""
    return format_date(d, "EEEE", locale=_LOCALES[language(lang)])


def spell(text: str) -> str:
    """Read a code one character at a time: "AB12" -> "A, B, 1, 2" (spaces and dashes dropped)."""
    chars = [c.upper() for c in text if not c.isspace() and c not in _DROP_FROM_CODES]
    return ", ".join(chars)


def digits(text: str) -> str:
    """Read only the ASCII digits of ``text`` one at a time: "12-34" -> "1 2 3 4"."""
    return " ".join(c for c in text if c in "0123456789")


def quantity(value: Decimal, lang: str) -> str:
    """Speak a non-negative decimal: Decimal("640") -> "six hundred forty".

    Fractional digits are read one by one after en "point" / es "coma" (trailing zeros
    dropped): Decimal("12.5") -> "twelve point five", "doce coma cinco".
    """
    if not isinstance(value, Decimal):
        raise TypeError(f"value must be a Decimal, not {type(value).__name__}")
    if not value.is_finite():
        raise ValueError(f"value must be finite, not {value}")
    if value < 0:
        raise ValueError("value must not be negative")
    code = language(lang)
    whole, _, fraction = format(abs(value), "f").partition(".")
    words = _cardinal(int(whole), code)
    fraction = fraction.rstrip("0")
    if fraction:
        spoken = " ".join(_cardinal(int(c), code) for c in fraction)
        words = f"{words} {_DECIMAL_POINT[code]} {spoken}"
    return words


def phone_number(number: str) -> str:
    """A phone number read in groups: "+15555550100" -> "5 5 5, 5 5 5, 0 1 0 0"."""
    only = "".join(ch for ch in number if ch.isdigit())
    if len(only) == 11 and only.startswith("1"):
        only = only[1:]
    if len(only) != 10:
        return digits(only)
    return f"{digits(only[:3])}, {digits(only[3:6])}, {digits(only[6:])}"
