"""The prompt catalog: load, validate, render and hot-reload what the line says.

A prompts directory holds ``settings.toml`` (see ``ivr.prompts.settings``), one TOML file per
language named by its tag (``en-US.toml``) and an optional ``audio/`` folder. Ops edit these
files on a live system, so validation is all-or-nothing: ``check_catalog`` lists every
problem, ``load_catalog`` refuses a catalog with any, and ``PromptStore`` keeps serving the
last good catalog until a corrected edit arrives.

Prompt text is an SSML fragment (a small allow-listed subset) with ``{name}`` placeholders;
placeholder values are XML-escaped on render, so account data can never inject markup.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import string
import tempfile
import threading
import time
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from types import MappingProxyType
from typing import Final, Protocol
from xml.parsers import expat

from ivr.prompts.settings import LineSettings, SettingsError, parse_line_settings

__all__ = [
    "AUDIO_DIR",
    "PROMPT_KEYS",
    "SETTINGS_FILE",
    "VARIANTS",
    "Catalog",
    "CatalogError",
    "PromptStore",
    "Rendered",
    "check_catalog",
    "escape_text",
    "load_catalog",
]

logger = logging.getLogger("ivr.prompts.catalog")

SETTINGS_FILE: Final = "settings.toml"
AUDIO_DIR: Final = "audio"
# Spoken variants of a prompt; "say" is required, the others optional.
VARIANTS: Final = ("say", "reprompt", "noinput", "nomatch")
PROMPT_KEYS: Final = frozenset({*VARIANTS, "audio", "note"})

# The SSML subset accepted in prompt text: tag -> allowed attributes. Kept to what Twilio's
# Polly voices support inside <Say>, so a typo fails `ivr prompts check`, not a live call.
_SSML_ATTRIBUTES: Final[Mapping[str, frozenset[str]]] = {
    "break": frozenset({"time", "strength"}),
    "emphasis": frozenset({"level"}),
    "prosody": frozenset({"rate", "pitch", "volume"}),
    "say-as": frozenset({"interpret-as", "format"}),
    "sub": frozenset({"alias"}),
    "p": frozenset(),
    "s": frozenset(),
    "lang": frozenset({"xml:lang"}),
    "w": frozenset({"role"}),
    "phoneme": frozenset({"alphabet", "ph"}),
}
_SSML_REQUIRED: Final[Mapping[str, frozenset[str]]] = {
    "say-as": frozenset({"interpret-as"}),
    "sub": frozenset({"alias"}),
    "lang": frozenset({"xml:lang"}),
    "phoneme": frozenset({"ph"}),
}
# Attribute values worth checking here because a bad one makes Twilio reject the whole <Say>.
_SSML_VALUES: Final[Mapping[tuple[str, str], re.Pattern[str]]] = {
    ("break", "time"): re.compile(r"\d+(?:\.\d+)?(?:ms|s)"),
    ("break", "strength"): re.compile(r"none|x-weak|weak|medium|strong|x-strong"),
    ("emphasis", "level"): re.compile(r"strong|moderate|reduced"),
}
_WRAPPER: Final = "speak"

_ID_SEGMENT: Final = re.compile(r"[A-Za-z0-9_-]+")
_PLACEHOLDER: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_LANGUAGE_FILE: Final = re.compile(r"[a-z]{2,3}(?:-[A-Za-z0-9]{2,8})*")
# Characters XML 1.0 cannot carry at all, not even escaped (control characters, surrogates).
_XML_INVALID: Final = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_VERSION_LENGTH: Final = 12


class CatalogError(Exception):
    """The prompts directory is invalid; ``problems`` lists every problem, one line each."""

    def __init__(self, problems: Iterable[str]) -> None:
        self.problems: list[str] = list(problems)
        super().__init__("\n".join(self.problems))


@dataclass(frozen=True)
class Rendered:
    """A rendered prompt: SSML text, and the audio to play instead of it when set.

    ``audio`` is a file name relative to the prompts directory's ``audio/`` folder (e.g.
    ``"goodbye.wav"`` or ``"es/adios.wav"``) or an https URL.
    """

    ssml: str
    audio: str | None


@dataclass(frozen=True)
class _Template:
    """Prompt text split at its placeholders: (literal text, placeholder name or None)."""

    parts: tuple[tuple[str, str | None], ...]
    fields: frozenset[str]


@dataclass(frozen=True)
class _Prompt:
    raw: Mapping[str, str]
    templates: Mapping[str, _Template]
    audio: str | None  # name under audio/ as written, or an https URL


def escape_text(value: str) -> str:
    """Make ``value`` safe as SSML character data: escape ``& < >``, drop XML-invalid chars."""
    value = _XML_INVALID.sub("", value)
    return value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


class Catalog:
    """A validated, immutable set of prompts for every language, with the line settings."""

    languages: tuple[str, ...]
    version: str
    settings: LineSettings

    def __init__(
        self,
        *,
        languages: tuple[str, ...],
        version: str,
        settings: LineSettings,
        prompts: Mapping[str, Mapping[str, _Prompt]],
        sources: Mapping[str, str] | None = None,
    ) -> None:
        self.languages = languages
        self.version = version
        self.settings = settings
        self._prompts = prompts
        # The TOML texts this catalog was read from (file name to text), to keep a copy.
        self.sources: Mapping[str, str] = MappingProxyType(dict(sources or {}))

    def __repr__(self) -> str:
        return f"<Catalog version={self.version} languages={list(self.languages)}>"

    def render(self, prompt_id: str, lang: str, variant: str = "say", **params: object) -> Rendered:
        """Render a prompt variant as SSML with ``params`` substituted (XML-escaped).

        "reprompt" falls back to "say"; a missing "noinput"/"nomatch", an unknown id or a
        missing placeholder value raises KeyError. Unknown ``lang`` uses the default language.
        Extra ``params`` are ignored, so callers may pass one bundle of values to any prompt.
        """
        resolved = self._lang(lang)
        prompt = self._prompt(prompt_id, resolved)
        used, template = self._template(prompt, prompt_id, variant)
        pieces: list[str] = []
        for literal, name in template.parts:
            pieces.append(literal)
            if name is None:
                continue
            if name not in params:
                raise KeyError(
                    f"prompt {prompt_id!r} ({used}, {resolved}) needs a value for {{{name}}}"
                )
            pieces.append(escape_text(str(params[name])))
        # The recording replaces only the "say" wording (also when reprompt falls back to it).
        return Rendered(ssml="".join(pieces), audio=prompt.audio if used == "say" else None)

    def has(self, prompt_id: str, lang: str, variant: str = "say") -> bool:
        """Whether the prompt defines ``variant`` itself (no reprompt fallback) in ``lang``."""
        prompts = self._prompts[self._lang(lang)]
        prompt = prompts.get(prompt_id)
        return prompt is not None and variant in prompt.templates

    def ids(self) -> list[str]:
        """All prompt ids, sorted."""
        return sorted({pid for prompts in self._prompts.values() for pid in prompts})

    def placeholders(self, prompt_id: str, variant: str = "say") -> frozenset[str]:
        """Placeholder names of a variant (identical in every language once loaded)."""
        prompt = self._prompt(prompt_id, self.settings.default_language)
        return self._template(prompt, prompt_id, variant)[1].fields

    def raw(self, prompt_id: str, lang: str) -> Mapping[str, str]:
        """The prompt's table as written (say, reprompt, ..., audio, note), read-only."""
        return self._prompt(prompt_id, self._lang(lang)).raw

    def _lang(self, lang: str) -> str:
        return lang if lang in self._prompts else self.settings.default_language

    def _prompt(self, prompt_id: str, lang: str) -> _Prompt:
        try:
            return self._prompts[lang][prompt_id]
        except KeyError:
            raise KeyError(f"unknown prompt {prompt_id!r}") from None

    @staticmethod
    def _template(prompt: _Prompt, prompt_id: str, variant: str) -> tuple[str, _Template]:
        if variant not in VARIANTS:
            raise ValueError(f"unknown variant {variant!r}; expected one of {VARIANTS}")
        if variant == "reprompt" and variant not in prompt.templates:
            variant = "say"
        template = prompt.templates.get(variant)
        if template is None:
            raise KeyError(f"prompt {prompt_id!r} has no {variant!r} variant")
        return variant, template


