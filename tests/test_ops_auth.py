"""Ops console access: sign-in, sessions, rate limit, CSRF, users from the command line."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from ivr.cli import main
from ivr.models import OpsLoginAttempt, OpsUser, utcnow
from ivr.ops import auth
from ivr.web.app import get_database
from tests.conftest import OPEN_TIME, TOKEN, Twilio, new_sid, set_clock, twiml
from tests.test_ops_helpers import PASSWORD, USER, login, ops_app, signed_in, token

pytestmark = pytest.mark.slow

# A value for every URL variable of the ops routes, so each route can be requested.
_ARGS = {"prompt_id": "menu.main", "call_sid": "CA" + "0" * 32, "payment_id": 1,
         "outbox_id": 1, "run_id": 1, "import_id": 1, "version_id": 1, "key": "0" * 64}


@pytest.fixture
def app(database_url: str, tmp_path: Path) -> Flask:
    return ops_app(database_url, tmp_path)


@pytest.fixture
def lite(sqlite_url: str, tmp_path: Path) -> Flask:
    return ops_app(sqlite_url, tmp_path)


def _ops_routes(app: Flask) -> list[tuple[str, str]]:
    """(method, url) of every ops route except the public ones."""
    routes = []
    with app.test_request_context():
        for rule in app.url_map.iter_rules():
            if not rule.endpoint.startswith("ops.") or rule.endpoint in {"ops.login",
                                                                         "ops.static"}:
                continue
            url = rule.build({k: v for k, v in _ARGS.items() if k in rule.arguments})
            assert url is not None
            for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
                routes.append((method, url[1]))
    return routes


def test_every_ops_route_needs_sign_in(lite: Flask) -> None:
    client = lite.test_client()
    routes = _ops_routes(lite)
    assert len(routes) >= 15
    csrf = token(client)
    for method, url in routes:
        response = client.open(url, method=method, data={"csrf_token": csrf})
        assert response.status_code == 302, (method, url)
        assert response.headers["Location"].startswith("/ops/login?next="), (method, url)


def test_sign_in_then_out(app: Flask) -> None:
    client = app.test_client()
    first = client.get("/ops/prompts")
    assert first.status_code == 302
    page = client.get(first.headers["Location"])
    assert 'for="username"' in page.text and 'for="password"' in page.text
    response = login(client, "  Alice ")
    assert response.status_code == 302
    # Back to where the sign-in began.
    assert response.headers["Location"] == "/ops/"
    assert client.get("/ops/").status_code == 200
    with get_database(app).session() as db:
        user = db.scalar(select(OpsUser).where(OpsUser.username == USER))
        assert user is not None and user.last_login_at == OPEN_TIME
    out = client.post("/ops/logout", data={"csrf_token": token(client, "/ops/")})
    assert out.status_code == 302
    assert client.get("/ops/").status_code == 302


def test_next_is_followed_only_inside_the_console(lite: Flask) -> None:
    for target, expected in [("/ops/calls?lang=en-US", "/ops/calls?lang=en-US"),
                             ("https://evil.example/", "/ops/"), ("//evil.example", "/ops/"),
                             ("/ops//evil.example", "/ops/"), ("/voice/incoming", "/ops/")]:
        client = lite.test_client()
        response = client.post(f"/ops/login?next={target}", data={
            "csrf_token": token(client), "username": USER, "password": PASSWORD})
        assert response.headers["Location"] == expected, target


def test_wrong_password_and_unknown_user_look_the_same(app: Flask) -> None:
    client = app.test_client()
    wrong = login(client, password="not the password")
    unknown = login(client, username="mallory")
    assert wrong.status_code == unknown.status_code == 401
    message = "That username and password do not match an active user."
    assert message in wrong.text and message in unknown.text
    assert 'role="alert"' in wrong.text
    empty = login(client, password="")
    assert empty.status_code == 400 and "Enter your username and password." in empty.text


def test_sign_in_is_paused_after_repeated_failures(app: Flask) -> None:
    client = app.test_client()
    for _ in range(auth.USER_FAILURES):
        assert login(client, password="wrong password!").status_code == 401
    # Even the right password is refused now, with the same message as for a made-up user.
    refused = login(client)
    assert refused.status_code == 429
    assert "Too many failed sign-in attempts" in refused.text
    for _ in range(auth.USER_FAILURES):
        login(client, username="nobody", password="wrong password!")
    ghost = login(client, username="nobody", password="whatever it is")
    assert ghost.status_code == 429
    assert ghost.text.count("Too many failed") == refused.text.count("Too many failed")
    # The pause ends 15 minutes after the failure that caused it.
    set_clock(app, OPEN_TIME + auth.LOCKOUT - timedelta(seconds=1))
    assert login(client).status_code == 429
    set_clock(app, OPEN_TIME + auth.LOCKOUT + timedelta(seconds=1))
    assert login(client).status_code == 302
    with get_database(app).session() as db:
        outcomes = [a.outcome for a in db.scalars(select(OpsLoginAttempt)
                                                  .where(OpsLoginAttempt.username == USER)
                                                  .order_by(OpsLoginAttempt.id))]
    assert outcomes == ["failed"] * 5 + ["refused", "refused", "ok"]


def test_rate_limit_per_address(lite: Flask) -> None:
    client = lite.test_client()
    for i in range(auth.ADDRESS_FAILURES):
        assert login(client, username=f"guess{i}", password="wrong password!").status_code == 401
    assert login(client).status_code == 429
    # Another address is not limited.
    assert login(_from(lite, "192.0.2.10")).status_code == 302


def test_lock_window_is_sliding(lite: Flask) -> None:
    def fail_at(minutes: int) -> None:
        db.add(OpsLoginAttempt(at=OPEN_TIME + timedelta(minutes=minutes), username="bob",
                               address="10.0.0.1", outcome="failed"))

    def until(minutes: int) -> object:
        return auth.locked_until(db, "bob", "10.0.0.1", OPEN_TIME + timedelta(minutes=minutes))

    with get_database(lite).session() as db:
        for minutes in (0, 5, 10, 14, 20, 21):
            fail_at(minutes)
        # Failures from elsewhere do not count for this user at this address.
        db.add(OpsLoginAttempt(at=OPEN_TIME + timedelta(minutes=21), username="bob",
                               address="10.0.0.9", outcome="failed"))
        # Never five failures within 15 minutes: 0..20 and 5..21 are too spread out.
        assert until(21) is None
        fail_at(22)
        # 10, 14, 20, 21, 22: locked for 15 minutes after the fifth.
        assert until(22) == OPEN_TIME + timedelta(minutes=37)
        assert until(36) == OPEN_TIME + timedelta(minutes=37)
        assert until(38) is None


def test_session_is_new_after_sign_in_and_cookie_is_locked_down(lite: Flask) -> None:
    client = lite.test_client()
    client.get("/ops/login")
    before = client.get_cookie("ivr_ops", path="/ops")
    response = login(client)
    cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Path=/ops" in cookie
    assert "Secure" in cookie
    after = client.get_cookie("ivr_ops", path="/ops")
    assert after is not None and (before is None or before.value != after.value)
    # The CSRF token of the anonymous session does not survive sign-in.
    assert "csrf_token" not in lite.session_interface.get_signing_serializer(lite) \
        .loads(after.value)


def test_the_console_session_stays_inside_the_console(lite: Flask) -> None:
    # The cookie is scoped to /ops; even if a client sends it elsewhere, a webhook neither
    # reads nor rewrites it, and the console session is still good after.
    client = signed_in(lite)
    cookie = client.get_cookie("ivr_ops", path="/ops")
    assert cookie is not None
    url = "http://localhost/voice/incoming"
    form = {"CallSid": new_sid(), "From": "+15555550123", "To": "+18005550100"}
    from twilio.request_validator import RequestValidator

    response = lite.test_client().post(url, data=form, headers={
        "X-Twilio-Signature": RequestValidator(TOKEN).compute_signature(url, form),
        "Cookie": f"ivr_ops={cookie.value}"})
    assert response.status_code == 200 and "<Response>" in response.text
    assert "Set-Cookie" not in response.headers
    assert client.get("/ops/calls").status_code == 200


def test_cookie_without_secure_flag_for_plain_http_base_url(sqlite_url: str,
                                                            tmp_path: Path) -> None:
    app = ops_app(sqlite_url, tmp_path, public_base_url="http://127.0.0.1:8000")
    cookie = login(app.test_client()).headers["Set-Cookie"]
    assert "Secure" not in cookie
    app.testing = True
    assert app.config["SESSION_COOKIE_SECURE"] is False


def test_security_headers(lite: Flask) -> None:
    response = signed_in(lite).get("/ops/prompts")
    assert "default-src 'none'" in response.headers["Content-Security-Policy"]
    assert "script-src" not in response.headers["Content-Security-Policy"]
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["Cache-Control"] == "no-store"


def test_session_lasts_eight_hours(app: Flask) -> None:
    client = signed_in(app)
    set_clock(app, OPEN_TIME + timedelta(hours=7, minutes=59))
    assert client.get("/ops/").status_code == 200
    set_clock(app, OPEN_TIME + timedelta(hours=8, minutes=1))
    response = client.get("/ops/calls")
    assert response.status_code == 302 and "/ops/login" in response.headers["Location"]


def test_disabled_user_and_new_password_end_sessions(app: Flask) -> None:
    client = signed_in(app)
    with get_database(app).session() as db:
        auth.add_user(db, USER, "a brand new passphrase", utcnow(), reset=True)
    assert client.get("/ops/").status_code == 302
    client = app.test_client()
    assert login(client, password="a brand new passphrase").status_code == 302
    with get_database(app).session() as db:
        assert auth.disable_user(db, USER)
    assert client.get("/ops/").status_code == 302
    assert login(app.test_client(), password="a brand new passphrase").status_code == 401


def test_csrf_is_required_on_every_form(lite: Flask) -> None:
    client = lite.test_client()
    refused = client.post("/ops/login", data={"username": USER, "password": PASSWORD})
    assert refused.status_code == 400
    assert "CSRF" in refused.text and 'role="alert"' in refused.text
    client = signed_in(lite)
    for method, url in _ops_routes(lite):
        if method != "POST":
            continue
        response = client.post(url, data={"csrf_token": "forged"})
        assert response.status_code == 400, url
        assert "Form expired" in response.text
        assert client.post(url).status_code == 400, url
    # Still signed in: a refused form does not end the session.
    assert client.get("/ops/").status_code == 200


def test_twilio_webhooks_need_no_csrf_token(lite: Flask) -> None:
    root = twiml(Twilio(lite).post("/voice/incoming", CallSid=new_sid(), From="+15555550123"))
    assert root.find("Gather") is not None
    # And a webhook still needs its signature.
    assert Twilio(lite).post("/voice/incoming", sign=False, CallSid=new_sid()).status_code == 403
    assert TOKEN


def test_cli_add_and_disable_user(sqlite_url: str, tmp_path: Path,
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    app = ops_app(sqlite_url, tmp_path)
    monkeypatch.setenv("IVR_DATABASE_URL", sqlite_url)
    monkeypatch.setenv("IVR_SECRET_KEY", "test-secret-key")
    runner = CliRunner()
    # Asked twice, not echoed.
    result = runner.invoke(main, ["ops", "add-user", "Bob"],
                           input="a long enough pass\na long enough pass\n")
    assert result.exit_code == 0, result.output
    assert "created ops user 'bob'" in result.output
    assert "a long enough pass" not in result.output
    mismatch = runner.invoke(main, ["ops", "add-user", "carol"],
                             input="a long enough pass\nsomething else!!\n"
                                   "a long enough pass\na long enough pass\n")
    assert mismatch.exit_code == 0 and "do not match" in mismatch.output
    short = runner.invoke(main, ["ops", "add-user", "dave", "--password-stdin"], input="short\n")
    assert short.exit_code != 0 and "at least 12 characters" in short.output
    twice = runner.invoke(main, ["ops", "add-user", "bob", "--password-stdin"],
                          input="another long password\n")
    assert twice.exit_code != 0 and "exists already" in twice.output
    bad_name = runner.invoke(main, ["ops", "add-user", "b o b", "--password-stdin"],
                             input="another long password\n")
    assert bad_name.exit_code != 0 and "username" in bad_name.output
    assert login(app.test_client(), "bob", "a long enough pass").status_code == 302

    assert runner.invoke(main, ["ops", "disable-user", "bob"]).exit_code == 0
    assert login(app.test_client(), "bob", "a long enough pass").status_code == 401
    missing = runner.invoke(main, ["ops", "disable-user", "nobody"])
    assert missing.exit_code != 0 and "no ops user" in missing.output
    reset = runner.invoke(main, ["ops", "add-user", "bob", "--reset", "--password-stdin"],
                          input="the reset password\n")
    assert reset.exit_code == 0, reset.output
    assert login(app.test_client(), "bob", "the reset password").status_code == 302
    with get_database(app).session() as db:
        stored = db.scalar(select(OpsUser.password_hash).where(OpsUser.username == "bob"))
    assert stored and "the reset password" not in stored and re.match(r"(scrypt|pbkdf2)", stored)


def _copy(client: FlaskClient, app: Flask) -> FlaskClient:
    """Another browser holding a copy of ``client``'s session cookie."""
    cookie = client.get_cookie("ivr_ops", path="/ops")
    assert cookie is not None
    other = app.test_client()
    other.set_cookie("ivr_ops", cookie.value, path="/ops")
    return other


