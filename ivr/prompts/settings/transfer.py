"""``[transfer]``: the representative transfer and the office's business hours."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, date, datetime, time, timedelta
from functools import cached_property
from types import MappingProxyType
from typing import Any, Final, Self
from zoneinfo import ZoneInfo

from pydantic import Field, model_validator

from connectors.toml_settings import TomlTable, refuse
from ivr.prompts.settings.values import (
    Holidays,
    OpeningHours,
    Phone,
    TimeZone,
    Window,
    enabled_when_set,
)

# How far next_opening() looks ahead before concluding the office never opens.
_LOOKAHEAD_DAYS: Final = 14

_NINE_TO_FIVE: Final = (time(8), time(17))


class OfficeHours(TomlTable):
    """``[transfer.hours]``: each weekday's opening hours, Monday first."""

    mon: OpeningHours = _NINE_TO_FIVE
    tue: OpeningHours = _NINE_TO_FIVE
    wed: OpeningHours = _NINE_TO_FIVE
    thu: OpeningHours = _NINE_TO_FIVE
    fri: OpeningHours = _NINE_TO_FIVE
    sat: OpeningHours = None
    sun: OpeningHours = None


# Keys of [transfer.hours], in datetime.weekday() order (0 = Monday).
WEEKDAYS: Final = tuple(OfficeHours.model_fields)


class TransferSettings(TomlTable):
    """Representative transfer and the office's business hours (local wall-clock times)."""

    enabled: bool = False  # without the key: on when `number` is set
    # No default number: a default would send callers to a stranger.
    number: Phone | None = None
    timezone: TimeZone = Field(default_factory=lambda: ZoneInfo("America/Chicago"))
    holidays: Holidays = frozenset()
    opening_hours: OfficeHours = Field(default_factory=OfficeHours, alias="hours")

    @model_validator(mode="before")
    @classmethod
    def _default_enabled(cls, data: Any) -> Any:
        return enabled_when_set(data, "number")

    @model_validator(mode="after")
    def _number_when_enabled(self) -> Self:
        if self.enabled and self.number is None:
            raise refuse("is required when transfer is enabled", key="number")
        return self

    @cached_property
    def hours(self) -> Mapping[int, Window]:
        """Weekday (0 = Monday) -> (opens, closes) local time, or None when closed all day."""
        hours = self.opening_hours
        return MappingProxyType({day: getattr(hours, key) for day, key in enumerate(WEEKDAYS)})

    def is_open(self, now: datetime) -> bool:
        """Whether the office is open at ``now`` (aware). Ignores ``enabled``: hours only."""
        local = self._local(now)
        window = self._window(local.date())
        if window is None:
            return False
        opens, closes = window
        return opens <= local.time() < closes

    def next_opening(self, now: datetime) -> datetime | None:
        """Earliest moment at or after ``now`` when the office is open, in the local zone.

        Returns ``now`` (converted to the local zone) when already open, and None when the
        office does not open within 14 days (all days closed, or a long holiday run).
        """
        local = self._local(now)
        for offset in range(_LOOKAHEAD_DAYS + 1):
            day = local.date() + timedelta(days=offset)
            window = self._window(day)
            if window is None:
                continue
            opens, closes = window
            if offset == 0:
                if local.time() >= closes:
                    continue
                if local.time() >= opens:
                    return local
            opening = datetime.combine(day, opens, tzinfo=self.timezone)
            # A round trip through UTC moves a wall time that falls in a DST gap (e.g. 02:30
            # on spring-forward day) to the real instant the clocks show it, 03:30.
            return opening.astimezone(UTC).astimezone(self.timezone)
        return None

    def _local(self, now: datetime) -> datetime:
        if now.tzinfo is None or now.utcoffset() is None:
            # A naive time would silently be read as the server's zone, not the office's.
            raise ValueError("now must be a timezone-aware datetime")
        return now.astimezone(self.timezone)

    def _window(self, day: date) -> Window:
        if day in self.holidays:
            return None
        return self.hours.get(day.weekday())
