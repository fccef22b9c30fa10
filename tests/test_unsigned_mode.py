"""Unsigned mode cannot serve a real line, and says so wherever it is on; the auth token must be
one Twilio could have issued."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from ivr.cli import main
from ivr.config import ConfigError
from ivr.web.app import create_app
from tests.conftest import PG_URL, REPO, TOKEN, make_app, never_serve, new_sid


@pytest.mark.parametrize("real_line", [
    {"twilio_auth_token": TOKEN},
    {"public_base_url": "https://pay.example.com"},
    {"database_url": PG_URL},
])
def test_unsigned_mode_is_refused_next_to_a_real_line(real_line: dict[str, str],
                                                      sqlite_url: str) -> None:
    settings = {"database_url": sqlite_url, "prompts_dir": str(REPO / "prompts"),
                "allow_unsigned": True, **real_line}
    with pytest.raises(ConfigError, match="IVR_ALLOW_UNSIGNED"):
        create_app(settings)


def test_serve_refuses_unsigned_mode_with_a_token(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IVR_DATABASE_URL", f"sqlite:///{tmp_path / 'x.sqlite3'}")
    monkeypatch.setenv("IVR_ALLOW_UNSIGNED", "1")
    monkeypatch.setenv("IVR_TWILIO_AUTH_TOKEN", TOKEN)
    monkeypatch.setenv("IVR_PUBLIC_BASE_URL", "https://pay.example.com")
    never_serve(monkeypatch)
    result = CliRunner().invoke(main, ["serve"])
    assert result.exit_code != 0
    assert "IVR_ALLOW_UNSIGNED" in result.output


def test_serve_refuses_unsigned_mode_on_a_public_address(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IVR_DATABASE_URL", f"sqlite:///{tmp_path / 'x.sqlite3'}")
    monkeypatch.setenv("IVR_ALLOW_UNSIGNED", "1")
    monkeypatch.delenv("IVR_TWILIO_AUTH_TOKEN", raising=False)
    monkeypatch.delenv("IVR_PUBLIC_BASE_URL", raising=False)
    never_serve(monkeypatch)
    result = CliRunner().invoke(main, ["serve", "--host", "0.0.0.0"])  # noqa: S104
    assert result.exit_code != 0
    assert "127.0.0.1" in result.output


@pytest.mark.slow
def test_unsigned_mode_is_announced_by_health_and_metrics(sqlite_url: str) -> None:
    app = make_app(sqlite_url, REPO / "prompts", allow_unsigned=True, twilio_auth_token="")
    client = app.test_client()
    health = client.get("/healthz").get_json()
    assert health["unsigned_webhooks"] is True and "IVR_ALLOW_UNSIGNED" in health["warning"]
    assert "ivr_unsigned_webhooks_accepted 1.0" in client.get("/metrics").get_data(as_text=True)
    # Still works as a demo: an unsigned webhook is answered.
    assert client.post("/voice/incoming", data={"CallSid": new_sid()}).status_code == 200


def test_a_signed_line_says_it_checks_signatures(sqlite_url: str) -> None:
    app = make_app(sqlite_url, REPO / "prompts")
    client = app.test_client()
    assert "unsigned_webhooks" not in client.get("/healthz").get_json()
    assert "ivr_unsigned_webhooks_accepted 0.0" in client.get("/metrics").get_data(as_text=True)
    assert client.post("/voice/incoming", data={"CallSid": new_sid()}).status_code == 403


@pytest.mark.parametrize("token", ["x", " ", "a" * 31, "g" * 32, TOKEN + " ", " " + TOKEN[1:]])
def test_an_auth_token_twilio_could_not_have_issued_is_refused(token: str,
                                                                sqlite_url: str) -> None:
    with pytest.raises(ConfigError, match="32 hexadecimal") as refused:
        create_app({"database_url": sqlite_url, "twilio_auth_token": token})
    if len(token.strip()) >= 8:  # a secret is never echoed back, even a wrong one
        assert token.strip() not in str(refused.value)
