"""Reading prompt files: each prompt's table, its templates and audio, and the checks
between languages. ``ivr.prompts.catalog`` builds the catalog from what this reads."""

from __future__ import annotations

import re
import string
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from types import MappingProxyType
from typing import Final

from ivr.prompts.ssml import check_ssml

AUDIO_DIR: Final = "audio"
# Spoken variants of a prompt; "say" is required, the others optional.
VARIANTS: Final = ("say", "reprompt", "noinput", "nomatch")
PROMPT_KEYS: Final = frozenset({*VARIANTS, "audio", "note"})
_ID_SEGMENT: Final = re.compile(r"[A-Za-z0-9_-]+")
_PLACEHOLDER: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# Characters XML 1.0 cannot carry at all, not even escaped (control characters, surrogates).
_XML_INVALID: Final = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


@dataclass(frozen=True)
class Template:
    """Prompt text split at its placeholders: (literal text, placeholder name or None)."""

    parts: tuple[tuple[str, str | None], ...]
    fields: frozenset[str]


@dataclass(frozen=True)
class Prompt:
    raw: Mapping[str, str]
    templates: Mapping[str, Template]
    audio: str | None  # name under audio/ as written, or an https URL


def escape_text(value: str) -> str:
    """Make ``value`` safe as SSML character data: escape ``& < >``, drop XML-invalid chars."""
    value = _XML_INVALID.sub("", value)
    return value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


Required = Mapping[str, frozenset[str] | None]


def as_required(ids: Iterable[str] | Mapping[str, Iterable[str]]) -> Required:
    """Prompt ids the code speaks, each with the placeholder values it supplies (if known)."""
    if isinstance(ids, Mapping):
        return {pid: frozenset(names) for pid, names in ids.items()}
    return dict.fromkeys(ids)


def parse_language(
    data: Mapping[str, object], directory: Path, file_name: str, problems: list[str]
) -> dict[str, Prompt]:
    """Collect the prompts of one language file, walking nested tables into dotted ids."""
    prompts: dict[str, Prompt] = {}

    def walk(table: Mapping[str, object], prefix: str) -> None:
        for key, value in table.items():
            prompt_id = f"{prefix}.{key}" if prefix else key
            if not _ID_SEGMENT.fullmatch(key):
                problems.append(
                    f"{file_name}: {prompt_id!r}: id parts may only use letters, digits, _ and -"
                )
                continue
            if not isinstance(value, dict):
                problems.append(
                    f"{file_name}: {prompt_id!r} is a {type(value).__name__}, not a table; "
                    f'write [{prompt_id}] then say = "..."'
                )
                continue
            if PROMPT_KEYS & value.keys():
                prompts[prompt_id] = parse_prompt(value, prompt_id, directory, file_name, problems)
            elif not value:
                problems.append(f"{file_name}: [{prompt_id}] is empty (a prompt needs `say`)")
            else:
                walk(value, prompt_id)

    walk(data, "")
    return prompts


def parse_prompt(
    table: Mapping[str, object],
    prompt_id: str,
    directory: Path,
    file_name: str,
    problems: list[str],
) -> Prompt:
    """One prompt table. Kept even when it has problems, so that the cross-language check
    does not also report it as missing in this language."""
    where = f"{file_name}: prompt {prompt_id!r}"
    raw: dict[str, str] = {}
    for key, value in table.items():
        if key not in PROMPT_KEYS:
            problems.append(
                f"{where}: unknown key {key!r} (allowed: {', '.join(sorted(PROMPT_KEYS))})"
            )
        elif not isinstance(value, str):
            problems.append(f"{where}: {key} must be a string, got {type(value).__name__}")
        else:
            raw[key] = value
    if "say" not in table:
        problems.append(f"{where}: `say` is required")

    templates: dict[str, Template] = {}
    for variant in VARIANTS:
        text = raw.get(variant)
        if text is None:
            continue
        if not text.strip():
            problems.append(f"{where} ({variant}): text is empty")
            continue
        template, errors = parse_template(text)
        errors += check_ssml(text)
        problems.extend(f"{where} ({variant}): {error}" for error in errors)
        if template is not None:
            templates[variant] = template

    audio = resolve_audio(raw.get("audio"), directory, where, problems)
    say = templates.get("say")
    if audio is not None and say is not None and say.fields:
        # A recording cannot speak account data; the placeholders would be silently lost.
        names = ", ".join(f"{{{name}}}" for name in sorted(say.fields))
        problems.append(f"{where}: has `audio` but `say` uses placeholders {names}")
    return Prompt(raw=MappingProxyType(raw), templates=MappingProxyType(templates), audio=audio)


