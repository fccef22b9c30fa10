"""What wording costs in seconds, for the prompts page: each prompt's spoken length (with
sample values) and the happy path's total, measured as bench/call_time.py measures them."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from ivr.ops.samples import PreviewError, render_draft, sample_values
from ivr.prompts.catalog import Catalog
from ivr.prompts.spoken import SpeechUnavailable, SpokenLengths
from ivr.simulator.timing import HAPPY_PATH, CallTime, time_calls

log = logging.getLogger(__name__)

CACHE_FILE = "spoken-lengths.json"
# The happy path per prompts version: a simulated call takes seconds, wording changes rarely.
_HAPPY: dict[tuple[str, str], CallTime | None] = {}
_HAPPY_LOCK = threading.Lock()


def lengths(instance: Path) -> SpokenLengths:
    """Spoken lengths remembered in the instance folder, shared with later page loads."""
    return SpokenLengths(instance / CACHE_FILE)


def prompt_seconds(catalog: Catalog, lang: str, prompt_ids: list[str],
                   spoken: SpokenLengths) -> dict[str, float]:
    """Seconds each prompt's `say` takes with sample values ({} when espeak-ng is missing;
    a prompt that cannot be rendered is left out)."""
    values = sample_values(catalog, lang)
    texts: dict[str, str] = {}
    for prompt_id in prompt_ids:
        say = catalog.raw(prompt_id, lang).get("say")
        if not say:
            continue
        try:
            texts[prompt_id] = render_draft(say, values)
        except PreviewError:
            continue
    try:
        found = spoken.many((ssml, lang) for ssml in texts.values())
    except (SpeechUnavailable, ValueError) as exc:
        log.warning("spoken lengths unavailable: %s", exc)
        return {}
    return dict(zip(texts, found, strict=True))


def happy_path(catalog: Catalog, prompts_dir: Path, spoken: SpokenLengths,
               log_level: str) -> CallTime | None:
    """The happy path (caller ID, ZIP, full balance, card) on the current wording, timed once
    per prompts version; None when it cannot be measured here (no espeak-ng, broken files)."""
    key = (str(prompts_dir), catalog.version)
    with _HAPPY_LOCK:
        if key not in _HAPPY:
            try:
                [timed] = time_calls((HAPPY_PATH,), prompts_dir=prompts_dir, lengths=spoken,
                                     log_level=log_level)
                _HAPPY[key] = timed if timed.reached_confirmation else None
            except Exception as exc:  # a figure on a page, never an error page
                log.warning("happy path not timed: %s", exc)
                _HAPPY[key] = None
        return _HAPPY[key]
