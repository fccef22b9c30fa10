"""Typed line settings parsed from ``prompts/settings.toml``.

Ops edit that file, so reading is strict (unknown keys, wrong types and bad values are all
reported at once, each naming its dotted key) and forgiving only in one way: every missing key
takes the default shown in the shipped file, so a minimal ``settings.toml`` works.

Each table is a pydantic model (``sections``, ``transfer``; value kinds in ``values``); the
wording of a problem is shared with the layouts file (``connectors.toml_settings``). Checks
that compare tables keyed by language run beside the models, in ``_language_problems``, so
they are reported together with every other problem.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Annotated, Final

from pydantic import AfterValidator, Field, ValidationError

from connectors.toml_settings import Array, TomlTable, dotted, expect, refuse, toml_problems
from ivr.prompts.settings.arrangements import (
    ArrangementSettings,
    ReconnectSettings,
    ReturnsSettings,
)
from ivr.prompts.settings.sections import (
    CARD_TYPES,
    DEFAULT_PAY_LANGUAGE,
    AchSettings,
    AmountSettings,
    FeeSettings,
    InputSettings,
    LimitSettings,
    PaySettings,
    ReceiptSettings,
    VerificationMethod,
    VerificationSettings,
)
from ivr.prompts.settings.transfer import WEEKDAYS, OfficeHours, TransferSettings
from ivr.prompts.settings.values import NonEmpty

__all__ = [
    "CARD_TYPES",
    "SPEAKABLE",
    "WEEKDAYS",
    "AchSettings",
    "AmountSettings",
    "FeeSettings",
    "InputSettings",
    "LimitSettings",
    "LineSettings",
    "OfficeHours",
    "PaySettings",
    "ReceiptSettings",
    "ReturnsSettings",
    "SettingsError",
    "TransferSettings",
    "VerificationMethod",
    "VerificationSettings",
    "Voice",
    "parse_line_settings",
]

# Languages ivr.prompts.speech can say amounts and dates in (kept here to avoid importing it).
SPEAKABLE = frozenset({"en", "es"})

_LANGUAGE_TAG: Final = re.compile(r"[a-z]{2,3}(?:-[A-Za-z0-9]{2,8})*")
_DEFAULT_LANGUAGES: Final = ("en-US", "es-US")


class SettingsError(ValueError):
    """settings.toml is invalid; ``problems`` lists every problem found, one line each."""

    def __init__(self, problems: Iterable[str]) -> None:
        self.problems: list[str] = list(problems)
        super().__init__("; ".join(self.problems))


class Voice(TomlTable):
    """``[voices."LANG"]``: text-to-speech voice and ``<Say language>`` for one language."""

    voice: NonEmpty
    language: NonEmpty = ""  # without the key: the line language the table is named after


_DEFAULT_VOICES: Final = MappingProxyType({
    "en-US": Voice(voice="Polly.Joanna-Neural", language="en-US"),
    "es-US": Voice(voice="Polly.Lupe-Neural", language="es-US"),
})


def _with_default_voices(voices: Mapping[str, Voice]) -> Mapping[str, Voice]:
    named = {lang: voice if voice.language else voice.model_copy(update={"language": lang})
             for lang, voice in voices.items()}
    return MappingProxyType({**_DEFAULT_VOICES, **named})


def _offered(languages: tuple[str, ...]) -> tuple[str, ...]:
    problems = [] if languages else ["must list at least one language"]
    for lang in languages:
        if not _LANGUAGE_TAG.fullmatch(lang):
            problems.append(f'{lang!r} is not a language tag like "en-US"')
        elif lang.split("-")[0].lower() not in SPEAKABLE:
            # Amounts and dates are put into words by ivr.prompts.speech, which knows these only.
            problems.append(f"{lang!r}: amounts and dates can be spoken in "
                            f"{', '.join(sorted(SPEAKABLE))} only")
    duplicates = sorted({lang for lang in languages if languages.count(lang) > 1})
    if duplicates:
        problems.append(f"lists {', '.join(duplicates)} more than once")
    if problems:
        raise refuse(*problems)
    return languages


class LineSettings(TomlTable):
    """Everything in settings.toml, typed and validated."""

    languages: Annotated[
        Array[NonEmpty], expect("a list of non-empty strings", list), AfterValidator(_offered)
    ] = _DEFAULT_LANGUAGES
    default_language: NonEmpty = _DEFAULT_LANGUAGES[0]
    voices: Annotated[Mapping[str, Voice], AfterValidator(_with_default_voices)] = Field(
        default_factory=lambda: _DEFAULT_VOICES)
    input: InputSettings = Field(default_factory=InputSettings)
    verification: VerificationSettings = Field(default_factory=VerificationSettings)
    amount: AmountSettings = Field(default_factory=AmountSettings)
    fee: FeeSettings = Field(default_factory=FeeSettings)
    transfer: TransferSettings = Field(default_factory=TransferSettings)
    pay: PaySettings = Field(default_factory=PaySettings)
    ach: AchSettings = Field(default_factory=AchSettings)
    receipt: ReceiptSettings = Field(default_factory=ReceiptSettings)
    limits: LimitSettings = Field(default_factory=LimitSettings)
    reconnect: ReconnectSettings = Field(default_factory=ReconnectSettings)
    arrangements: ArrangementSettings = Field(default_factory=ArrangementSettings)
    returns: ReturnsSettings = Field(default_factory=ReturnsSettings)


def parse_line_settings(data: Mapping[str, object]) -> LineSettings:
    """Parse the decoded TOML of settings.toml; raise SettingsError listing every problem."""
    settings: LineSettings | None = None
    problems: list[str] = []
    try:
        settings = LineSettings.model_validate(data)
    except ValidationError as exc:
        problems = toml_problems(exc, LineSettings)
    problems += _language_problems(data)
    if problems or settings is None:
        raise SettingsError(problems)
    return settings


def _language_problems(data: Mapping[str, object]) -> list[str]:
    """Whether the languages offered agree with the tables keyed by language.

    Read from the decoded file rather than the model, so that these are reported even when
    another key is wrong; a table of the wrong shape is the model's to report.
    """
    languages = data.get("languages", _DEFAULT_LANGUAGES)
    if not isinstance(languages, list | tuple) or not all(isinstance(x, str) and x
                                                         for x in languages):
        return []  # the model reports it
    problems: list[str] = []
    default = data.get("default_language", _DEFAULT_LANGUAGES[0])
    if languages and isinstance(default, str) and default and default not in languages:
        problems.append(f"default_language: {default!r} is not one of languages "
                        f"{list(languages)}")
    voices = _table(data, "voices")
    pay_languages = _table(_table(data, "pay"), "language")
    # Entries for languages not offered are fine (going English-only should not require
    # deleting the Spanish voice), but a near miss such as "en-us" is a typo that would
    # otherwise be silently ignored in favour of the default.
    for where, table in (("voices", voices), ("pay.language", pay_languages)):
        for key in table:
            shown = dotted((*where.split("."), key))
            if not _LANGUAGE_TAG.fullmatch(key):
                problems.append(f'{shown}: is not a language tag like "en-US"')
            problems += [f"{shown}: did you mean {known!r}? (language tags are case-sensitive)"
                         for known in languages if key != known and key.lower() == known.lower()]
    for lang in languages:
        if lang not in voices and lang not in _DEFAULT_VOICES:
            problems.append(f'voices: no voice for language {lang!r} (add [voices."{lang}"])')
        if lang not in pay_languages and lang not in DEFAULT_PAY_LANGUAGE:
            problems.append(f"pay.language: no <Pay> language for {lang!r} "
                            f'(add "{lang}" = "...")')
    return problems


def _table(data: Mapping[str, object], key: str) -> Mapping[str, object]:
    value = data.get(key)
    return value if isinstance(value, dict) else {}