def load_catalog(directory: Path) -> Catalog:
    """Load and validate a prompts directory; raise CatalogError listing every problem."""
    catalog, problems = _load(Path(directory), {})
    if catalog is None:
        raise CatalogError(problems)
    return catalog


Required = Mapping[str, frozenset[str] | None]


def _required(ids: Iterable[str] | Mapping[str, Iterable[str]]) -> Required:
    """Prompt ids the code speaks, each with the placeholder values it supplies (if known)."""
    if isinstance(ids, Mapping):
        return {pid: frozenset(names) for pid, names in ids.items()}
    return dict.fromkeys(ids)


def check_catalog(directory: Path,
                  required_ids: Iterable[str] | Mapping[str, Iterable[str]] = ()) -> list[str]:
    """Every problem in a prompts directory (and any missing ``required_ids``); [] if fine.

    With a mapping of id to supplied placeholder names, a template using a placeholder the
    code does not supply is a problem too (it would fail on every call reaching it).
    """
    return _load(Path(directory), _required(required_ids))[1]


class Snapshots(Protocol):
    """Where the last good catalog is kept, shared by every machine (see ivr.prompts.snapshots)."""

    def save(self, version: str, files: Mapping[str, str]) -> None:
        """Keep a catalog that loaded cleanly (once per version)."""

    def latest(self) -> Mapping[str, str] | None:
        """The most recently kept catalog's files, or None."""


