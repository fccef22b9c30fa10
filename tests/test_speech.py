"""Tests for ivr.prompts.speech: speakable money, dates, times and codes."""

from __future__ import annotations

import datetime
import re
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ivr.prompts import speech

FAST = settings(max_examples=200, deadline=None, database=None)
MAX_CENTS = 10**9

# --- test oracles: number words back to integers (independent of num2words) -----------------

_EN_SMALL = {
    "zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7,
    "eight": 8, "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13,
    "fourteen": 14, "fifteen": 15, "sixteen": 16, "seventeen": 17, "eighteen": 18,
    "nineteen": 19,
}  # fmt: skip
_EN_TENS = {
    "twenty": 20, "thirty": 30, "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70,
    "eighty": 80, "ninety": 90,
}  # fmt: skip
_ES_WORDS = {
    "cero": 0, "un": 1, "uno": 1, "dos": 2, "tres": 3, "cuatro": 4, "cinco": 5, "seis": 6,
    "siete": 7, "ocho": 8, "nueve": 9, "diez": 10, "once": 11, "doce": 12, "trece": 13,
    "catorce": 14, "quince": 15, "dieciséis": 16, "diecisiete": 17, "dieciocho": 18,
    "diecinueve": 19, "veinte": 20, "veintiún": 21, "veintiuno": 21, "veintidós": 22,
    "veintitrés": 23, "veinticuatro": 24, "veinticinco": 25, "veintiséis": 26,
    "veintisiete": 27, "veintiocho": 28, "veintinueve": 29, "treinta": 30, "cuarenta": 40,
    "cincuenta": 50, "sesenta": 60, "setenta": 70, "ochenta": 80, "noventa": 90,
    "cien": 100, "ciento": 100, "doscientos": 200, "trescientos": 300,
    "cuatrocientos": 400, "quinientos": 500, "seiscientos": 600, "setecientos": 700,
    "ochocientos": 800, "novecientos": 900,
}  # fmt: skip


def parse_en(words: str) -> int:
    """Parse US-style English number words below one billion."""
    total = current = 0
    for token in words.replace("-", " ").split():
        if token in _EN_SMALL:
            current += _EN_SMALL[token]
        elif token in _EN_TENS:
            current += _EN_TENS[token]
        elif token == "hundred":
            current *= 100
        elif token == "thousand":
            total += current * 1000
            current = 0
        elif token == "million":
            total += current * 1_000_000
            current = 0
        else:
            raise AssertionError(f"unexpected English token {token!r} in {words!r}")
    return total + current


def parse_es(words: str) -> int:
    """Parse Spanish number words below one thousand million."""
    total = current = 0
    for token in words.split():
        if token in _ES_WORDS:
            current += _ES_WORDS[token]
        elif token == "y":
            continue
        elif token == "mil":
            current = (current or 1) * 1000
        elif token in ("millón", "millones"):
            total += current * 1_000_000
            current = 0
        else:
            raise AssertionError(f"unexpected Spanish token {token!r} in {words!r}")
    return total + current


def test_oracles_parse_known_phrases() -> None:
    assert parse_en("one thousand thirty-four") == 1034
    assert parse_en("two million one hundred thousand five") == 2_100_005
    assert parse_es("un millón veintiún mil trescientos") == 1_021_300
    assert parse_es("ciento veintitrés") == 123


# --- money ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cents", "expected"),
    [
        (12345, "one hundred twenty-three dollars and forty-five cents"),
        (100, "one dollar"),
        (101, "one dollar and one cent"),
        (5, "five cents"),
        (1, "one cent"),
        (0, "zero dollars"),
        (103454, "one thousand thirty-four dollars and fifty-four cents"),
        (100000000, "one million dollars"),
        (10100, "one hundred one dollars"),
        (200, "two dollars"),
        (210000000, "two million one hundred thousand dollars"),
        (100100000, "one million one thousand dollars"),
    ],
)
def test_money_en(cents: int, expected: str) -> None:
    assert speech.money(cents, "en-US") == expected


@pytest.mark.parametrize(
    ("cents", "expected"),
    [
        (12345, "ciento veintitrés dólares con cuarenta y cinco centavos"),
        (100, "un dólar"),
        (2100, "veintiún dólares"),
        (1, "un centavo"),
        (21, "veintiún centavos"),
        (31, "treinta y un centavos"),
        (101, "un dólar con un centavo"),
        (10100, "ciento un dólares"),
        (100000, "mil dólares"),
        (100100, "mil un dólares"),
        (2100000, "veintiún mil dólares"),
        (3100000, "treinta y un mil dólares"),
        (0, "cero dólares"),
        (100000000, "un millón de dólares"),
        (200000000, "dos millones de dólares"),
        (100100000, "un millón mil dólares"),
        (2100000000, "veintiún millones de dólares"),
    ],
)
def test_money_es(cents: int, expected: str) -> None:
    assert speech.money(cents, "es-US") == expected


