"""Typed line settings parsed from ``prompts/settings.toml``.

Ops edit that file, so parsing is strict (unknown keys, wrong types and bad values are all
reported, each naming its dotted key) and forgiving only in one way: every missing key takes
the default shown in the shipped file, so a minimal ``settings.toml`` works. Site-specific
values (phone numbers, holiday dates) have no meaningful default; see ``_DEFAULTS``.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from types import MappingProxyType
from typing import Final, Literal, TypeVar, cast
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from connectors.amounts import cents_to_text

__all__ = [
    "WEEKDAYS",
    "AchSettings",
    "AmountSettings",
    "FeeSettings",
    "InputSettings",
    "LineSettings",
    "PaySettings",
    "SettingsError",
    "TransferSettings",
    "VerificationSettings",
    "Voice",
    "parse_line_settings",
]

# Keys of [transfer.hours], in datetime.weekday() order (0 = Monday).
WEEKDAYS: Final = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")

# How far next_opening() looks ahead before concluding the office never opens.
_LOOKAHEAD_DAYS: Final = 14

# Card types Twilio <Pay> accepts in validCardTypes and reports as PaymentCardType.
CARD_TYPES: Final = frozenset(
    {"visa", "mastercard", "amex", "maestro", "discover", "optima", "jcb", "diners-club", "enroute"}
)

_LANGUAGE_TAG: Final = re.compile(r"[a-z]{2,3}(?:-[A-Za-z0-9]{2,8})*")
_AMOUNT: Final = re.compile(r"(\d{1,9})\.(\d{2})")
_HOURS: Final = re.compile(r"(\d{2}):(\d{2})\s*-\s*(\d{2}):(\d{2})")
_E164: Final = re.compile(r"\+[1-9]\d{6,14}")
_CURRENCY: Final = re.compile(r"[a-z]{3}")

# Defaults mirror the shipped prompts/settings.toml, except the site-specific values: no
# transfer number, no office phone and no holidays (a default phone number would send callers
# to a stranger). transfer.enabled / ach.enabled default to "on when the number is set".
_DEFAULT_LANGUAGES: Final = ("en-US", "es-US")
_DEFAULT_VOICES: Final = {
    "en-US": ("Polly.Joanna-Neural", "en-US"),
    "es-US": ("Polly.Lupe-Neural", "es-US"),
}
_DEFAULT_PAY_LANGUAGE: Final = {"en-US": "en-US", "es-US": "es-MX"}
_DEFAULT_HOURS: Final = {
    "mon": "08:00-17:00",
    "tue": "08:00-17:00",
    "wed": "08:00-17:00",
    "thu": "08:00-17:00",
    "fri": "08:00-17:00",
    "sat": "",
    "sun": "",
}

# Known keys per table ("" = top level); anything else is reported as an unknown key.
_KEYS: Final[Mapping[str, tuple[str, ...]]] = {
    "": (
        "languages",
        "default_language",
        "voices",
        "input",
        "verification",
        "amount",
        "fee",
        "transfer",
        "pay",
        "ach",
        "receipt",
        "limits",
    ),
    "receipt": ("text",),
    "limits": (
        "pay_declines_per_account",
        "pay_declines_per_caller",
        "pay_decline_window_minutes",
        "pay_declines_per_line",
        "account_misses_per_caller",
        "account_miss_window_minutes",
        "account_misses_per_line",
        "line_window_minutes",
    ),
    "input": ("timeout_seconds", "extended_timeout_seconds", "max_tries"),
    "verification": (
        "method",
        "max_failures_per_call",
        "lockout_failures",
        "lockout_failures_all_callers",
        "lockout_window_minutes",
        "lockout_minutes",
    ),
    "amount": ("minimum", "maximum"),
    "fee": ("card", "ach"),
    "transfer": ("enabled", "number", "timezone", "holidays", "hours"),
    "pay": (
        "connector",
        "max_attempts",
        "timeout_seconds",
        "security_code",
        "postal_code",
        "valid_card_types",
        "currency",
        "max_tries_per_call",
        "language",
    ),
    "ach": ("enabled", "script_version", "office_phone", "record_authorization"),
}

VerificationMethod = Literal["zip", "pin", "none"]
_T = TypeVar("_T")


# Languages ivr.prompts.speech can say amounts and dates in (kept here to avoid importing it).
SPEAKABLE = frozenset({"en", "es"})


class SettingsError(ValueError):
    """settings.toml is invalid; ``problems`` lists every problem found, one line each."""

    def __init__(self, problems: Iterable[str]) -> None:
        self.problems: list[str] = list(problems)
        super().__init__("; ".join(self.problems))


@dataclass(frozen=True)
class Voice:
    """Text-to-speech voice and ``<Say language>`` for one line language."""

    voice: str
    language: str


@dataclass(frozen=True)
class InputSettings:
    """Keypad input timing and retry limits."""

    timeout_seconds: int
    extended_timeout_seconds: int
    max_tries: int


@dataclass(frozen=True)
class VerificationSettings:
    """How callers prove they may hear an account, and the lockout policy."""

    method: VerificationMethod
    max_failures_per_call: int
    # Failures from one calling number on one account that lock that number out of it.
    lockout_failures: int
    # Failures from every number not on file for the account, together, that lock them all
    # out of it (the numbers on file are held only by their own failures).
    lockout_failures_all_callers: int
    lockout_window: timedelta
    lockout_duration: timedelta


@dataclass(frozen=True)
class AmountSettings:
    """Limits for one payment, in integer cents."""

    minimum_cents: int
    maximum_cents: int


@dataclass(frozen=True)
class FeeSettings:
    """Convenience fee per payment method, in integer cents (0 = no fee, no fee prompt)."""

    card_cents: int
    ach_cents: int


@dataclass(frozen=True)
class TransferSettings:
    """Representative transfer and the office's business hours (local wall-clock times)."""

    enabled: bool
    number: str | None
    timezone: ZoneInfo
    holidays: frozenset[date]
    # weekday (0 = Monday) -> (opens, closes) local time, or None when closed all day.
    hours: Mapping[int, tuple[time, time] | None]

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

    def _window(self, day: date) -> tuple[time, time] | None:
        if day in self.holidays:
            return None
        return self.hours.get(day.weekday())