class PromptStore:
    """Holds the current catalog and reloads it when any file in the directory changes.

    Changes are detected by (mtime, size) of every file under the directory, checked at most
    once per ``min_interval`` seconds, so ops edits apply to the next call without a restart.
    A failed reload keeps the previous good catalog and logs the problems once per change.
    With ``snapshots``, every good catalog is also kept there, and a process that starts
    while the folder is broken speaks the last good one instead of nothing; ``problems``
    says what is wrong with the folder meanwhile (the alarm for logs, /healthz and ops).
    """

    def __init__(
        self, directory: Path,
        required_ids: Iterable[str] | Mapping[str, Iterable[str]] = (),
        min_interval: float = 1.0,
        snapshots: Snapshots | None = None,
    ) -> None:
        self._directory = Path(directory)
        self._required_ids = _required(required_ids)
        self._min_interval = min_interval
        self._snapshots = snapshots
        self._lock = threading.Lock()
        self._catalog: Catalog | None = None
        self._fingerprint: tuple[tuple[str, int, int], ...] | None = None
        self._checked_at = 0.0
        self._keeping: threading.Thread | None = None
        self.problems: tuple[str, ...] = ()

    @property
    def directory(self) -> Path:
        """The prompts directory being watched."""
        return self._directory

    def get(self) -> Catalog:
        """The current catalog; the first call loads it (CatalogError if that fails)."""
        catalog = self._catalog
        if catalog is None:
            with self._lock:
                return self._catalog or self._first_load()
        if time.monotonic() - self._checked_at < self._min_interval:
            return catalog
        # Another thread already reloading: serve the current catalog rather than wait.
        if not self._lock.acquire(blocking=False):
            return catalog
        try:
            if time.monotonic() - self._checked_at >= self._min_interval:
                self._reload_if_changed()
            return self._catalog or catalog
        finally:
            self._lock.release()

    def _first_load(self) -> Catalog:
        fingerprint = _fingerprint(self._directory)
        catalog, problems = _load(self._directory, self._required_ids)
        if catalog is None:
            catalog = self._last_good()
            if catalog is None:
                # Not remembered: the next get() tries again, so a fixed directory recovers.
                raise CatalogError(problems)
            self.problems = tuple(problems)
            logger.error(
                "prompts in %s are broken; speaking the last good version %s kept in the "
                "database until they are fixed; %d problem(s):\n%s", self._directory,
                catalog.version, len(problems), "\n".join(f"  {p}" for p in problems))
        else:
            self._keep(catalog)
            logger.info("prompts loaded from %s: version %s", self._directory, catalog.version)
        self._catalog, self._fingerprint = catalog, fingerprint
        self._checked_at = time.monotonic()
        return catalog

    def _reload_if_changed(self) -> None:
        self._checked_at = time.monotonic()
        # Taken before reading: an edit landing mid-load changes it again and triggers
        # another reload next time, so no edit is ever missed.
        fingerprint = _fingerprint(self._directory)
        if fingerprint == self._fingerprint:
            return
        # Remembered even when the reload fails, so a broken file is logged once, not on
        # every call; the next edit changes the fingerprint and is tried again.
        self._fingerprint = fingerprint
        catalog, problems = _load(self._directory, self._required_ids)
        if catalog is None:
            self.problems = tuple(problems)
            old = self._catalog.version if self._catalog else "none"
            logger.error(
                "prompts in %s not reloaded, keeping version %s; %d problem(s):\n%s",
                self._directory,
                old,
                len(problems),
                "\n".join(f"  {problem}" for problem in problems),
            )
            return
        self.problems = ()
        if self._catalog is None or catalog.version != self._catalog.version:
            logger.info("prompts reloaded from %s: version %s", self._directory, catalog.version)
            self._keep(catalog)
        self._catalog = catalog

    def _keep(self, catalog: Catalog) -> None:
        """Keep a good catalog in ``snapshots``, off the caller's path: a slow or frozen
        database must not hold the webhook that happened to load it."""
        if self._snapshots is None or not catalog.sources:
            return
        snapshots = self._snapshots

        def save() -> None:
            try:
                snapshots.save(catalog.version, catalog.sources)
            except Exception:  # a database hiccup must not stop the line speaking
                logger.warning("could not keep prompts version %s as the last good one",
                               catalog.version, exc_info=True)

        self._keeping = threading.Thread(target=save, name="ivr-prompts-keep", daemon=True)
        self._keeping.start()

    def wait_until_kept(self, timeout: float) -> None:
        """Wait (up to ``timeout`` seconds) until the last good catalog has been kept."""
        if self._keeping is not None:
            self._keeping.join(timeout)

    def _last_good(self) -> Catalog | None:
        """The last good catalog from ``snapshots``, read with today's audio files."""
        if self._snapshots is None:
            return None
        try:
            files = self._snapshots.latest()
        except Exception:
            logger.warning("could not read the last good prompts", exc_info=True)
            return None
        if not files:
            return None
        with tempfile.TemporaryDirectory(prefix="ivr-prompts-") as temp:
            folder = Path(temp)
            for name, text in files.items():
                if "/" in name or "\\" in name or name.startswith("."):
                    continue  # only plain file names were ever kept
                (folder / name).write_text(text, encoding="utf-8")
            audio = self._directory / AUDIO_DIR
            if audio.is_dir():
                (folder / AUDIO_DIR).symlink_to(audio.resolve(), target_is_directory=True)
            catalog, problems = _load(folder, self._required_ids)
        if catalog is None:
            logger.error("the last good prompts no longer load: %s", "; ".join(problems))
        return catalog


