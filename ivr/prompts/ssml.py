"""The SSML subset prompt text may use, and the checks that keep a typo off a live call."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final
from xml.parsers import expat

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


def check_ssml(text: str) -> list[str]:
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