@dataclass(frozen=True)
class PaySettings:
    """Options for Twilio ``<Pay>``. ``IVR_PAY_CONNECTOR`` overrides ``connector`` (AppConfig)."""

    connector: str
    max_attempts: int
    timeout_seconds: int
    security_code: bool
    postal_code: bool
    valid_card_types: tuple[str, ...]
    currency: str
    max_tries_per_call: int
    # line language -> <Pay language> (Twilio's built-in prompts lack some line languages).
    language: Mapping[str, str]


@dataclass(frozen=True)
class AchSettings:
    """Bank-account (NACHA TEL) payments."""

    enabled: bool
    script_version: str
    # E.164; "" only when ACH is disabled (an enabled ACH without it is a SettingsError).
    office_phone: str
    # Record the spoken authorization through Twilio (NACHA TEL: keep it two years).
    record_authorization: bool = True


@dataclass(frozen=True)
class ReceiptSettings:
    """After a payment: whether to offer a text-message receipt to the calling number."""

    text: bool


@dataclass(frozen=True)
class LimitSettings:
    """Abuse limits across calls (sliding windows kept in the database)."""

    pay_declines_per_account: int
    pay_declines_per_caller: int
    pay_decline_window: timedelta
    pay_declines_per_line: int
    account_misses_per_caller: int
    account_miss_window: timedelta
    account_misses_per_line: int
    line_window: timedelta