def _fingerprint(directory: Path) -> tuple[tuple[str, int, int], ...]:
    entries: list[tuple[str, int, int]] = []
    for root, _dirs, files in os.walk(directory):
        for name in files:
            path = os.path.join(root, name)
            try:
                stat = os.stat(path)
            except OSError:  # deleted between listing and stat (editor swap files)
                continue
            entries.append((os.path.relpath(path, directory), stat.st_mtime_ns, stat.st_size))
    return tuple(sorted(entries))


def _load(directory: Path, required_ids: Required) -> tuple[Catalog | None, list[str]]:
    """Read and validate everything; return (catalog or None, problems)."""
    if not directory.is_dir():
        return None, [f"{directory}: prompts directory does not exist"]
    problems: list[str] = []
    digest = hashlib.sha256()
    sources: dict[str, str] = {}

    def read(path: Path) -> dict[str, object] | None:
        try:
            data = path.read_bytes()
        except OSError as exc:
            problems.append(f"{path.name}: cannot read: {exc.strerror}")
            return None
        # Length-prefixed so moving bytes from one file to the next changes the version.
        digest.update(f"{path.relative_to(directory)}\0{len(data)}\0".encode())
        digest.update(data)
        try:
            text = data.decode("utf-8")
            sources[path.name] = text
            return tomllib.loads(text)
        except UnicodeDecodeError as exc:
            problems.append(f"{path.name}: not UTF-8: {exc}")
        except tomllib.TOMLDecodeError as exc:
            problems.append(f"{path.name}: invalid TOML: {exc}")
        return None

    settings: LineSettings | None = None
    settings_path = directory / SETTINGS_FILE
    if not settings_path.is_file():
        problems.append(f"{SETTINGS_FILE}: missing (copy it from the repository's prompts/)")
    else:
        settings_data = read(settings_path)
        if settings_data is not None:
            try:
                settings = parse_line_settings(settings_data)
            except SettingsError as exc:
                problems.extend(f"{SETTINGS_FILE}: {problem}" for problem in exc.problems)

    prompts: dict[str, dict[str, _Prompt]] = {}
    # Dotfiles skipped: editors keep lock/backup files such as ".#en-US.toml" beside the original.
    language_files = sorted(
        p
        for p in directory.glob("*.toml")
        if p.name != SETTINGS_FILE and not p.name.startswith(".")
    )
    if not language_files:
        problems.append("no language files (e.g. en-US.toml) in the prompts directory")
    for path in language_files:
        lang = path.stem
        if not _LANGUAGE_FILE.fullmatch(lang):
            problems.append(f'{path.name}: file name is not a language tag like "en-US.toml"')
            continue
        data = read(path)
        if data is not None:
            prompts[lang] = _parse_language(data, directory, path.name, problems)

    # Audio is part of what callers hear, so it is part of the version too.
    audio_dir = directory / AUDIO_DIR
    if audio_dir.is_dir():
        for path in sorted(p for p in audio_dir.rglob("*") if p.is_file()):
            try:
                audio = path.read_bytes()
            except OSError as exc:
                problems.append(f"{path.relative_to(directory)}: cannot read: {exc.strerror}")
                continue
            digest.update(f"{path.relative_to(directory)}\0{len(audio)}\0".encode())
            digest.update(audio)

    if settings is not None:
        for lang in settings.languages:
            if directory / f"{lang}.toml" not in language_files:
                problems.append(
                    f"{SETTINGS_FILE}: language {lang} is listed in `languages` "
                    f"but {lang}.toml does not exist"
                )
    problems.extend(_cross_check(prompts, required_ids))

    if problems or settings is None:
        return None, problems
    # Offered languages in menu order first; files for other languages follow (not offered
    # in the menu, which uses settings.languages, but renderable).
    ordered = [lang for lang in settings.languages if lang in prompts]
    ordered += sorted(set(prompts) - set(ordered))
    frozen = {lang: MappingProxyType(entries) for lang, entries in prompts.items()}
    catalog = Catalog(
        languages=tuple(ordered),
        version=digest.hexdigest()[:_VERSION_LENGTH],
        settings=settings,
        prompts=MappingProxyType(frozen),
        sources=sources,
    )
    return catalog, []


