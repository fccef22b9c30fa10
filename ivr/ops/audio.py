"""Hearing a prompt in the console: SSML synthesised to WAV by espeak-ng, cached on disk.

espeak-ng is not the line's voice (Twilio's Polly voices are); it is there to hear the length
and wording of a draft before callers do.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

from ivr.prompts.spoken import RATE_WPM, SpeechUnavailable, espeak_ssml, espeak_voice, run_espeak

__all__ = ["AudioError", "cache_key", "cached", "espeak_ssml", "espeak_voice", "synthesize"]

MAX_CHARS = 5000
CACHE_FILES = 300
_KEY = re.compile(r"[0-9a-f]{64}")


class AudioError(Exception):
    """The preview could not be made; the message is for the operator."""


def cache_key(ssml: str, voice: str) -> str:
    """The cache file name for a text and voice."""
    return hashlib.sha256(f"{voice}\0{RATE_WPM}\0{ssml}".encode()).hexdigest()


def cached(cache_dir: Path, key: str) -> Path | None:
    """The cached WAV for ``key``, if there is one (keys are checked: no path tricks)."""
    if not _KEY.fullmatch(key):
        return None
    path = cache_dir / f"{key}.wav"
    return path if path.is_file() else None


def synthesize(ssml: str, lang: str, cache_dir: Path) -> str:
    """Make (or find) the WAV for rendered prompt SSML; returns its cache key."""
    if len(ssml) > MAX_CHARS:
        raise AudioError(f"the text is longer than {MAX_CHARS} characters")
    try:
        document = espeak_ssml(ssml)
    except ET.ParseError as exc:
        raise AudioError(f"the text is not valid SSML: {exc}") from None
    voice = espeak_voice(lang)
    key = cache_key(document, voice)
    if cached(cache_dir, key) is not None:
        return key
    cache_dir.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(dir=cache_dir, prefix=".", suffix=".wav")
    os.close(fd)
    try:
        run_espeak(document, voice, Path(temp))
        os.replace(temp, cache_dir / f"{key}.wav")
    except SpeechUnavailable as exc:
        raise AudioError(str(exc)) from None
    finally:
        if os.path.exists(temp):
            os.unlink(temp)
    _prune(cache_dir)
    return key


def _prune(cache_dir: Path) -> None:
    """Keep the cache small: the oldest previews go first."""
    files = sorted(cache_dir.glob("*.wav"), key=lambda p: p.stat().st_mtime)
    for path in files[:-CACHE_FILES]:
        path.unlink(missing_ok=True)