@dataclass(frozen=True)
class LineSettings:
    """Everything in settings.toml, typed and validated."""

    languages: tuple[str, ...]
    default_language: str
    voices: Mapping[str, Voice]
    input: InputSettings
    verification: VerificationSettings
    amount: AmountSettings
    fee: FeeSettings
    transfer: TransferSettings
    pay: PaySettings
    ach: AchSettings
    receipt: ReceiptSettings
    limits: LimitSettings


class _Table:
    """One TOML table being read: typed getters that record problems instead of raising.

    Collecting rather than raising lets ops see every mistake in one ``ivr prompts check``.
    Each getter returns the default after recording a problem so parsing can continue.
    """

    def __init__(
        self, data: object, path: str, problems: list[str], known: Iterable[str] | None
    ) -> None:
        self.path = path
        self.problems = problems
        if not isinstance(data, dict):
            self.problem("", f"must be a table, got {_type_name(data)}")
            data = {}
        self.data: dict[str, object] = cast(dict[str, object], data)
        if known is not None:
            known_keys = list(known)
            for key in sorted(set(self.data) - set(known_keys)):
                hint = difflib.get_close_matches(key, known_keys, n=1)
                suggestion = f" (did you mean {hint[0]!r}?)" if hint else ""
                self.problem(key, f"unknown key{suggestion}")

    def name(self, key: str) -> str:
        """Dotted name of ``key`` in this table, for messages."""
        if not key:
            return self.path or "(top level)"
        shown = key if re.fullmatch(r"[A-Za-z0-9_]+", key) else f'"{key}"'
        return f"{self.path}.{shown}" if self.path else shown

    def problem(self, key: str, message: str) -> None:
        """Record a problem with ``key``."""
        self.problems.append(f"{self.name(key)}: {message}")

    def table(self, key: str, known: Iterable[str] | None) -> _Table:
        """The sub-table ``key`` (empty when missing)."""
        return _Table(self.data.get(key, {}), self.name(key), self.problems, known)

    def _typed(self, key: str, default: _T, kind: type, what: str) -> _T:
        value = self.data.get(key, default)
        # bool is an int subclass; `max_tries = true` must not read as 1.
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            self.problem(key, f"must be {what}, got {_type_name(value)} {value!r}")
            return default
        return cast(_T, value)

    def get_bool(self, key: str, default: bool) -> bool:
        """A boolean value."""
        return self._typed(key, default, bool, "true or false")

    def get_str(self, key: str, default: str, *, non_empty: bool = True) -> str:
        """A string value (non-empty unless told otherwise)."""
        value = self._typed(key, default, str, "a string")
        if non_empty and not value.strip():
            self.problem(key, "must not be empty")
            return default
        return value

    def get_int(self, key: str, default: int, low: int = 1, high: int | None = None) -> int:
        """An integer in ``low..high``."""
        value = self._typed(key, default, int, "an integer")
        if value < low or (high is not None and value > high):
            bounds = f"between {low} and {high}" if high is not None else f"at least {low}"
            self.problem(key, f"must be {bounds}, got {value}")
            return default
        return value

    def get_str_list(self, key: str, default: Iterable[str]) -> list[str]:
        """A list of non-empty strings."""
        value = self.data.get(key)
        if value is None:
            return list(default)
        if not isinstance(value, list) or not all(isinstance(item, str) and item for item in value):
            self.problem(key, f"must be a list of non-empty strings, got {value!r}")
            return list(default)
        return cast(list[str], value)

    def get_cents(self, key: str, default: str) -> int:
        """A dollar amount written as a string "12.34", in integer cents."""
        raw = self.data.get(key, default)
        if isinstance(raw, str):
            match = _AMOUNT.fullmatch(raw)
            if match:
                return int(match[1]) * 100 + int(match[2])
        # Money is never a TOML float: 0.1 + 0.2 is not 0.3, and quoting keeps cents exact.
        self.problem(key, f'must be a quoted amount like "12.34", got {_type_name(raw)} {raw!r}')
        return _cents(default)

    def get_phone(self, key: str) -> str | None:
        """An optional E.164 phone number."""
        if key not in self.data:
            return None
        value = self.data[key]
        if not isinstance(value, str) or not _E164.fullmatch(value):
            self.problem(key, f'must be an E.164 phone number like "+15555550100", got {value!r}')
            return None
        return value


