"""Every console route has a role rule, and each role gets exactly what its rule says."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient

from ivr.models import utcnow
from ivr.ops import roles
from ivr.ops.auth import UserError, add_user
from ivr.statuses import UserRole
from ivr.web.app import get_database
from tests.test_ops_helpers import PASSWORD, USER, login, ops_app


def _app(sqlite_url: str, tmp_path: Path) -> Flask:
    app = ops_app(sqlite_url, tmp_path)
    with get_database(app).session() as db:
        add_user(db, "agent1", PASSWORD, utcnow(), role="agent")
        add_user(db, "viewer1", PASSWORD, utcnow(), role="viewer")
    return app


def _ops_rules(app: Flask) -> list[tuple[str, str, str]]:
    """(endpoint, method, URL with sample arguments) of every console route."""
    samples = {"call_sid": "CA" + "1" * 32, "prompt_id": "greeting.welcome", "key": "abc",
               "payment_id": "1", "outbox_id": "1", "run_id": "1", "import_id": "1",
               "version_id": "1", "filename": "ops.css"}
    found = []
    for rule in app.url_map.iter_rules():
        if not rule.endpoint.startswith("ops."):
            continue
        url = re.sub(r"<(?:[^:>]+:)?([^>]+)>", lambda m: samples[m.group(1)], rule.rule)
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            found.append((rule.endpoint, method, url))
    return found


def test_every_console_route_has_a_role_rule(sqlite_url: str, tmp_path: Path) -> None:
    app = _app(sqlite_url, tmp_path)
    endpoints = {endpoint for endpoint, _, _ in _ops_rules(app)}
    assert len(endpoints) > 25
    unclassified = endpoints - set(roles.RULES) - roles.PUBLIC
    assert unclassified == set()
    # No rule for a route that does not exist (a renamed view would leave one behind).
    assert set(roles.RULES) - endpoints == set()
    # Writing actions are never open to viewers.
    for endpoint, method, _ in _ops_rules(app):
        if method == "POST" and endpoint not in roles.PUBLIC:
            assert UserRole.VIEWER not in roles.RULES[endpoint] or endpoint == "ops.logout"


@pytest.mark.parametrize("username,role", [(USER, UserRole.ADMIN), ("agent1", UserRole.AGENT),
                                           ("viewer1", UserRole.VIEWER)])
def test_each_role_gets_what_its_rule_says(sqlite_url: str, tmp_path: Path, username: str,
                                           role: UserRole) -> None:
    app = _app(sqlite_url, tmp_path)
    refused, allowed = [], []
    for endpoint, method, url in _ops_rules(app):
        if endpoint in roles.PUBLIC or endpoint == "ops.logout":
            continue
        client = _signed_in(app, username)
        token = _token(client)
        response = (client.get(url) if method == "GET"
                    else client.post(url, data={"csrf_token": token}))
        if role in roles.RULES[endpoint]:
            assert response.status_code != 403, (endpoint, method, role)
            allowed.append(endpoint)
        else:
            assert response.status_code == 403, (endpoint, method, role)
            assert "Your role does not allow" in response.text
            refused.append(endpoint)
    if role == UserRole.ADMIN:
        assert refused == []
    if role == UserRole.VIEWER:
        assert "ops.agent_start" in refused and "ops.prompt_save" in refused
        assert "ops.payments" in allowed
    if role == UserRole.AGENT:
        assert "ops.agent_start" in allowed and "ops.payments" in refused


def _signed_in(app: Flask, username: str) -> FlaskClient:
    client = app.test_client()
    assert login(client, username).status_code == 302
    return client


def _token(client: FlaskClient) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/ops/").text)
    assert found
    return found.group(1)


def test_the_menu_shows_only_what_the_role_may_open(sqlite_url: str, tmp_path: Path) -> None:
    app = _app(sqlite_url, tmp_path)
    agent_home = _signed_in(app, "agent1").get("/ops/").text
    assert "Take a payment" in agent_home and ">Prompts<" not in agent_home
    viewer_home = _signed_in(app, "viewer1").get("/ops/").text
    assert "Take a payment" not in viewer_home and ">Payments<" in viewer_home


def test_users_from_before_roles_are_admins_and_roles_are_checked(sqlite_url: str,
                                                                   tmp_path: Path) -> None:
    app = _app(sqlite_url, tmp_path)
    with get_database(app).session() as db:
        with pytest.raises(UserError, match="role"):
            add_user(db, "eve", PASSWORD, utcnow(), role="root")
        # A reset keeps the role unless one is given.
        user = add_user(db, "agent1", PASSWORD, utcnow(), reset=True)
        assert user.role == "agent"
        assert add_user(db, "new1", PASSWORD, utcnow()).role == "admin"


def test_cli_adds_a_user_with_a_role(sqlite_url: str, tmp_path: Path,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    from ivr.cli import main

    app = _app(sqlite_url, tmp_path)
    monkeypatch.setenv("IVR_DATABASE_URL", sqlite_url)
    monkeypatch.setenv("IVR_SECRET_KEY", "test-secret-key")
    result = CliRunner().invoke(main, ["ops", "add-user", "desk1", "--role", "agent",
                                      "--password-stdin"], input=PASSWORD + "\n")
    assert result.exit_code == 0, result.output
    assert "created ops user 'desk1' (agent)" in result.output
    refused = CliRunner().invoke(main, ["ops", "add-user", "desk2", "--role", "boss",
                                       "--password-stdin"], input=PASSWORD + "\n")
    assert refused.exit_code != 0
    assert _signed_in(app, "desk1").get("/ops/payments").status_code == 403
