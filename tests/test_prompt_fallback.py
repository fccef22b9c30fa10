"""A broken prompts folder never silences the line: the last good wording, kept in the database,
is spoken by every process that starts meanwhile, with an alarm in logs and /healthz."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from click.testing import CliRunner
from flask import Flask

from ivr.cli import main
from tests.conftest import TOKEN, call, custom_prompts, make_app, never_serve, said_text

pytestmark = pytest.mark.slow


def _break(prompts: Path) -> None:
    settings = prompts / "settings.toml"
    settings.write_text(settings.read_text(encoding="utf-8") + "\n[[[ not toml\n",
                        encoding="utf-8")


def _loaded(app: Flask) -> None:
    """Load the app's prompts, and wait until it has kept them in the database."""
    store = app.extensions["ivr.prompts.catalog"]
    store.get()
    store.wait_until_kept(timeout=10)


def _restart(database_url: str, prompts: Path) -> Flask:
    """A new worker process: nothing in memory, only the folder and the database."""
    return make_app(database_url, prompts)


def test_a_worker_started_on_a_broken_folder_speaks_the_last_good_wording(
        database_url: str, tmp_path: Path) -> None:
    prompts = custom_prompts(tmp_path, {"en-US.toml": (
        'say = "Thanks for calling."',
        'say = "Thank you for calling Lakeside Power."')})
    first = make_app(database_url, prompts)
    assert "Lakeside Power" in call(first, "1 hangup").said()
    first.extensions["ivr.prompts.catalog"].wait_until_kept(timeout=10)
    _break(prompts)
    alarms: list[logging.LogRecord] = []
    handler = logging.Handler(logging.ERROR)
    handler.emit = alarms.append  # type: ignore[method-assign]
    logging.getLogger("ivr.prompts.catalog").addHandler(handler)
    try:
        restarted = _restart(database_url, prompts)
        result = call(restarted, "1 60614 1 1")
    finally:
        logging.getLogger("ivr.prompts.catalog").removeHandler(handler)
    said = result.said()
    assert "Lakeside Power" in said  # the operator's wording, not the shipped default
    assert any(e["event"] == "pay" for e in result.events)  # the caller could pay
    assert "can't take your call" not in said
    assert any("last good version" in r.getMessage() for r in alarms)
    health = restarted.test_client().get("/healthz")
    assert health.status_code == 200
    body = health.get_json()
    assert body["status"] == "degraded" and body["prompts"].startswith("broken")
    assert any("settings.toml" in problem for problem in body["prompts_problems"])


def test_the_fixed_folder_takes_over_and_the_alarm_clears(database_url: str,
                                                          tmp_path: Path) -> None:
    prompts = custom_prompts(tmp_path, {})
    _loaded(make_app(database_url, prompts))
    good = (prompts / "settings.toml").read_text(encoding="utf-8")
    _break(prompts)
    restarted = _restart(database_url, prompts)
    store = restarted.extensions["ivr.prompts.catalog"]
    store.get()
    assert store.problems
    (prompts / "settings.toml").write_text(good.replace("max_tries = 3", "max_tries = 2"),
                                           encoding="utf-8")
    store._checked_at = 0.0  # the next call looks at the folder again
    assert store.get().settings.input.max_tries == 2
    assert store.problems == ()
    assert restarted.test_client().get("/healthz").get_json()["status"] == "ok"


def test_another_machine_falls_back_on_what_this_one_kept(database_url: str,
                                                          tmp_path: Path) -> None:
    one = custom_prompts(tmp_path / "one", {"en-US.toml": (
        'say = "Thanks for calling."',
        'say = "Thank you for calling Lakeside Power."')})
    _loaded(make_app(database_url, one))
    two = custom_prompts(tmp_path / "two", {})
    _break(two)
    other = make_app(database_url, two)
    assert said_text(other, "greeting.welcome") == "Thank you for calling Lakeside Power."


def test_with_nothing_kept_a_broken_folder_is_refused_at_start(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    prompts = custom_prompts(tmp_path, {})
    _break(prompts)
    monkeypatch.setenv("IVR_DATABASE_URL", f"sqlite:///{tmp_path / 'fresh.sqlite3'}")
    monkeypatch.setenv("IVR_TWILIO_AUTH_TOKEN", TOKEN)
    monkeypatch.setenv("IVR_PROMPTS_DIR", str(prompts))
    never_serve(monkeypatch)
    assert CliRunner().invoke(main, ["db", "upgrade"]).exit_code == 0
    result = CliRunner().invoke(main, ["serve"])
    assert result.exit_code != 0
    assert "settings.toml" in result.output


def test_the_console_shows_the_alarm(database_url: str, tmp_path: Path) -> None:
    from tests.test_ops_helpers import ops_app, signed_in

    app = ops_app(database_url, tmp_path)
    _loaded(app)  # a good version is kept
    client = signed_in(app)
    assert "prompts folder is broken" not in client.get("/ops/").text
    _break(tmp_path / "prompts")
    restarted = make_app(database_url, tmp_path / "prompts", secret_key="test-secret-key")
    page = signed_in(restarted).get("/ops/").text
    assert "The prompts folder is broken" in page and "settings.toml" in page