def parse_line_settings(data: Mapping[str, object]) -> LineSettings:
    """Parse the decoded TOML of settings.toml; raise SettingsError listing every problem."""
    problems: list[str] = []
    root = _Table(dict(data), "", problems, _KEYS[""])

    languages = _parse_languages(root)
    default_language = root.get_str("default_language", _DEFAULT_LANGUAGES[0])
    if languages and default_language not in languages:
        root.problem(
            "default_language", f"{default_language!r} is not one of languages {list(languages)}"
        )

    def section(name: str) -> _Table:
        return root.table(name, _KEYS[name])

    settings = LineSettings(
        languages=languages,
        default_language=default_language,
        voices=_parse_voices(root, languages),
        input=_parse_input(section("input")),
        verification=_parse_verification(section("verification")),
        amount=_parse_amount(section("amount")),
        fee=_parse_fee(section("fee")),
        transfer=_parse_transfer(section("transfer")),
        pay=_parse_pay(section("pay"), languages),
        ach=_parse_ach(section("ach")),
        receipt=ReceiptSettings(text=section("receipt").get_bool("text", False)),
        limits=_parse_limits(section("limits")),
    )
    if problems:
        raise SettingsError(problems)
    return settings


def _parse_languages(root: _Table) -> tuple[str, ...]:
    languages = root.get_str_list("languages", _DEFAULT_LANGUAGES)
    if not languages:
        root.problem("languages", "must list at least one language")
    for lang in languages:
        if not _LANGUAGE_TAG.fullmatch(lang):
            root.problem("languages", f'{lang!r} is not a language tag like "en-US"')
        elif lang.split("-")[0].lower() not in SPEAKABLE:
            # Amounts and dates are put into words by ivr.prompts.speech, which knows these only.
            root.problem("languages", f"{lang!r}: amounts and dates can be spoken in "
                                      f"{', '.join(sorted(SPEAKABLE))} only")
    duplicates = sorted({lang for lang in languages if languages.count(lang) > 1})
    if duplicates:
        root.problem("languages", f"lists {', '.join(duplicates)} more than once")
    return tuple(languages)


def _parse_voices(root: _Table, languages: tuple[str, ...]) -> Mapping[str, Voice]:
    table = root.table("voices", None)
    voices = {lang: Voice(voice, say_lang) for lang, (voice, say_lang) in _DEFAULT_VOICES.items()}
    for lang in table.data:
        entry = table.table(lang, ("voice", "language"))
        _check_language_key(table, lang, languages)
        if "voice" in entry.data:
            voice = entry.get_str("voice", "")
        else:
            entry.problem("voice", "is required")
            voice = ""
        voices[lang] = Voice(voice=voice, language=entry.get_str("language", lang))
    for lang in languages:
        if lang not in voices:
            root.problem("voices", f'no voice for language {lang!r} (add [voices."{lang}"])')
    return MappingProxyType(voices)


def _check_language_key(table: _Table, lang: str, languages: tuple[str, ...]) -> None:
    # Entries for languages not offered are fine (going English-only should not require
    # deleting the Spanish voice), but a near miss such as "en-us" is a typo that would
    # otherwise be silently ignored in favour of the default.
    if not _LANGUAGE_TAG.fullmatch(lang):
        table.problem(lang, 'is not a language tag like "en-US"')
    for known in languages:
        if lang != known and lang.lower() == known.lower():
            table.problem(lang, f"did you mean {known!r}? (language tags are case-sensitive)")