def _parse_language(
    data: Mapping[str, object], directory: Path, file_name: str, problems: list[str]
) -> dict[str, _Prompt]:
    """Collect the prompts of one language file, walking nested tables into dotted ids."""
    prompts: dict[str, _Prompt] = {}

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
                prompts[prompt_id] = _parse_prompt(value, prompt_id, directory, file_name, problems)
            elif not value:
                problems.append(f"{file_name}: [{prompt_id}] is empty (a prompt needs `say`)")
            else:
                walk(value, prompt_id)

    walk(data, "")
    return prompts


def _parse_prompt(
    table: Mapping[str, object],
    prompt_id: str,
    directory: Path,
    file_name: str,
    problems: list[str],
) -> _Prompt:
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

    templates: dict[str, _Template] = {}
    for variant in VARIANTS:
        text = raw.get(variant)
        if text is None:
            continue
        if not text.strip():
            problems.append(f"{where} ({variant}): text is empty")
            continue
        template, errors = _parse_template(text)
        errors += _check_ssml(text)
        problems.extend(f"{where} ({variant}): {error}" for error in errors)
        if template is not None:
            templates[variant] = template

    audio = _resolve_audio(raw.get("audio"), directory, where, problems)
    say = templates.get("say")
    if audio is not None and say is not None and say.fields:
        # A recording cannot speak account data; the placeholders would be silently lost.
        names = ", ".join(f"{{{name}}}" for name in sorted(say.fields))
        problems.append(f"{where}: has `audio` but `say` uses placeholders {names}")
    return _Prompt(raw=MappingProxyType(raw), templates=MappingProxyType(templates), audio=audio)


