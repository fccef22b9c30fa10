"""The kinds of value ``settings.toml`` holds, each with its own check and wording.

Each is an ``Annotated`` type for the models in this package: what the file says (a quoted
amount, minutes, an E.164 number) becomes what the code uses (cents, a timedelta, a str),
and a wrong value becomes one problem saying what was expected (connectors.toml_settings).
``enabled_when_set`` is the one default that depends on another key.
"""

from __future__ import annotations

import re
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Annotated, Any, Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AfterValidator, BeforeValidator, PlainValidator

from connectors.amounts import decimal_to_cents
from connectors.toml_settings import must_be, refuse

_AMOUNT: Final = re.compile(r"\d{1,9}\.\d{2}")
_HOURS: Final = re.compile(r"(\d{2}):(\d{2})\s*-\s*(\d{2}):(\d{2})")
_E164: Final = re.compile(r"\+[1-9]\d{6,14}")

# A day's opening hours: (opens, closes) local time, or None when closed all day.
Window = tuple[time, time] | None


def enabled_when_set(data: Any, key: str) -> Any:
    """``enabled`` defaults to "on when ``key`` is set" (a number a feature cannot do without)."""
    if isinstance(data, dict) and "enabled" not in data:
        return {**data, "enabled": key in data}
    return data


def between(low: int = 1, high: int | None = None) -> AfterValidator:
    """An integer in ``low..high`` (no upper bound when ``high`` is None)."""
    return AfterValidator(lambda value: _in_range(value, low, high))


def minutes(high: int | None = None) -> BeforeValidator:
    """A whole number of minutes, 1 to ``high``, read as a timedelta."""

    def read(value: object) -> timedelta:
        if not isinstance(value, int) or isinstance(value, bool):
            raise refuse(must_be("an integer", value))
        return timedelta(minutes=_in_range(value, 1, high))

    return BeforeValidator(read)


def _in_range(value: int, low: int, high: int | None) -> int:
    if value < low or (high is not None and value > high):
        bounds = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise refuse(f"must be {bounds}, got {value}")
    return value


def _non_empty(value: str) -> str:
    if not value.strip():
        raise refuse("must not be empty")
    return value


NonEmpty = Annotated[str, AfterValidator(_non_empty)]
"""A string with something in it."""


def _cents(value: object) -> int:
    # Money is never a TOML float: 0.1 + 0.2 is not 0.3, and quoting keeps cents exact.
    if not isinstance(value, str) or not _AMOUNT.fullmatch(value):
        raise refuse(must_be('a quoted amount like "12.34"', value))
    return decimal_to_cents(Decimal(value))


Cents = Annotated[int, BeforeValidator(_cents)]
"""A dollar amount written as a string ``"12.34"``, in integer cents."""


def _phone(value: object) -> str:
    if not isinstance(value, str) or not _E164.fullmatch(value):
        raise refuse(must_be('an E.164 phone number like "+15555550100"', value))
    return value


Phone = Annotated[str, PlainValidator(_phone)]
"""An E.164 phone number."""


def _zone(value: object) -> ZoneInfo:
    if not isinstance(value, str):
        raise refuse(must_be("a string", value))
    try:
        return ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise refuse(f'unknown time zone {value!r} (use e.g. "America/Chicago")') from None


TimeZone = Annotated[ZoneInfo, PlainValidator(_zone)]
"""An IANA time zone name such as ``"America/Chicago"``."""


def _holidays(value: object) -> frozenset[date]:
    if not isinstance(value, list):
        raise refuse(must_be('a list of dates like "2026-12-25"', value))
    days: set[date] = set()
    problems: list[str] = []
    for item in value:
        # TOML has native dates (holidays = [2026-12-25]); accept those and quoted strings.
        day = _as_date(item)
        if day is None:
            problems.append(f'{item!r} is not a date like "2026-12-25"')
        else:
            days.add(day)
    if problems:
        raise refuse(*problems)
    return frozenset(days)


def _as_date(item: object) -> date | None:
    if isinstance(item, datetime):
        return None
    if isinstance(item, date):
        return item
    if isinstance(item, str):
        try:
            return date.fromisoformat(item)
        except ValueError:
            return None
    return None


Holidays = Annotated[frozenset[date], PlainValidator(_holidays)]
"""Dates the office is closed: TOML dates or quoted ``"2026-12-25"``."""


def _window(value: object) -> Window:
    if not isinstance(value, str):
        raise refuse(must_be("a string", value))
    spec = value.strip()
    if not spec:
        return None
    match = _HOURS.fullmatch(spec)
    try:
        if not match:
            raise ValueError(spec)
        opens = time(int(match[1]), int(match[2]))
        closes = time(int(match[3]), int(match[4]))
    except ValueError:
        raise refuse(f'must be "HH:MM-HH:MM" (24-hour) or "" for closed, got {spec!r}') from None
    if closes <= opens:
        # Overnight windows are not supported: a day's hours end on that day.
        raise refuse(f"closing time must be after opening time, got {spec!r}")
    return opens, closes


OpeningHours = Annotated[Window, PlainValidator(_window)]
"""``"08:00-17:00"`` (local time), or ``""`` for closed all day."""