def parse_template(text: str) -> tuple[Template | None, list[str]]:
    """Split text at ``{name}`` placeholders; only plain names are allowed."""
    try:
        parsed = list(string.Formatter().parse(text))
    except ValueError as exc:
        return None, [f"bad placeholder syntax ({exc}); write {{{{ and }}}} for literal braces"]
    errors: list[str] = []
    parts: list[tuple[str, str | None]] = []
    for literal, name, spec, conversion in parsed:
        if name is None:
            parts.append((literal, None))
            continue
        if not _PLACEHOLDER.fullmatch(name):
            errors.append(f"placeholder {{{name}}} must be a plain name like {{amount}}")
        elif spec or conversion:
            errors.append(f"placeholder {{{name}}} must not have a format spec or conversion")
        parts.append((literal, name))
    if errors:
        return None, errors
    fields = frozenset(name for _, name in parts if name is not None)
    return Template(parts=tuple(parts), fields=fields), []


def resolve_audio(
    audio: str | None, directory: Path, where: str, problems: list[str]
) -> str | None:
    """A prompt's audio as written (a name under audio/, or an https URL), checked."""
    if audio is None:
        return None
    if audio.startswith("https://"):
        return audio
    if "://" in audio:
        # Twilio fetches <Play> URLs from the public internet; plain http leaks and can be
        # tampered with in transit.
        problems.append(f"{where}: audio URL must use https: {audio!r}")
        return None
    relative = PurePosixPath(audio)
    if not audio.strip() or relative.is_absolute() or ".." in relative.parts:
        problems.append(f"{where}: audio must be a file name under {AUDIO_DIR}/: {audio!r}")
        return None
    path = directory / AUDIO_DIR / relative
    if not path.is_file():
        problems.append(f"{where}: audio file {AUDIO_DIR}/{audio} does not exist")
        return None
    # The name, not a filesystem path: the app serves audio/ at a URL of its own and
    # Twilio <Play>s from there.
    return relative.as_posix()


def cross_check(
    prompts: Mapping[str, Mapping[str, Prompt]], required_ids: Required
) -> list[str]:
    """Problems between languages: missing ids/variants and differing placeholders."""
    problems: list[str] = []
    langs = sorted(prompts)
    all_ids = sorted({pid for entries in prompts.values() for pid in entries})

    for prompt_id, supplied in required_ids.items():
        if prompt_id not in all_ids:
            problems.append(f"required prompt {prompt_id!r} is missing from every language file")
            continue
        if supplied is None:
            continue
        for lang in langs:
            entry = prompts[lang].get(prompt_id)
            for variant, template in (entry.templates.items() if entry else ()):
                unknown = template.fields - supplied
                if unknown:
                    problems.append(
                        f"{lang}.toml: prompt {prompt_id!r} ({variant}) uses "
                        f"{_names(frozenset(unknown))}, which the line does not supply "
                        f"(it supplies {_names(supplied)})")

    for prompt_id in all_ids:
        having = [lang for lang in langs if prompt_id in prompts[lang]]
        for lang in langs:
            if lang not in having:
                problems.append(
                    f"{lang}.toml: prompt {prompt_id!r} is missing (present in {', '.join(having)})"
                )
        for variant in VARIANTS:
            with_variant = [lang for lang in having if variant in prompts[lang][prompt_id].raw]
            without = [lang for lang in having if lang not in with_variant]
            # A missing `say` is already reported in its own file as required.
            if with_variant and without and variant != "say":
                problems.append(
                    f"prompt {prompt_id!r}: {variant} is in {', '.join(with_variant)} "
                    f"but not in {', '.join(without)}"
                )
            by_lang = {
                lang: prompts[lang][prompt_id].templates[variant].fields
                for lang in with_variant
                if variant in prompts[lang][prompt_id].templates
            }
            if len(set(by_lang.values())) > 1:
                shown = "; ".join(
                    f"{lang} has {_names(fields)}" for lang, fields in sorted(by_lang.items())
                )
                problems.append(
                    f"prompt {prompt_id!r} ({variant}): placeholders differ between languages: "
                    f"{shown}"
                )
    return problems


def _names(fields: frozenset[str]) -> str:
    return ", ".join(f"{{{name}}}" for name in sorted(fields)) or "none"