def _parse_template(text: str) -> tuple[_Template | None, list[str]]:
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
    return _Template(parts=tuple(parts), fields=fields), []


# Pauses: Twilio plays whatever <break> asks for while the caller hears silence (and a
# webhook waits), so one break and all the breaks of one text are bounded.
MAX_BREAK_SECONDS: Final = 10
MAX_PAUSE_SECONDS: Final = 20
_BREAK_TIME: Final = re.compile(r"(\d+(?:\.\d+)?)(ms|s)")


@dataclass(frozen=True)
class _Bounds:
    """The values an SSML attribute may take: keywords, or a number with a unit in range
    (Polly's limits, tighter where a value would make a prompt unusable on a call)."""

    words: tuple[str, ...]
    number: re.Pattern[str]
    low: float
    high: float
    shown: str

    def problem(self, tag: str, attr: str, value: str) -> str | None:
        """Why ``value`` is refused, or None."""
        if value in self.words:
            return None
        match = self.number.fullmatch(value)
        if match and self.low <= float(match.group(1)) <= self.high:
            return None
        return (f"{tag} {attr} {value!r} is out of range: {self.shown}, "
                f"or {', '.join(self.words)}")


_SSML_BOUNDS: Final[Mapping[tuple[str, str], _Bounds]] = {
    # Below 20% one word takes seconds; Polly refuses more than 200%.
    ("prosody", "rate"): _Bounds(("x-slow", "slow", "medium", "fast", "x-fast"),
                                 re.compile(r"(\d+(?:\.\d+)?)%"), 20, 200, "20% to 200%"),
    ("prosody", "pitch"): _Bounds(("default", "x-low", "low", "medium", "high", "x-high"),
                                  re.compile(r"([+-]\d+(?:\.\d+)?)%"), -33.3, 50,
                                  "-33.3% to +50%"),
    # +6dB is about twice as loud; "silent" is left out: callers would hear nothing at all.
    ("prosody", "volume"): _Bounds(("default", "x-soft", "soft", "medium", "loud", "x-loud"),
                                   re.compile(r"([+-]\d+(?:\.\d+)?)dB"), -6, 6,
                                   "-6dB to +6dB"),
}