@pytest.mark.parametrize("lang", ["en", "EN-us", "en_US", "en-GB"])
def test_language_tags_use_primary_subtag(lang: str) -> None:
    assert speech.money(100, lang) == "one dollar"
    assert speech.language(lang) == "en"


@pytest.mark.parametrize("lang", ["fr-FR", "de", "", "xx-US", "english"])
def test_unknown_language_raises(lang: str) -> None:
    with pytest.raises(ValueError, match="unsupported language"):
        speech.money(100, lang)
    with pytest.raises(ValueError, match="unsupported language"):
        speech.date_words(datetime.date(2026, 1, 1), lang)


@pytest.mark.parametrize("bad", [1.0, 12.34, True, False, Decimal("1"), "100", None])
def test_money_rejects_non_int(bad: object) -> None:
    with pytest.raises(TypeError):
        speech.money(bad, "en")  # type: ignore[arg-type]


def test_money_rejects_negative() -> None:
    with pytest.raises(ValueError, match="negative"):
        speech.money(-1, "en")
    with pytest.raises(ValueError, match="negative"):
        speech.money(-12345, "es")


@FAST
@given(st.integers(min_value=0, max_value=MAX_CENTS))
def test_money_en_properties(cents: int) -> None:
    text = speech.money(cents, "en-US")
    dollars, rest = divmod(cents, 100)
    assert not any(c.isdigit() for c in text)
    parts = text.split(" and ")  # the single joiner; no "and" inside number words
    expected_parts = int(dollars > 0 or rest == 0) + int(rest > 0)
    assert len(parts) == expected_parts, text
    assert "," not in text
    if dollars or not rest:
        number, unit = parts[0].rsplit(" ", 1)
        assert unit == ("dollar" if dollars == 1 else "dollars")
        assert parse_en(number) == dollars
    if rest:
        number, unit = parts[-1].rsplit(" ", 1)
        assert unit == ("cent" if rest == 1 else "cents")
        assert parse_en(number) == rest


@FAST
@given(st.integers(min_value=0, max_value=MAX_CENTS))
def test_money_es_properties(cents: int) -> None:
    text = speech.money(cents, "es-US")
    dollars, rest = divmod(cents, 100)
    assert not any(c.isdigit() for c in text)
    assert "uno dólar" not in text
    assert "veintiuno dólares" not in text
    # Every count is of a masculine noun, so "uno" is always shortened.
    assert not re.search(r"\b(?:veinti)?uno\b", text), text
    parts = text.split(" con ")
    assert len(parts) == int(dollars > 0 or rest == 0) + int(rest > 0), text
    if dollars or not rest:
        number, unit = parts[0].rsplit(" ", 1)
        assert unit == ("dólar" if dollars == 1 else "dólares")
        needs_de = dollars > 0 and dollars % 1_000_000 == 0
        assert number.endswith(" de") == needs_de, text
        assert parse_es(number.removesuffix(" de")) == dollars
    if rest:
        number, unit = parts[-1].rsplit(" ", 1)
        assert unit == ("centavo" if rest == 1 else "centavos")
        assert parse_es(number) == rest


# --- dates, times, weekdays ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("day", "expected"),
    [
        (1, "December 1st"),
        (2, "December 2nd"),
        (3, "December 3rd"),
        (4, "December 4th"),
        (5, "December 5th"),
        (11, "December 11th"),
        (12, "December 12th"),
        (13, "December 13th"),
        (21, "December 21st"),
        (22, "December 22nd"),
        (23, "December 23rd"),
        (31, "December 31st"),
    ],
)
def test_date_words_en_ordinals(day: int, expected: str) -> None:
    assert speech.date_words(datetime.date(2026, 12, day), "en-US") == expected


def test_date_words_es() -> None:
    assert speech.date_words(datetime.date(2026, 12, 5), "es-US") == "5 de diciembre"


def test_date_words_year_only_when_other_year() -> None:
    today = datetime.date(2026, 12, 20)
    d = datetime.date(2027, 1, 3)
    assert speech.date_words(d, "en-US", today=today) == "January 3rd, 2027"
    assert speech.date_words(d, "es-US", today=today) == "3 de enero de 2027"
    same_year = datetime.date(2026, 12, 28)
    assert speech.date_words(same_year, "en", today=today) == "December 28th"
    assert speech.date_words(same_year, "es", today=today) == "28 de diciembre"
    assert speech.date_words(d, "en") == "January 3rd"


def test_date_words_every_day_of_leap_year() -> None:
    start = datetime.date(2028, 1, 1)
    for offset in range(366):
        d = start + datetime.timedelta(days=offset)
        for lang in ("en-US", "es-US"):
            text = speech.date_words(d, lang)
            assert text
            assert re.search(rf"\b{d.day}(?:st|nd|rd|th)?\b", text), text
        assert speech.date_words(d, "en").startswith(d.strftime("%B"))
    assert speech.date_words(datetime.date(2028, 2, 29), "es") == "29 de febrero"