def test_sign_out_ends_every_session_of_the_user(app: Flask) -> None:
    client = signed_in(app)
    copied = _copy(client, app)
    elsewhere = signed_in(app)  # the same user on another machine
    assert copied.get("/ops/").status_code == 200
    assert client.post("/ops/logout", data={"csrf_token": token(client, "/ops/")}) \
        .status_code == 302
    for browser in (client, copied, elsewhere):
        response = browser.get("/ops/")
        assert response.status_code == 302 and "/ops/login" in response.headers["Location"]
    # Signing in again works, with a new session.
    assert signed_in(app).get("/ops/").status_code == 200


def test_reset_and_disable_from_the_command_line_end_copied_sessions(
        sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    app = ops_app(sqlite_url, tmp_path)
    monkeypatch.setenv("IVR_DATABASE_URL", sqlite_url)
    monkeypatch.setenv("IVR_SECRET_KEY", "test-secret-key")
    runner = CliRunner()
    # A reset to the same password still ends the sessions: the point is to end them.
    for command in (["ops", "add-user", USER, "--reset", "--password-stdin"],
                    ["ops", "disable-user", USER]):
        client = signed_in(app)
        copied = _copy(client, app)
        result = runner.invoke(main, command, input=f"{PASSWORD}\n")
        assert result.exit_code == 0, result.output
        assert client.get("/ops/").status_code == 302, command
        assert copied.get("/ops/").status_code == 302, command
    assert login(app.test_client()).status_code == 401  # disabled


def _from(app: Flask, address: str) -> FlaskClient:
    """A browser whose connection comes from ``address``."""
    client = app.test_client()
    client.environ_base["REMOTE_ADDR"] = address
    return client


def test_wrong_passwords_from_elsewhere_do_not_lock_the_user_out(app: Flask) -> None:
    attacker = _from(app, "198.51.100.7")
    for _ in range(auth.USER_FAILURES + 2):
        login(attacker, password="wrong password!")
    # The attacker's own address is paused for this user...
    assert login(attacker).status_code == 429
    # ...but the operator, from their own address, signs in with the right password.
    assert login(_from(app, "192.0.2.10")).status_code == 302
    # And the attacker's pause for this user holds after the operator's sign-in.
    assert login(attacker, password="wrong again!!!").status_code == 429


def test_forwarded_for_is_ignored_unless_a_proxy_is_configured(sqlite_url: str,
                                                               tmp_path: Path) -> None:
    app = ops_app(sqlite_url, tmp_path)
    client = app.test_client()  # from 127.0.0.1, as a proxy on this machine would be
    for i in range(auth.ADDRESS_FAILURES):
        login(client, username=f"guess{i}", password="wrong password!",
              X_Forwarded_For=f"203.0.113.{i}")
    # A new X-Forwarded-For does not make a new client: the peer address is limited.
    assert login(client, X_Forwarded_For="203.0.113.200").status_code == 429


def test_forwarded_for_from_a_configured_proxy(sqlite_url: str, tmp_path: Path) -> None:
    app = ops_app(sqlite_url, tmp_path, trusted_proxies=1)
    client = app.test_client()
    for i in range(auth.ADDRESS_FAILURES):
        login(client, username=f"guess{i}", password="wrong password!",
              X_Forwarded_For="203.0.113.9")
    assert login(client, X_Forwarded_For="203.0.113.9").status_code == 429
    # The proxy appends the real client last; anything before it is the client's own claim.
    assert login(client, X_Forwarded_For="203.0.113.9, 198.51.100.1").status_code == 302
    assert login(client, X_Forwarded_For="198.51.100.1, 203.0.113.9").status_code == 429
