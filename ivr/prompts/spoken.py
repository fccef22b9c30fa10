"""How long a prompt takes to say: espeak-ng at a stated rate, measured from the WAV it makes.

espeak-ng is not the line's voice (Twilio's Polly voices are); it makes the figure
reproducible on any machine, so a wording change shows what it costs in seconds. Lengths are
cached by voice, rate and text (in memory, and in a JSON file when one is given), so a page or
a benchmark that asks again does not synthesise again.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import threading
import wave
import xml.etree.ElementTree as ET
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

# Words a minute: a natural pace for a phone line (espeak-ng's own default is 175).
RATE_WPM = 165
TIMEOUT_SECONDS = 15.0
# Tags espeak-ng's SSML reader understands; the rest of our SSML subset is reduced to text.
_KEPT = {"break", "emphasis", "prosody", "say-as", "p", "s"}


class SpeechUnavailable(Exception):
    """espeak-ng is missing or failed; the message is for the operator."""


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


def run_espeak(document: str, voice: str, out: Path) -> None:
    """Synthesise an espeak-ng SSML document to a WAV file at ``RATE_WPM``."""
    program = shutil.which("espeak-ng")
    if program is None:
        raise SpeechUnavailable("espeak-ng is not installed on the server "
                                "(Debian: apt-get install espeak-ng)")
    try:
        # A list of arguments, never a shell; "--" ends options, so text cannot pose as one.
        result = subprocess.run(  # noqa: S603 - fixed program, arguments as a list
            [program, "-m", "-v", voice, "-s", str(RATE_WPM), "-w", str(out), "--", document],
            capture_output=True, timeout=TIMEOUT_SECONDS, check=False)
    except subprocess.TimeoutExpired:
        raise SpeechUnavailable(f"espeak-ng took longer than {TIMEOUT_SECONDS:.0f} s") from None
    if result.returncode != 0 or not out.is_file() or out.stat().st_size == 0:
        message = result.stderr.decode("utf-8", "replace").strip()[:200]
        raise SpeechUnavailable(f"espeak-ng failed: {message or result.returncode}")


def words(text: str) -> int:
    """Words in plain text (a spelled code counts one word per character)."""
    return len(text.replace(",", " ").split())


class SpokenLengths:
    """Seconds of speech per (language, SSML), synthesised once and remembered."""

    def __init__(self, cache_file: Path | None = None) -> None:
        self.cache_file = cache_file
        self._lock = threading.Lock()
        self._seconds: dict[str, float] = {}
        self._dirty = False
        if cache_file is not None and cache_file.is_file():
            try:
                loaded = json.loads(cache_file.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                loaded = {}
            if isinstance(loaded, dict):
                self._seconds = {k: float(v) for k, v in loaded.items()
                                 if isinstance(v, int | float)}

    @staticmethod
    def _key(document: str, voice: str) -> str:
        return hashlib.sha256(f"{voice}\0{RATE_WPM}\0{document}".encode()).hexdigest()

    def seconds(self, ssml: str, lang: str) -> float:
        """Seconds espeak-ng takes to say ``ssml`` in ``lang`` (SpeechUnavailable when it
        cannot; ValueError for text that is not valid SSML)."""
        try:
            document = espeak_ssml(ssml)
        except ET.ParseError as exc:
            raise ValueError(f"not valid SSML: {exc}") from None
        voice = espeak_voice(lang)
        key = self._key(document, voice)
        with self._lock:
            known = self._seconds.get(key)
        if known is not None:
            return known
        fd, temp = tempfile.mkstemp(prefix="ivr-spoken-", suffix=".wav")
        os.close(fd)
        try:
            run_espeak(document, voice, Path(temp))
            with wave.open(temp, "rb") as wav:
                length = round(wav.getnframes() / wav.getframerate(), 2)
        finally:
            Path(temp).unlink(missing_ok=True)
        with self._lock:
            self._seconds[key] = length
            self._dirty = True
        return length

    def many(self, items: Iterable[tuple[str, str]]) -> list[float]:
        """Seconds for each (ssml, lang), synthesised a few at a time; then saved."""
        todo = list(items)
        with ThreadPoolExecutor(max_workers=min(8, (os.cpu_count() or 2))) as pool:
            found = list(pool.map(lambda item: self.seconds(*item), todo))
        self.save()
        return found

    def save(self) -> None:
        """Write the cache file, when there is one and something new was measured."""
        if self.cache_file is None or not self._dirty:
            return
        with self._lock:
            data = json.dumps(self._seconds, sort_keys=True)
            self._dirty = False
        self.cache_file.parent.mkdir(parents=True, exist_ok=True)
        temp = self.cache_file.with_name(f".{self.cache_file.name}.{os.getpid()}")
        temp.write_text(data, encoding="utf-8")
        os.replace(temp, self.cache_file)