@pytest.mark.parametrize(
    ("hour", "minute", "en", "es"),
    [
        (8, 0, "8 AM", "8 de la mañana"),
        (17, 30, "5:30 PM", "5:30 de la tarde"),
        (12, 0, "12 PM", "12 del mediodía"),
        (12, 15, "12:15 PM", "12:15 de la tarde"),
        (21, 0, "9 PM", "9 de la noche"),
        (20, 5, "8:05 PM", "8:05 de la noche"),
        (19, 59, "7:59 PM", "7:59 de la tarde"),
        (11, 59, "11:59 AM", "11:59 de la mañana"),
        (0, 0, "12 AM", "12 de la noche"),
        (0, 30, "12:30 AM", "12:30 de la noche"),
        (1, 0, "1 AM", "1 de la mañana"),
    ],
)
def test_time_words(hour: int, minute: int, en: str, es: str) -> None:
    t = datetime.time(hour, minute, 42)
    assert speech.time_words(t, "en-US") == en
    assert speech.time_words(t, "es-US") == es


def test_time_words_every_minute() -> None:
    for minute_of_day in range(24 * 60):
        t = datetime.time(*divmod(minute_of_day, 60))
        en = speech.time_words(t, "en")
        assert en.endswith(" AM" if t.hour < 12 else " PM")
        es = speech.time_words(t, "es")
        assert re.fullmatch(r"(?:1[0-2]|[1-9])(?::[0-5]\d)? de(?:l| la) \w+", es), es


def test_weekday_name() -> None:
    monday = datetime.date(2026, 11, 23)
    assert speech.weekday_name(monday, "en-US") == "Monday"
    assert speech.weekday_name(monday, "es-US") == "lunes"
    week = [monday + datetime.timedelta(days=i) for i in range(7)]
    assert len({speech.weekday_name(d, "es") for d in week}) == 7
    assert speech.weekday_name(monday + datetime.timedelta(days=6), "es") == "domingo"


# --- codes ---------------------------------------------------------------------------------


def test_spell() -> None:
    assert speech.spell("AB12") == "A, B, 1, 2"
    assert speech.spell("ab-12 x") == "A, B, 1, 2, X"
    assert speech.spell(" - ") == ""


def test_digits() -> None:
    assert speech.digits("1234") == "1 2 3 4"
    assert speech.digits("(555) 123-4567 ext") == "5 5 5 1 2 3 4 5 6 7"
    assert speech.digits("none") == ""


@FAST
@given(st.text(alphabet="ABCDEFGHJKabcxyz0123456789 -", max_size=20))
def test_spell_property(text: str) -> None:
    kept = [c.upper() for c in text if c not in " -"]
    spoken = speech.spell(text)
    assert spoken == ", ".join(kept)
    assert (spoken.split(", ") if spoken else []) == kept


@FAST
@given(st.text(max_size=30))
def test_digits_property(text: str) -> None:
    spoken = speech.digits(text)
    assert spoken.replace(" ", "") == "".join(c for c in text if c in "0123456789")
    assert all(len(token) == 1 for token in spoken.split())


# --- quantity and ordinal ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "en", "es"),
    [
        ("640", "six hundred forty", "seiscientos cuarenta"),
        ("6.4E+2", "six hundred forty", "seiscientos cuarenta"),
        ("12.5", "twelve point five", "doce coma cinco"),
        ("12.50", "twelve point five", "doce coma cinco"),
        ("0.05", "zero point zero five", "cero coma cero cinco"),
        ("21000", "twenty-one thousand", "veintiún mil"),
        ("21", "twenty-one", "veintiuno"),
        ("1034", "one thousand thirty-four", "mil treinta y cuatro"),
        ("0", "zero", "cero"),
    ],
)
def test_quantity(value: str, en: str, es: str) -> None:
    assert speech.quantity(Decimal(value), "en-US") == en
    assert speech.quantity(Decimal(value), "es-US") == es


def test_quantity_rejects_bad_values() -> None:
    with pytest.raises(ValueError, match="negative"):
        speech.quantity(Decimal("-1"), "en")
    with pytest.raises(ValueError, match="finite"):
        speech.quantity(Decimal("NaN"), "en")
    with pytest.raises(TypeError):
        speech.quantity(1.5, "en")  # type: ignore[arg-type]


@FAST
@given(st.integers(min_value=2, max_value=MAX_CENTS // 100))
def test_quantity_matches_money_words(n: int) -> None:
    assert speech.quantity(Decimal(n), "en") + " dollars" == speech.money(n * 100, "en")
    assert parse_en(speech.quantity(Decimal(n), "en")) == n
    assert parse_es(speech.quantity(Decimal(n), "es")) == n


def test_ordinal() -> None:
    assert speech.ordinal(22, "en") == "twenty-second"
    assert speech.ordinal(101, "en-US") == "one hundred first"
    assert speech.ordinal(3, "es") == "tercero"
    with pytest.raises(ValueError):
        speech.ordinal(0, "en")
    with pytest.raises(TypeError):
        speech.ordinal(True, "en")
