"""Changing prompt wording from the console.

The database holds the current prompts for every node (ivr.prompts.snapshots): an edit is made
on the current version's files, checked on a candidate copy with the same checks as
`ivr prompts check`, and only a clean candidate becomes the new current version, under a lock
every node takes. Every node's PromptStore loads it on its next call. This node's prompts
folder is then rewritten to match (atomically, keeping comments and layout), so the files on
disk still show what the line says. Every change is recorded in ``prompt_versions``; a revert
is a new change that puts an older text back.
"""

from __future__ import annotations

import fcntl
import logging
import os
import tempfile
import tomllib
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import tomlkit
from sqlalchemy.orm import Session

from ivr.models import PromptVersion
from ivr.prompts import snapshots
from ivr.prompts.catalog import (
    AUDIO_DIR,
    SETTINGS_FILE,
    VARIANTS,
    Catalog,
    load_catalog,
    load_files,
)
from ivr.prompts.ids import PROMPT_PARAMS

logger = logging.getLogger(__name__)

MAX_TEXT = 4000
MAX_NOTE = 500


@dataclass(frozen=True)
class Change:
    """One variant of a prompt in one language: from the text the editor started with
    (``expected``; None when the variant did not exist) to ``text`` (None removes it)."""

    language: str
    variant: str
    expected: str | None
    text: str | None


class EditRefused(Exception):
    """The edit was not applied; ``problems`` says why. ``conflict``: someone else changed
    the prompt since the editor was opened."""

    def __init__(self, problems: Sequence[str], conflict: bool = False) -> None:
        self.problems = list(problems)
        self.conflict = conflict
        super().__init__("\n".join(self.problems))


def normalize(text: str | None) -> str | None:
    """Browsers send text areas with CRLF line ends; prompts use LF."""
    return None if text is None else text.replace("\r\n", "\n").replace("\r", "\n")


def language_files(directory: Path) -> dict[str, Path]:
    """Language tag -> wording file, as the catalog finds them."""
    return {p.stem: p for p in sorted(directory.glob("*.toml"))
            if p.name != SETTINGS_FILE and not p.name.startswith(".")}


def current_texts(directory: Path, prompt_id: str) -> dict[tuple[str, str], str | None]:
    """(language, variant) -> the text in the folder now (None: variant absent)."""
    files: dict[str, str] = {}
    for path in language_files(directory).values():
        try:
            files[path.name] = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            files[path.name] = ""
    return texts_of(files, prompt_id)


def texts_of(files: Mapping[str, str], prompt_id: str) -> dict[tuple[str, str], str | None]:
    """(language, variant) -> the text in ``files`` (name to text; None: variant absent)."""
    texts: dict[tuple[str, str], str | None] = {}
    for name in sorted(files):
        if not name.endswith(".toml") or name == SETTINGS_FILE or name.startswith("."):
            continue
        try:
            data: Any = tomllib.loads(files[name])
        except tomllib.TOMLDecodeError:
            data = {}
        for part in prompt_id.split("."):
            data = data.get(part, {}) if isinstance(data, dict) else {}
        for variant in VARIANTS:
            value = data.get(variant) if isinstance(data, dict) else None
            texts[(name.removesuffix(".toml"), variant)] = (
                value if isinstance(value, str) else None)
    return texts


def _form_problems(changes: Sequence[Change]) -> list[str]:
    """What the catalog check would not put this way: a removed `say`, a runaway text."""
    problems = []
    for change in changes:
        if change.text is None and change.variant == "say":
            problems.append(f"{change.language} say: `say` is required and cannot be removed")
        elif change.text is not None and len(change.text) > MAX_TEXT:
            problems.append(f"{change.language} {change.variant}: longer than {MAX_TEXT} "
                            "characters")
    return problems


@contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    """One edit at a time on this machine (other machines: the concurrency check)."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with lock_path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _table(doc: Any, prompt_id: str) -> Any:
    node = doc
    for part in prompt_id.split("."):
        node = node[part]
    return node


def _render_files(files: Mapping[str, str], prompt_id: str,
                  changes: Sequence[Change]) -> dict[str, str]:
    """Every file (name to text) with ``changes`` applied (comments kept)."""
    out = dict(files)
    for lang in sorted({c.language for c in changes}):
        name = f"{lang}.toml"
        if name not in files:
            raise EditRefused([f"no wording file for language {lang!r}"])
        doc = tomlkit.parse(files[name])
        try:
            table = _table(doc, prompt_id)
        except (KeyError, TypeError):
            raise EditRefused([f"{name}: prompt {prompt_id!r} not found"]) from None
        for change in changes:
            if change.language != lang:
                continue
            if change.text is None:
                if change.variant in table:
                    del table[change.variant]
            else:
                table[change.variant] = tomlkit.string(change.text)
        out[name] = tomlkit.dumps(doc)
    return out


def check_candidate(directory: Path, files: Mapping[str, str]) -> tuple[Catalog | None,
                                                                          list[str]]:
    """The catalog ``files`` make with this folder's audio, or the problems `ivr prompts
    check` would report (placeholders the code supplies included)."""
    return load_files(files, directory / AUDIO_DIR, PROMPT_PARAMS)


def base_files(db: Session, directory: Path) -> dict[str, str]:
    """The current version's files: the database's, or (nothing kept yet) the folder's."""
    kept = snapshots.current(db)
    if kept is not None:
        return dict(kept.files)
    return dict(load_catalog(directory).sources)


def write_folder(directory: Path, files: Mapping[str, str]) -> None:
    """Make this node's folder show ``files`` (best effort: the database is what counts)."""
    for name, text in sorted(files.items()):
        path = directory / name
        try:
            if not path.exists() or path.read_text(encoding="utf-8") != text:
                write_atomic(path, text)
        except (OSError, UnicodeDecodeError) as exc:
            logger.warning("prompts folder not updated (%s: %s); the line speaks the new "
                           "version from the database", name, exc)


def write_atomic(path: Path, text: str) -> None:
    """Replace ``path`` in one step; readers see the old file or the new, never half of one."""
    old = path.stat() if path.exists() else None
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as stream:
            stream.write(text)
            stream.flush()
            os.fsync(stream.fileno())
        if old is not None:
            os.chmod(temp, old.st_mode & 0o777)
            # The PromptStore notices changes by mtime and size: make sure the mtime moves
            # even on a file system with coarse timestamps.
            mtime = max(os.stat(temp).st_mtime_ns, old.st_mtime_ns + 1_000_000)
            os.utime(temp, ns=(mtime, mtime))
        os.replace(temp, path)
    except BaseException:
        if os.path.exists(temp):
            os.unlink(temp)
        raise


def save_edit(db: Session, directory: Path, prompt_id: str, changes: Sequence[Change], *,
              username: str, note: str, now: datetime, lock_path: Path) -> list[PromptVersion]:
    """Check and apply ``changes`` to one prompt; record them. Raises EditRefused.

    The new version and its change records commit together with the caller's transaction;
    the folder is rewritten after (``lock_path`` keeps this node's writers apart).
    """
    changes = [Change(c.language, c.variant, normalize(c.expected), normalize(c.text))
               for c in changes]
    if any(c.variant not in VARIANTS for c in changes):
        raise EditRefused([f"variants are {', '.join(VARIANTS)}"])
    note = note.strip()[:MAX_NOTE]
    with _locked(lock_path):
        snapshots.lock_prompts(db)
        files = base_files(db, directory)
        current = texts_of(files, prompt_id)
        conflicts = [c for c in changes
                     if normalize(current.get((c.language, c.variant))) != c.expected]
        if conflicts:
            raise EditRefused([
                f"{c.language} {c.variant} was changed by someone else since you opened the "
                "editor; your text is kept below, but the prompts were not changed. Open the "
                "prompt again to see the current wording." for c in conflicts], conflict=True)
        real = [c for c in changes if c.text != c.expected]
        if not real:
            raise EditRefused(["nothing changed"])
        problems = _form_problems(real)
        if problems:
            raise EditRefused(problems)
        new_files = _render_files(files, prompt_id, real)
        catalog, problems = check_candidate(directory, new_files)
        if catalog is None:
            raise EditRefused(problems)
        versions = [PromptVersion(prompt_id=prompt_id, language=c.language, variant=c.variant,
                                  old_text=c.expected, new_text=c.text, username=username,
                                  at=now, note=note) for c in real]
        db.add_all(versions)
        snapshots.publish(db, catalog.version, new_files)
        db.commit()
        write_folder(directory, new_files)
    return versions
