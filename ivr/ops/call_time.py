"""What wording costs in seconds, for the prompts page: each prompt's spoken length (with
sample values) and the happy path's total, measured as bench/call_time.py measures them."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
from pathlib import Path

from ivr.ops.samples import PreviewError, render_draft, sample_values
from ivr.prompts.catalog import Catalog
from ivr.prompts.spoken import SpeechUnavailable, SpokenLengths
from ivr.simulator.timing import HAPPY_PATH

log = logging.getLogger(__name__)

CACHE_FILE = "spoken-lengths.json"


def cache_file(instance: Path) -> Path:
    """Where spoken lengths are remembered for the console."""
    return instance / CACHE_FILE


# The happy path per prompts version: a simulated call takes seconds, wording changes rarely.
_HAPPY: dict[tuple[str, str], dict[str, object] | None] = {}
_HAPPY_LOCK = threading.Lock()
TIMEOUT_SECONDS = 90


def lengths(instance: Path) -> SpokenLengths:
    """Spoken lengths remembered in the instance folder, shared with later page loads."""
    return SpokenLengths(cache_file(instance))


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


def happy_path(catalog: Catalog, prompts_dir: Path, cache: Path) -> dict[str, object] | None:
    """The happy path (caller ID, ZIP, full balance, card) on the current wording, timed once
    per prompts version; None when it cannot be measured here (no espeak-ng, broken files).

    Timed in a process of its own: its simulated webhooks must not count in this line's
    metrics (a multi-process metrics folder included) or appear in its logs.
    """
    key = (str(prompts_dir), catalog.version)
    with _HAPPY_LOCK:
        if key not in _HAPPY:
            _HAPPY[key] = _time_happy_path(prompts_dir, cache)
        return _HAPPY[key]


def _time_happy_path(prompts_dir: Path, cache: Path) -> dict[str, object] | None:
    # Nothing of the line's own: no shared metrics folder, no Twilio account to text from.
    env = {k: v for k, v in os.environ.items()
           if k != "PROMETHEUS_MULTIPROC_DIR" and not k.startswith(("IVR_TWILIO", "IVR_SMS"))}
    env["IVR_LOG_LEVEL"] = "ERROR"
    try:
        done = subprocess.run(  # noqa: S603 - this interpreter, our own module, a list
            [sys.executable, "-m", "ivr.simulator.timing", "--call", HAPPY_PATH.name,
             "--prompts", str(prompts_dir), "--cache", str(cache)],
            capture_output=True, text=True, timeout=TIMEOUT_SECONDS, env=env, check=False)
    except subprocess.TimeoutExpired:
        log.warning("happy path not timed: longer than %d s", TIMEOUT_SECONDS)
        return None
    if done.returncode != 0:
        log.warning("happy path not timed: %s", done.stderr.strip()[-300:])
        return None
    found: dict[str, object] = json.loads(done.stdout.splitlines()[-1])
    return found if found.get("reached_confirmation") else None
