"""Every key Twilio may sign a webhook with: the auth token, the secondary token of a
rotation, and webhook shared keys (HMAC-SHA256 or SHA1, named by
X-Twilio-Webhooks-Signature-Settings), and nothing else."""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from flask import Flask

from ivr.config import ConfigError, load_config
from ivr.security import SigningKeys, signature_problem
from tests.conftest import TOKEN, make_app, new_sid, twiml

SECONDARY = "fedcba9876543210fedcba9876543210"
OTHER_TOKEN = "00000000000000000000000000000000"
KEY_SID, KEY_SECRET = "KS0123456789abcdef0123456789abcdef", "s3cret-shared-key-value"
NEXT_SID, NEXT_SECRET = "KSfedcba9876543210fedcba9876543210", "the-next-shared-key"
SETTINGS = "X-Twilio-Webhooks-Signature-Settings"


def twilio_signature(secret: str, url: str, form: dict[str, str], digest: Any) -> str:
    """Twilio's webhook signature, computed here from its documented recipe: the URL, then
    each parameter's name and value in name order, HMAC'd with the secret, base64."""
    text = url + "".join(name + form[name] for name in sorted(form))
    return base64.b64encode(hmac.new(secret.encode(), text.encode(), digest).digest()).decode()


def post(app: Flask, path: str, secret: str, digest: Any = hashlib.sha1,
         settings: str | None = None, tamper: bool = False) -> Any:
    form = {"CallSid": new_sid(), "From": "+15555550123", "To": "+15555550100"}
    headers = {"X-Twilio-Signature": twilio_signature(secret, "http://localhost" + path, form,
                                                      digest)}
    if settings is not None:
        headers[SETTINGS] = settings
    if tamper:
        form["From"] = "+15555550124"
    return app.test_client().post(path, data=form, headers=headers)


@pytest.fixture
def rejections() -> Iterator[list[logging.LogRecord]]:
    seen: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = seen.append  # type: ignore[method-assign]
    logger = logging.getLogger("ivr")
    logger.addHandler(handler)
    yield seen
    logger.removeHandler(handler)


def why(records: list[logging.LogRecord]) -> list[str]:
    return [r.fields["why"] for r in records  # type: ignore[attr-defined]
            if r.getMessage() == "rejected unsigned or badly signed webhook"]


@pytest.fixture
def keyed_app(sqlite_url: str, prompts_dir: Path) -> Flask:
    return make_app(sqlite_url, prompts_dir, twilio_secondary_auth_token=SECONDARY,
                    twilio_webhook_keys=f"{KEY_SID}:{KEY_SECRET}, {NEXT_SID}:{NEXT_SECRET}")


def test_a_webhook_signed_with_a_shared_key_is_answered(keyed_app: Flask) -> None:
    for algorithm, digest in (("HMAC_SHA256", hashlib.sha256), ("HMAC_SHA1", hashlib.sha1)):
        for sid, secret in ((KEY_SID, KEY_SECRET), (NEXT_SID, NEXT_SECRET)):
            response = post(keyed_app, "/voice/incoming", secret, digest,
                            settings=f"key={sid},algorithm={algorithm}")
            assert twiml(response).find("Gather") is not None, (algorithm, sid)


def test_a_tampered_or_misattributed_shared_key_webhook_is_refused(
        keyed_app: Flask, rejections: list[logging.LogRecord]) -> None:
    sha256 = f"key={KEY_SID},algorithm=HMAC_SHA256"
    assert post(keyed_app, "/voice/incoming", KEY_SECRET, hashlib.sha256, sha256,
                tamper=True).status_code == 403
    # Signed with the other key than the header names, or with the wrong algorithm.
    assert post(keyed_app, "/voice/incoming", NEXT_SECRET, hashlib.sha256,
                sha256).status_code == 403
    assert post(keyed_app, "/voice/incoming", KEY_SECRET, hashlib.sha1,
                sha256).status_code == 403
    # The auth token cannot stand in for a key, nor a key for the auth token.
    assert post(keyed_app, "/voice/incoming", TOKEN, hashlib.sha256,
                sha256).status_code == 403
    assert post(keyed_app, "/voice/incoming", KEY_SECRET).status_code == 403
    assert why(rejections) == ["signature does not match"] * 5


def test_an_unknown_key_or_algorithm_is_refused_and_named(
        keyed_app: Flask, rejections: list[logging.LogRecord]) -> None:
    unknown = "KSaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
    assert post(keyed_app, "/voice/incoming", "whatever", hashlib.sha256,
                f"key={unknown},algorithm=HMAC_SHA256").status_code == 403
    assert post(keyed_app, "/voice/incoming", KEY_SECRET, hashlib.sha256,
                f"key={KEY_SID},algorithm=HMAC_MD5").status_code == 403
    # Two keys are held: a header without key= names none of them.
    assert post(keyed_app, "/voice/incoming", KEY_SECRET, hashlib.sha256,
                "algorithm=HMAC_SHA256").status_code == 403
    assert why(rejections) == [
        f"signed with webhook shared key '{unknown}', which IVR_TWILIO_WEBHOOK_KEYS does not "
        "hold",
        "unsupported signature algorithm 'HMAC_MD5'",
        "signed with webhook shared key '', which IVR_TWILIO_WEBHOOK_KEYS does not hold"]
    assert not any(KEY_SECRET in str(r.__dict__) for r in rejections)


