"""Ops edits to wording and settings apply to the next call, without a restart."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

from ivr.prompts.ids import REQUIRED_PROMPT_IDS
from tests.conftest import REPO, call, make_app


def _bump(path: Path) -> None:
    # Filesystems with coarse timestamps: make sure the change is visible, then let the
    # store's check interval pass.
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 2_000_000_000))
    time.sleep(0.25)


@pytest.mark.slow
def test_wording_edit_is_heard_on_the_next_call(tmp_path: Path, sqlite_url: str) -> None:
    prompts = tmp_path / "prompts"
    shutil.copytree(REPO / "prompts", prompts)
    app = make_app(sqlite_url, prompts)
    assert "Thanks for calling." in call(app, "-").said()

    en = prompts / "en-US.toml"
    en.write_text(en.read_text(encoding="utf-8").replace(
        "Thanks for calling.", "Welcome to City Water payments."),
        encoding="utf-8")
    _bump(en)
    assert "Welcome to City Water payments." in call(app, "-").said()

    # A broken edit is refused: callers keep hearing the last good wording.
    en.write_text(en.read_text(encoding="utf-8").replace(
        "Welcome to City Water payments.", "Welcome <emphasis>unclosed."), encoding="utf-8")
    _bump(en)
    assert "Welcome to City Water payments." in call(app, "-").said()


def test_settings_edit_applies_to_the_next_call(tmp_path: Path, sqlite_url: str) -> None:
    prompts = tmp_path / "prompts"
    shutil.copytree(REPO / "prompts", prompts)
    app = make_app(sqlite_url, prompts)
    assert "Para español" in call(app, "-").said()
    settings = prompts / "settings.toml"
    settings.write_text(settings.read_text().replace(
        'languages = ["en-US", "es-US"]', 'languages = ["en-US"]'))
    _bump(settings)
    said = call(app, "-").said()
    assert "Para español" not in said
    assert "For the account ending in" in said  # no language menu, and none offered


def test_code_speaks_only_registered_prompt_ids() -> None:
    """Every prompt id in the code is in REQUIRED_PROMPT_IDS (with those menu choices
    declare), which `prompts check` enforces."""
    import re

    used: set[str] = set()
    from ivr.calls.states import STATES

    pattern = re.compile(r'(?:Speech|say|render|has)\(\s*"([a-z_]+\.[a-z_.]+)"')
    for path in (REPO / "ivr").rglob("*.py"):
        used.update(pattern.findall(path.read_text(encoding="utf-8")))
    # The prompts the state declarations name (their questions and announced choices).
    used.update(pid for state in STATES.values() for pid in state.question_prompts)
    twiml_ids = re.findall(r'\("(pay\.[a-z_]+)", \{', (REPO / "ivr/calls/twiml.py").read_text())
    used.update(twiml_ids)
    payments = (REPO / "ivr/money/payments.py").read_text()
    used.update(re.findall(r'"(pay\.result\.[a-z_]+)"', payments))
    assert len(used) > 60
    assert used - set(REQUIRED_PROMPT_IDS) == set()


def test_every_prompt_renders_with_the_values_the_code_supplies() -> None:
    from ivr.prompts.catalog import load_catalog
    from ivr.prompts.ids import PROMPT_PARAMS

    catalog = load_catalog(REPO / "prompts")
    for lang in catalog.settings.languages:
        for prompt_id, names in PROMPT_PARAMS.items():
            values = dict.fromkeys(names, "x")
            for variant in ("say", "reprompt"):
                assert catalog.render(prompt_id, lang, variant, **values).ssml


def test_check_catches_a_placeholder_the_code_does_not_supply(tmp_path: Path) -> None:
    from ivr.prompts.catalog import check_catalog
    from ivr.prompts.ids import PROMPT_PARAMS

    prompts = tmp_path / "prompts"
    shutil.copytree(REPO / "prompts", prompts)
    # Renamed the same way in both languages: consistent, yet every call would fail there.
    for name in ("en-US.toml", "es-US.toml"):
        path = prompts / name
        text = path.read_text(encoding="utf-8")
        start = text.index("[amount.confirm]")
        end = text.index("[", start + 1)
        path.write_text(text[:start] + text[start:end].replace("{amount}", "{amt}") + text[end:],
                        encoding="utf-8")
    problems = check_catalog(prompts, PROMPT_PARAMS)
    assert any("'amount.confirm'" in p and "{amt}" in p for p in problems), problems
