"""Changing prompt wording from the console.

The prompt files stay the source of truth: an edit is checked on a candidate copy of the whole
prompts directory with the same checks as `ivr prompts check`, and only a clean candidate is
written back, file by file, atomically (temp file + rename), keeping comments and layout. The
line's PromptStore sees the new files on the next call. Every change is recorded in
``prompt_versions``; a revert is a new change that puts an older text back.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import tempfile
import tomllib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import tomlkit
from sqlalchemy.orm import Session

from ivr.models import PromptVersion
from ivr.prompts.catalog import AUDIO_DIR, SETTINGS_FILE, VARIANTS, check_catalog
from ivr.prompts.ids import PROMPT_PARAMS

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
    """(language, variant) -> the text in the file now (None: variant absent), read from disk."""
    texts: dict[tuple[str, str], str | None] = {}
    for lang, path in language_files(directory).items():
        try:
            data: Any = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
            data = {}
        for part in prompt_id.split("."):
            data = data.get(part, {}) if isinstance(data, dict) else {}
        for variant in VARIANTS:
            value = data.get(variant) if isinstance(data, dict) else None
            texts[(lang, variant)] = value if isinstance(value, str) else None
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


def _render_files(directory: Path, prompt_id: str,
                  changes: Sequence[Change]) -> dict[Path, str]:
    """The new content of each wording file touched by ``changes`` (comments kept)."""
    files = language_files(directory)
    out: dict[Path, str] = {}
    for lang in sorted({c.language for c in changes}):
        path = files.get(lang)
        if path is None:
            raise EditRefused([f"no wording file for language {lang!r}"])
        doc = tomlkit.parse(path.read_text(encoding="utf-8"))
        try:
            table = _table(doc, prompt_id)
        except (KeyError, TypeError):
            raise EditRefused([f"{path.name}: prompt {prompt_id!r} not found"]) from None
        for change in changes:
            if change.language != lang:
                continue
            if change.text is None:
                if change.variant in table:
                    del table[change.variant]
            else:
                table[change.variant] = tomlkit.string(change.text)
        out[path] = tomlkit.dumps(doc)
    return out


def check_candidate(directory: Path, new_files: dict[Path, str]) -> list[str]:
    """Problems `ivr prompts check` would report if ``new_files`` replaced their originals."""
    with tempfile.TemporaryDirectory(prefix="ivr-prompts-") as tmp:
        candidate = Path(tmp)
        for path in directory.glob("*.toml"):
            if path.name.startswith("."):
                continue
            target = candidate / path.name
            if path in new_files:
                target.write_text(new_files[path], encoding="utf-8")
            else:
                shutil.copyfile(path, target)
        audio = directory / AUDIO_DIR
        if audio.is_dir():
            # Audio files are only checked for existence: a link avoids copying recordings.
            os.symlink(audio.resolve(), candidate / AUDIO_DIR)
        # Exactly what `ivr prompts check` runs, placeholders the code supplies included.
        return check_catalog(candidate, PROMPT_PARAMS)


def write_atomic(path: Path, text: str) -> None:
    """Replace ``path`` in one step; readers see the old file or the new, never half of one."""
    old = path.stat()
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as stream:
            stream.write(text)
            stream.flush()
            os.fsync(stream.fileno())
        os.chmod(temp, old.st_mode & 0o777)
        # The PromptStore notices changes by mtime and size: make sure the mtime moves even
        # on a file system with coarse timestamps.
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

    The versions are added to ``db`` before the files are written, so a failed write rolls
    them back with the caller's transaction.
    """
    changes = [Change(c.language, c.variant, normalize(c.expected), normalize(c.text))
               for c in changes]
    if any(c.variant not in VARIANTS for c in changes):
        raise EditRefused([f"variants are {', '.join(VARIANTS)}"])
    note = note.strip()[:MAX_NOTE]
    with _locked(lock_path):
        current = current_texts(directory, prompt_id)
        conflicts = [c for c in changes
                     if normalize(current.get((c.language, c.variant))) != c.expected]
        if conflicts:
            raise EditRefused([
                f"{c.language} {c.variant} was changed by someone else since you opened the "
                "editor; your text is kept below, but the file was not changed. Open the "
                "prompt again to see the current wording." for c in conflicts], conflict=True)
        real = [c for c in changes if c.text != c.expected]
        if not real:
            raise EditRefused(["nothing changed"])
        problems = _form_problems(real)
        if problems:
            raise EditRefused(problems)
        new_files = _render_files(directory, prompt_id, real)
        problems = check_candidate(directory, new_files)
        if problems:
            raise EditRefused(problems)
        versions = [PromptVersion(prompt_id=prompt_id, language=c.language, variant=c.variant,
                                  old_text=c.expected, new_text=c.text, username=username,
                                  at=now, note=note) for c in real]
        db.add_all(versions)
        db.flush()
        for path, text in new_files.items():
            try:
                write_atomic(path, text)
            except OSError as exc:
                raise EditRefused([f"{path.name}: cannot write the file: "
                                   f"{exc.strerror or exc}"]) from None
    return versions
