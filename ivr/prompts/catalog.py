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
import tempfile
import threading
import time
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Final, Protocol

from ivr.prompts.parsing import (
    AUDIO_DIR,
    PROMPT_KEYS,
    VARIANTS,
    Prompt,
    Required,
    Template,
    as_required,
    cross_check,
    escape_text,
    parse_language,
)
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
    "load_files",
]

logger = logging.getLogger("ivr.prompts.catalog")
# How long a request waits for another's first load of the prompts before giving up.
FIRST_LOAD_WAIT_SECONDS = 3.0
# How long a request waits for the periodic check of the prompts' version (the folder's
# fingerprint and one small read; a reload when they moved) before speaking the catalog it
# has. The check runs in a thread of its own: a database that stopped answering (libpq has
# no read timeout) holds that thread, never a caller past the webhook's deadline, of which
# this wait is part.
CHECK_WAIT_SECONDS = 2.0

SETTINGS_FILE: Final = "settings.toml"
_LANGUAGE_FILE: Final = re.compile(r"[a-z]{2,3}(?:-[A-Za-z0-9]{2,8})*")
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
        prompts: Mapping[str, Mapping[str, Prompt]],
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

    def _prompt(self, prompt_id: str, lang: str) -> Prompt:
        try:
            return self._prompts[lang][prompt_id]
        except KeyError:
            raise KeyError(f"unknown prompt {prompt_id!r}") from None

    @staticmethod
    def _template(prompt: Prompt, prompt_id: str, variant: str) -> tuple[str, Template]:
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


def check_catalog(directory: Path,
                  required_ids: Iterable[str] | Mapping[str, Iterable[str]] = ()) -> list[str]:
    """Every problem in a prompts directory (and any missing ``required_ids``); [] if fine.

    With a mapping of id to supplied placeholder names, a template using a placeholder the
    code does not supply is a problem too (it would fail on every call reaching it). So is
    a menu's wording that names a key the menu does not accept ("press 4" with no 4).
    """
    return _load(Path(directory), as_required(required_ids))[1]


def _menu_key_problems(prompts: Mapping[str, Mapping[str, Prompt]],
                       settings: LineSettings | None) -> list[str]:
    """Keys named in menu wording that the menus do not accept: whatever the catalog, these
    menus speak it."""
    # The menus are declared with the call flow, which imports this package: read lazily.
    from ivr.calls.wording import key_problems

    texts = {lang: {pid: {v: prompt.raw[v] for v in VARIANTS if v in prompt.raw}
                    for pid, prompt in entries.items()}
             for lang, entries in prompts.items()}
    return key_problems(texts, settings)


class Kept(Protocol):
    """A version kept in the database (ivr.prompts.snapshots.Kept)."""

    @property
    def stamp(self) -> int: ...

    @property
    def version(self) -> str: ...

    @property
    def files(self) -> Mapping[str, str]: ...


class Snapshots(Protocol):
    """Where the current prompts are kept, shared by every node (see ivr.prompts.snapshots)."""

    def stamp(self) -> int | None:
        """The current version's stamp: it changes whenever the current version does."""

    def current(self) -> Kept | None:
        """The current version, or None when nothing was kept yet."""

    def offer(self, version: str, files: Mapping[str, str]) -> None:
        """A folder version that loaded cleanly; it becomes current unless ever kept."""


