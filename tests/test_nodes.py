"""Several machines on one database: the keys they must share, and what they agree on."""

from __future__ import annotations

import pytest
from click.testing import CliRunner
from flask import Flask

from ivr.cli import main
from ivr.web.app import create_app
from tests.conftest import _APPS, REPO, TOKEN, never_serve

KEYS = ("IVR_PIN_KEY", "IVR_SECRET_KEY")


def _line_env(monkeypatch: pytest.MonkeyPatch, database_url: str, **keys: str) -> None:
    monkeypatch.setenv("IVR_DATABASE_URL", database_url)
    monkeypatch.setenv("IVR_TWILIO_AUTH_TOKEN", TOKEN)
    monkeypatch.setenv("IVR_PROMPTS_DIR", str(REPO / "prompts"))
    monkeypatch.delenv("IVR_ACCOUNTING", raising=False)
    for var in KEYS:
        monkeypatch.delenv(var, raising=False)
    for var, value in keys.items():
        monkeypatch.setenv(var, value)
    never_serve(monkeypatch)
    # The commands' apps join the ones closed after each test.
    monkeypatch.setattr("ivr.cli.base.create_app", _kept_app)


def _kept_app(overrides: dict[str, object] | None = None) -> Flask:
    app = create_app(overrides)
    _APPS.append(app)
    return app


@pytest.mark.parametrize("command", [["serve"], ["worker", "--once"]])
@pytest.mark.parametrize("given", [(), ("IVR_PIN_KEY",), ("IVR_SECRET_KEY",)])
def test_a_server_database_needs_the_shared_keys(postgres_url: str, command: list[str],
                                                 given: tuple[str, ...],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    _line_env(monkeypatch, postgres_url, **{var: "shared-" + var for var in given})
    result = CliRunner().invoke(main, command)
    assert result.exit_code != 0
    missing = [var for var in KEYS if var not in given]
    assert f"{' and '.join(missing)} must be set on a server database" in result.output
    assert "ivr serve started the line" not in str(result.exception)


def test_with_both_keys_a_server_database_serves(postgres_url: str,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    _line_env(monkeypatch, postgres_url, IVR_PIN_KEY="pin", IVR_SECRET_KEY="secret")
    result = CliRunner().invoke(main, ["serve"])
    assert "ivr serve started the line" in str(result.exception)


def test_one_machine_on_sqlite_makes_its_own_keys(sqlite_url: str,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    _line_env(monkeypatch, sqlite_url)
    result = CliRunner().invoke(main, ["serve"])
    assert "ivr serve started the line" in str(result.exception)