def _parse_input(table: _Table) -> InputSettings:
    timeout = table.get_int("timeout_seconds", 7, 1, 60)
    extended = table.get_int("extended_timeout_seconds", 20, 1, 120)
    if extended < timeout:
        table.problem(
            "extended_timeout_seconds",
            f"must be at least timeout_seconds ({timeout}), got {extended}",
        )
    return InputSettings(
        timeout_seconds=timeout,
        extended_timeout_seconds=extended,
        max_tries=table.get_int("max_tries", 3, 1, 10),
    )


def _parse_verification(table: _Table) -> VerificationSettings:
    method = table.get_str("method", "zip")
    if method not in ("zip", "pin", "none"):
        table.problem("method", f'must be "zip", "pin" or "none", got {method!r}')
        method = "zip"
    return VerificationSettings(
        method=cast(VerificationMethod, method),
        max_failures_per_call=table.get_int("max_failures_per_call", 3),
        lockout_failures=table.get_int("lockout_failures", 5),
        lockout_failures_all_callers=table.get_int("lockout_failures_all_callers", 10),
        lockout_window=timedelta(minutes=table.get_int("lockout_window_minutes", 30)),
        lockout_duration=timedelta(minutes=table.get_int("lockout_minutes", 30)),
    )


def _parse_limits(table: _Table) -> LimitSettings:
    def minutes(key: str, default: int) -> timedelta:
        return timedelta(minutes=table.get_int(key, default, high=7 * 24 * 60))

    return LimitSettings(
        pay_declines_per_account=table.get_int("pay_declines_per_account", 3),
        pay_declines_per_caller=table.get_int("pay_declines_per_caller", 3),
        pay_decline_window=minutes("pay_decline_window_minutes", 24 * 60),
        pay_declines_per_line=table.get_int("pay_declines_per_line", 40),
        account_misses_per_caller=table.get_int("account_misses_per_caller", 6),
        account_miss_window=minutes("account_miss_window_minutes", 24 * 60),
        account_misses_per_line=table.get_int("account_misses_per_line", 100),
        line_window=minutes("line_window_minutes", 60),
    )


def _parse_amount(table: _Table) -> AmountSettings:
    minimum = table.get_cents("minimum", "1.00")
    maximum = table.get_cents("maximum", "5000.00")
    if minimum < 1:
        # A zero minimum would let a caller "pay" $0.00 and hear a confirmation number.
        table.problem("minimum", "must be at least 0.01")
    if minimum > maximum:
        table.problem("minimum", f"{cents_to_text(minimum)} is more than maximum "
                                 f"{cents_to_text(maximum)}")
    return AmountSettings(minimum_cents=minimum, maximum_cents=maximum)


def _parse_fee(table: _Table) -> FeeSettings:
    return FeeSettings(
        card_cents=table.get_cents("card", "0.00"),
        ach_cents=table.get_cents("ach", "0.00"),
    )


def _parse_transfer(table: _Table) -> TransferSettings:
    number = table.get_phone("number")
    enabled = table.get_bool("enabled", number is not None)
    if enabled and number is None and "number" not in table.data:
        table.problem("number", "is required when transfer is enabled")

    zone_name = table.get_str("timezone", "America/Chicago")
    try:
        zone = ZoneInfo(zone_name)
    except (ZoneInfoNotFoundError, ValueError):
        table.problem("timezone", f'unknown time zone {zone_name!r} (use e.g. "America/Chicago")')
        zone = ZoneInfo("America/Chicago")

    return TransferSettings(
        enabled=enabled,
        number=number,
        timezone=zone,
        holidays=_parse_holidays(table),
        hours=_parse_hours(table.table("hours", WEEKDAYS)),
    )


def _parse_holidays(table: _Table) -> frozenset[date]:
    raw = table.data.get("holidays", [])
    if not isinstance(raw, list):
        table.problem("holidays", f'must be a list of dates like "2026-12-25", got {raw!r}')
        return frozenset()
    holidays: set[date] = set()
    for item in raw:
        # TOML has native dates (holidays = [2026-12-25]); accept those and quoted strings.
        parsed = _as_date(item)
        if parsed is None:
            table.problem("holidays", f'{item!r} is not a date like "2026-12-25"')
        else:
            holidays.add(parsed)
    return frozenset(holidays)


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