def test_a_line_without_shared_keys_refuses_a_keyed_webhook_and_says_why(
        sqlite_url: str, prompts_dir: Path, rejections: list[logging.LogRecord]) -> None:
    app = make_app(sqlite_url, prompts_dir)
    assert post(app, "/voice/incoming", KEY_SECRET, hashlib.sha256,
                f"key={KEY_SID},algorithm=HMAC_SHA256").status_code == 403
    assert post(app, "/voice/incoming", TOKEN).status_code == 200
    assert why(rejections) == [f"signed with webhook shared key '{KEY_SID}', which "
                               "IVR_TWILIO_WEBHOOK_KEYS does not hold"]


def test_one_held_key_checks_a_header_that_names_none(sqlite_url: str,
                                                      prompts_dir: Path) -> None:
    app = make_app(sqlite_url, prompts_dir, twilio_webhook_keys=f"{KEY_SID}:{KEY_SECRET}")
    assert post(app, "/voice/incoming", KEY_SECRET, hashlib.sha256,
                "algorithm=HMAC_SHA256").status_code == 200


def test_rotating_the_auth_token_refuses_no_webhook(keyed_app: Flask) -> None:
    # Before Twilio promotes the secondary token, and after: both are answered; any other
    # token is not.
    assert post(keyed_app, "/voice/incoming", TOKEN).status_code == 200
    assert post(keyed_app, "/voice/incoming", SECONDARY).status_code == 200
    assert post(keyed_app, "/voice/incoming", OTHER_TOKEN).status_code == 403
    assert post(keyed_app, "/voice/incoming", SECONDARY, tamper=True).status_code == 403


def test_a_port_in_the_signed_url_is_accepted_either_way(sqlite_url: str,
                                                         prompts_dir: Path) -> None:
    # Twilio signs https URLs with or without ":443"; the line accepts both, as twilio's
    # own validator does.
    app = make_app(sqlite_url, prompts_dir, public_base_url="https://pay.example.com")
    form = {"CallSid": new_sid(), "From": "+15555550123"}
    for signed in ("https://pay.example.com/voice/incoming",
                   "https://pay.example.com:443/voice/incoming"):
        sig = twilio_signature(TOKEN, signed, form, hashlib.sha1)
        response = app.test_client().post("/voice/incoming", data=form,
                                          headers={"X-Twilio-Signature": sig})
        assert response.status_code == 200, signed
    wrong = twilio_signature(TOKEN, "https://pay.example.com:8443/voice/incoming", form,
                             hashlib.sha1)
    assert app.test_client().post("/voice/incoming", data=form, headers={
        "X-Twilio-Signature": wrong}).status_code == 403


def test_a_url_with_a_malformed_port_is_refused_not_an_error() -> None:
    # The URL comes from the request's Host header when IVR_PUBLIC_BASE_URL is unset.
    keys = SigningKeys(auth_tokens=(TOKEN,))
    url = "http://localhost:notaport/voice/incoming"
    form = {"CallSid": "CA1"}
    assert signature_problem(keys, url, form, "AAAA") == "signature does not match"
    good = twilio_signature(TOKEN, url, form, hashlib.sha1)
    assert signature_problem(keys, url, form, good) == ""


@pytest.mark.parametrize(("value", "problem"), [
    ("KS1", "key 1 is not SID:secret"),
    (f"{KEY_SID}:{KEY_SECRET},:x", "key 2 is not SID:secret"),
    (f"{KEY_SID}:{KEY_SECRET},{KEY_SID}:other", f"key {KEY_SID} is given twice"),
    (f"{KEY_SID}:two words", "key 1 is not SID:secret"),
])
def test_malformed_webhook_keys_stop_the_start_without_showing_a_secret(
        value: str, problem: str) -> None:
    with pytest.raises(ConfigError) as raised:
        load_config(environ={"IVR_TWILIO_WEBHOOK_KEYS": value})
    assert problem in str(raised.value)
    assert KEY_SECRET not in str(raised.value) and "words" not in str(raised.value)


def test_a_malformed_secondary_token_stops_the_start() -> None:
    with pytest.raises(ConfigError, match="IVR_TWILIO_SECONDARY_AUTH_TOKEN must be"):
        load_config(environ={"IVR_TWILIO_SECONDARY_AUTH_TOKEN": "not-a-token"})


@pytest.mark.parametrize("variable", ["IVR_TWILIO_SECONDARY_AUTH_TOKEN",
                                      "IVR_TWILIO_WEBHOOK_KEYS"])
def test_unsigned_mode_is_refused_beside_any_signing_key(variable: str) -> None:
    value = SECONDARY if "TOKEN" in variable else f"{KEY_SID}:{KEY_SECRET}"
    with pytest.raises(ConfigError, match=f"cannot be used with {variable} set"):
        load_config(environ={"IVR_ALLOW_UNSIGNED": "1", variable: value})


def test_serve_starts_on_shared_keys_alone_and_refuses_no_key_at_all(
        sqlite_url: str, prompts_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from ivr.cli import main

    started: list[int] = []
    monkeypatch.setattr("ivr.web.server.run_gunicorn",
                        lambda *args, **kwargs: started.append(1))
    env = {"IVR_DATABASE_URL": sqlite_url, "IVR_PROMPTS_DIR": str(prompts_dir),
           "IVR_PIN_KEY": "k" * 64, "IVR_SECRET_KEY": "s" * 64}
    assert CliRunner().invoke(main, ["db", "upgrade"], env=env).exit_code == 0
    refused = CliRunner().invoke(main, ["serve"], env=env)
    assert refused.exit_code != 0 and "IVR_TWILIO_WEBHOOK_KEYS" in refused.output
    keyed = CliRunner().invoke(
        main, ["serve"], env={**env, "IVR_TWILIO_WEBHOOK_KEYS": f"{KEY_SID}:{KEY_SECRET}"})
    assert keyed.exit_code == 0, keyed.output
    assert started == [1]