def _break_seconds(value: str) -> float | None:
    """A <break time> in seconds (None when it is not a time; that is reported apart)."""
    match = _BREAK_TIME.fullmatch(value)
    if match is None:
        return None
    number = float(match.group(1))
    return number / 1000 if match.group(2) == "ms" else number


def _check_limits(tag: str, attrs: Mapping[str, str]) -> tuple[list[str], float]:
    """Problems with the bounded attributes of one element, and the pause it asks for."""
    errors = []
    for attr, value in attrs.items():
        bounds = _SSML_BOUNDS.get((tag, attr))
        if "{" in value or "}" in value:
            continue  # a placeholder: refused as such
        if bounds is not None and (problem := bounds.problem(tag, attr, value)):
            errors.append(problem)
    pause = _break_seconds(attrs.get("time", "")) if tag == "break" else None
    if pause is not None and pause > MAX_BREAK_SECONDS:
        errors.append(f"break time {attrs['time']!r} is too long: at most "
                      f"{MAX_BREAK_SECONDS}s ({MAX_BREAK_SECONDS * 1000}ms)")
    return errors, pause or 0.0


def _check_ssml(text: str) -> list[str]:
    """Problems with the SSML markup of ``text``: well-formedness, the allow-list and the
    limits on pauses, rate, pitch and volume."""
    errors: list[str] = []
    depth = 0
    pauses = 0.0
    parser = expat.ParserCreate()

    def start(tag: str, attrs: dict[str, str]) -> None:
        nonlocal depth, pauses
        depth += 1
        if depth == 1:  # our wrapper element
            return
        allowed = _SSML_ATTRIBUTES.get(tag)
        if allowed is None:
            errors.append(f"unknown SSML tag <{tag}> (allowed: {', '.join(_SSML_ATTRIBUTES)})")
            return
        for attr, value in attrs.items():
            if attr not in allowed:
                names = ", ".join(sorted(allowed)) or "none"
                errors.append(f"unknown attribute {attr!r} on <{tag}> (allowed: {names})")
            elif "{" in value or "}" in value:
                # Values are escaped for text, not attributes, so placeholders stay out of tags.
                errors.append(f"placeholders are not allowed in attributes (<{tag} {attr}>)")
            elif (pattern := _SSML_VALUES.get((tag, attr))) and not pattern.fullmatch(value):
                errors.append(f"bad value {value!r} for {attr} on <{tag}>")
        for attr in sorted(_SSML_REQUIRED.get(tag, frozenset()) - attrs.keys()):
            errors.append(f"<{tag}> needs attribute {attr!r}")
        problems, pause = _check_limits(tag, attrs)
        errors.extend(problems)
        pauses += pause

    def refuse(what: str) -> None:
        errors.append(f"{what} are not allowed in prompt text (use `note` for comments)")

    parser.StartElementHandler = start
    parser.CommentHandler = lambda _data: refuse("XML comments")
    parser.StartCdataSectionHandler = lambda: refuse("CDATA sections")
    parser.ProcessingInstructionHandler = lambda _target, _data: refuse("processing instructions")
    # A DOCTYPE could define entities; nothing in a prompt needs one.
    parser.StartDoctypeDeclHandler = lambda *_args: refuse("DOCTYPE declarations")
    opening = f"<{_WRAPPER}>"
    try:
        parser.Parse(f"{opening}{text}</{_WRAPPER}>", True)
    except expat.ExpatError as exc:
        # Report positions in the prompt text, not in our wrapped copy of it.
        column = exc.offset - len(opening) if exc.lineno == 1 else exc.offset
        message = expat.errors.messages[exc.code]
        errors.append(f"malformed SSML: {message} at line {exc.lineno}, column {column + 1}")
    if pauses > MAX_PAUSE_SECONDS:
        errors.append(f"pauses add up to {pauses:g}s: at most {MAX_PAUSE_SECONDS}s in one text")
    return errors


def _resolve_audio(
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


def _cross_check(
    prompts: Mapping[str, Mapping[str, _Prompt]], required_ids: Required
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