def _parse_hours(table: _Table) -> Mapping[int, tuple[time, time] | None]:
    hours: dict[int, tuple[time, time] | None] = {}
    for weekday, key in enumerate(WEEKDAYS):
        spec = table.get_str(key, _DEFAULT_HOURS[key], non_empty=False).strip()
        hours[weekday] = None
        if not spec:
            continue
        match = _HOURS.fullmatch(spec)
        try:
            if not match:
                raise ValueError(spec)
            opens = time(int(match[1]), int(match[2]))
            closes = time(int(match[3]), int(match[4]))
        except ValueError:
            table.problem(key, f'must be "HH:MM-HH:MM" (24-hour) or "" for closed, got {spec!r}')
            continue
        if closes <= opens:
            # Overnight windows are not supported: a day's hours end on that day.
            table.problem(key, f"closing time must be after opening time, got {spec!r}")
            continue
        hours[weekday] = (opens, closes)
    return MappingProxyType(hours)


def _parse_pay(table: _Table, languages: tuple[str, ...]) -> PaySettings:
    card_types = table.get_str_list("valid_card_types", ("visa", "mastercard", "amex", "discover"))
    if not card_types:
        table.problem("valid_card_types", "must list at least one card type")
    for card in card_types:
        if card not in CARD_TYPES:
            table.problem(
                "valid_card_types",
                f"unknown card type {card!r} (known: {', '.join(sorted(CARD_TYPES))})",
            )
    currency = table.get_str("currency", "usd")
    if not _CURRENCY.fullmatch(currency):
        table.problem("currency", f'must be a lowercase ISO 4217 code like "usd", got {currency!r}')
    elif currency != "usd":
        # Amounts are spoken as dollars and cents and stored as USD: another currency would
        # be charged in one unit and announced in another.
        table.problem("currency", f"only usd is supported today, got {currency!r}")

    language_table = table.table("language", None)
    pay_language = dict(_DEFAULT_PAY_LANGUAGE)
    for lang in language_table.data:
        pay_language[lang] = language_table.get_str(lang, "")
        _check_language_key(language_table, lang, languages)
    for lang in languages:
        if lang not in pay_language:
            table.problem("language", f'no <Pay> language for {lang!r} (add "{lang}" = "...")')

    return PaySettings(
        connector=table.get_str("connector", "Default"),
        max_attempts=table.get_int("max_attempts", 2, 1, 3),
        timeout_seconds=table.get_int("timeout_seconds", 10, 1, 600),
        security_code=table.get_bool("security_code", True),
        postal_code=table.get_bool("postal_code", True),
        valid_card_types=tuple(card_types),
        currency=currency,
        max_tries_per_call=table.get_int("max_tries_per_call", 3, 1, 10),
        language=MappingProxyType(pay_language),
    )


def _parse_ach(table: _Table) -> AchSettings:
    office_phone = table.get_phone("office_phone")
    enabled = table.get_bool("enabled", office_phone is not None)
    if enabled and office_phone is None and "office_phone" not in table.data:
        # The NACHA TEL authorization script must give the caller a number to revoke by.
        table.problem("office_phone", "is required when ACH is enabled")
    return AchSettings(
        enabled=enabled,
        script_version=table.get_str("script_version", "tel-2026-11-v1"),
        office_phone=office_phone or "",
        record_authorization=table.get_bool("record_authorization", True),
    )


def _cents(amount: str) -> int:
    match = _AMOUNT.fullmatch(amount)
    if match is None:
        raise ValueError(amount)
    return int(match[1]) * 100 + int(match[2])




def _type_name(value: object) -> str:
    # TOML vocabulary, since ops read these messages, not Python programmers.
    names = {
        bool: "boolean",
        int: "integer",
        float: "float",
        str: "string",
        list: "array",
        dict: "table",
    }
    return names.get(type(value), type(value).__name__)
