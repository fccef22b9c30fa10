"""Hearing a prompt in the console: SSML synthesised to WAV by espeak-ng, cached on disk.

espeak-ng is not the line's voice (Twilio's Polly voices are); it is there to hear the length
and wording of a draft before callers do.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

MAX_CHARS = 5000
TIMEOUT_SECONDS = 15.0
CACHE_FILES = 300
_KEY = re.compile(r"[0-9a-f]{64}")
# Tags espeak-ng's SSML reader understands; the rest of our SSML subset is reduced to text.
_KEPT = {"break", "emphasis", "prosody", "say-as", "p", "s"}


class AudioError(Exception):
    """The preview could not be made; the message is for the operator."""


def espeak_voice(lang: str) -> str:
    """espeak-ng's voice for a line language tag: es-* -> Latin American Spanish."""
    return "es-419" if lang.lower().startswith("es") else "en-us"


def espeak_ssml(ssml: str) -> str:
    """Our SSML fragment as a document espeak-ng reads: <sub> says its alias, and tags it
    does not know (phoneme alphabets, <lang>, <w>) are reduced to their text."""
    root = ET.fromstring(f"<speak>{ssml}</speak>")  # noqa: S314 - validated prompt text
    return f"<speak>{_inner(root)}</speak>"


def _inner(element: ET.Element) -> str:
    parts = [escape(element.text or "")]
    for child in element:
        parts.append(_node(child))
        parts.append(escape(child.tail or ""))
    return "".join(parts)


def _node(element: ET.Element) -> str:
    if element.tag == "sub":
        return escape(element.get("alias", ""))
    if element.tag not in _KEPT:
        return _inner(element)
    attrs = "".join(f" {name}={quoteattr(value)}" for name, value in element.attrib.items())
    if element.tag == "break":
        return f"<break{attrs}/>"
    return f"<{element.tag}{attrs}>{_inner(element)}</{element.tag}>"


def cache_key(ssml: str, voice: str) -> str:
    """The cache file name for a text and voice."""
    return hashlib.sha256(f"{voice}\0{ssml}".encode()).hexdigest()


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
    program = shutil.which("espeak-ng")
    if program is None:
        raise AudioError("espeak-ng is not installed on the server "
                         "(Debian: apt-get install espeak-ng)")
    cache_dir.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(dir=cache_dir, prefix=".", suffix=".wav")
    os.close(fd)
    try:
        # A list of arguments, never a shell; "--" ends options, so text cannot pose as one.
        result = subprocess.run(  # noqa: S603 - fixed program, arguments as a list
            [program, "-m", "-v", voice, "-w", temp, "--", document],
            capture_output=True, timeout=TIMEOUT_SECONDS, check=False)
        if result.returncode != 0 or os.path.getsize(temp) == 0:
            message = result.stderr.decode("utf-8", "replace").strip()[:200]
            raise AudioError(f"espeak-ng failed: {message or result.returncode}")
        os.replace(temp, cache_dir / f"{key}.wav")
    except subprocess.TimeoutExpired:
        raise AudioError(f"espeak-ng took longer than {TIMEOUT_SECONDS:.0f} s") from None
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