class PromptStore:
    """Holds the current catalog and reloads it when it changes.

    Without ``snapshots`` (one process, a test) the prompts folder is the catalog: changes are
    detected by (mtime, size) of every file under it, checked at most once per
    ``min_interval`` seconds, so edits apply to the next call without a restart.

    With ``snapshots`` (the app) the database holds the current version, for every node: a
    good folder version never kept before (a fresh install, a hand edit, a new release) is
    offered to it, and each node compares the database's stamp with its own at most once per
    ``min_interval`` and loads the new version when it moved (a console edit, an import, a
    folder published by another node). Audio files are always read from this node's folder.
    A failed load keeps the previous good catalog; ``problems`` says what is wrong with the
    folder meanwhile (the alarm for logs, /healthz and ops).
    """

    def __init__(
        self, directory: Path,
        required_ids: Iterable[str] | Mapping[str, Iterable[str]] = (),
        min_interval: float = 1.0,
        snapshots: Snapshots | None = None,
    ) -> None:
        self._directory = Path(directory)
        self._required_ids = as_required(required_ids)
        self._min_interval = min_interval
        self._snapshots = snapshots
        self._lock = threading.Lock()
        self._catalog: Catalog | None = None
        self._fingerprint: tuple[tuple[str, int, int], ...] | None = None
        self._stamp: int | None = None
        self._checked_at = 0.0
        self.problems: tuple[str, ...] = ()

    @property
    def directory(self) -> Path:
        """The prompts directory being watched."""
        return self._directory

    def get(self) -> Catalog:
        """The current catalog; the first call loads it (CatalogError if that fails)."""
        catalog = self._catalog
        if catalog is None:
            # Bounded: a first load stuck on a hung database must not hold every request
            # (health checks included) past what Twilio and balancers wait.
            if not self._lock.acquire(timeout=FIRST_LOAD_WAIT_SECONDS):
                raise CatalogError(["the prompts are still loading (is the database slow?)"])
            try:
                return self._catalog or self._first_load()
            finally:
                self._lock.release()
        if time.monotonic() - self._checked_at < self._min_interval:
            return catalog
        # Another thread already reloading: serve the current catalog rather than wait.
        if not self._lock.acquire(blocking=False):
            return catalog
        checked = threading.Event()

        def check() -> None:
            try:
                if time.monotonic() - self._checked_at >= self._min_interval:
                    self._reload_if_changed()
            except Exception:  # the folder or the database: keep speaking what we have
                logger.exception("checking the prompts' version failed")
            finally:
                self._lock.release()
                checked.set()

        threading.Thread(target=check, name="ivr-prompts-check", daemon=True).start()
        checked.wait(CHECK_WAIT_SECONDS)  # an edit is heard by this call, unless stuck
        return self._catalog or catalog

    def refresh(self) -> Catalog:
        """The current catalog, checked now (the console, before it shows or saves)."""
        with self._lock:
            if self._catalog is None:
                return self._first_load()
            self._reload_if_changed()
            return self._catalog

    def _first_load(self) -> Catalog:
        fingerprint = _fingerprint(self._directory)
        catalog, problems = _load(self._directory, self._required_ids)
        self.problems = tuple(problems)
        self._fingerprint = fingerprint
        # A database that could not take the folder's version cannot be read either: one
        # wait on it, not two.
        reachable = catalog is None or self._offer(catalog)
        shared = self._shared(catalog) if reachable else None
        if shared is not None:
            catalog = shared
        if catalog is None:
            # Not remembered: the next get() tries again, so a fixed directory recovers.
            raise CatalogError(problems)
        if problems:
            logger.error(
                "prompts in %s are broken; speaking the last good version %s kept in the "
                "database until they are fixed; %d problem(s):\n%s", self._directory,
                catalog.version, len(problems), "\n".join(f"  {p}" for p in problems))
        else:
            logger.info("prompts loaded: version %s", catalog.version)
        self._catalog = catalog
        self._checked_at = time.monotonic()
        return catalog

    def _reload_if_changed(self) -> None:
        self._checked_at = time.monotonic()
        # Taken before reading: an edit landing mid-load changes it again and triggers
        # another reload next time, so no edit is ever missed.
        fingerprint = _fingerprint(self._directory)
        if fingerprint != self._fingerprint:
            # Remembered even when the reload fails, so a broken file is logged once, not on
            # every call; the next edit changes the fingerprint and is tried again.
            self._fingerprint = fingerprint
            self._reload_folder()
        if self._snapshots is None:
            return
        try:
            stamp = self._snapshots.stamp()
        except Exception:  # a database hiccup: keep speaking what we have
            logger.warning("could not read the prompts version stamp", exc_info=True)
            return
        if stamp != self._stamp:
            shared = self._shared(None)
            if shared is not None and (self._catalog is None
                                       or shared.version != self._catalog.version):
                logger.info("prompts reloaded from the database: version %s", shared.version)
                self._catalog = shared

    def _reload_folder(self) -> None:
        catalog, problems = _load(self._directory, self._required_ids)
        if catalog is None:
            self.problems = tuple(problems)
            old = self._catalog.version if self._catalog else "none"
            logger.error(
                "prompts in %s not reloaded, keeping version %s; %d problem(s):\n%s",
                self._directory, old, len(problems),
                "\n".join(f"  {problem}" for problem in problems))
            return
        self.problems = ()
        if self._snapshots is not None:
            self._offer(catalog)  # the stamp check that follows picks it up
            return
        if self._catalog is None or catalog.version != self._catalog.version:
            logger.info("prompts reloaded from %s: version %s", self._directory, catalog.version)
        self._catalog = catalog

    def _offer(self, catalog: Catalog) -> bool:
        """Offer the folder's version to the database; False when the database failed."""
        if self._snapshots is None or not catalog.sources:
            return True
        try:
            self._snapshots.offer(catalog.version, catalog.sources)
        except Exception:  # a database hiccup must not stop the line speaking
            logger.warning("could not keep prompts version %s in the database",
                           catalog.version, exc_info=True)
            return False
        return True

    def wait_until_kept(self, timeout: float) -> None:
        """Kept for callers of the earlier, asynchronous keeping: versions are now kept
        before get() returns."""

    def _shared(self, folder: Catalog | None) -> Catalog | None:
        """The database's current version as a catalog (with this node's audio), or None
        when there is none, it cannot be read, or it does not load with this code."""
        if self._snapshots is None:
            return None
        try:
            kept = self._snapshots.current()
        except Exception:
            logger.warning("could not read the current prompts", exc_info=True)
            return None
        if kept is None:
            return None
        self._stamp = kept.stamp
        if folder is not None and folder.version == kept.version:
            return folder
        catalog, problems = load_files(kept.files, self._directory / AUDIO_DIR,
                                       self._required_ids)
        if catalog is None:
            logger.error("the prompts kept in the database (version %s) do not load: %s",
                         kept.version, "; ".join(problems))
        return catalog


def load_files(files: Mapping[str, str], audio: Path | None,
               required_ids: Required | Iterable[str] = ()) -> tuple[Catalog | None, list[str]]:
    """Load a catalog from its files (name to text) and an audio folder; (catalog, problems)."""
    with tempfile.TemporaryDirectory(prefix="ivr-prompts-") as temp:
        folder = Path(temp)
        for name, text in files.items():
            if "/" in name or "\\" in name or name.startswith("."):
                continue  # only plain file names are ever kept
            (folder / name).write_text(text, encoding="utf-8")
        if audio is not None and audio.is_dir():
            (folder / AUDIO_DIR).symlink_to(audio.resolve(), target_is_directory=True)
        return _load(folder, as_required(required_ids))


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

    prompts: dict[str, dict[str, Prompt]] = {}
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
            prompts[lang] = parse_language(data, directory, path.name, problems)

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
    problems.extend(cross_check(prompts, required_ids))
    problems.extend(_menu_key_problems(prompts, settings))

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
