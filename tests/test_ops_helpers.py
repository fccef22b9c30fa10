"""Shared helpers for the ops console tests (imported by test_ops_*.py and test_browser.py)."""

from __future__ import annotations

import re
import shutil
from datetime import datetime
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

from flask import Flask
from flask.testing import FlaskClient

from ivr.models import utcnow
from ivr.ops.auth import add_user
from ivr.web.app import get_database
from tests.conftest import OPEN_TIME, REPO, make_app

USER = "alice"
PASSWORD = "correct horse battery staple"
# Everything a page must never show: full account numbers, caller numbers, card and bank
# numbers, ZIP codes typed at verification.
ACCOUNTS = ("4401001234", "4401005678", "4401009012", "4401003456")
SECRETS = (*ACCOUNTS, "5555550123", "4111111111111111", "4000000000000002", "123456789",
           "60614")


def ops_app(database_url: str, tmp_path: Path, now: datetime = OPEN_TIME,
            **overrides: Any) -> Flask:
    """The line with its own copy of the prompts and instance folder, and one ops user."""
    prompts = tmp_path / "prompts"
    if not prompts.exists():
        shutil.copytree(REPO / "prompts", prompts)
    app = make_app(database_url, prompts, now, secret_key="test-secret-key", **overrides)
    app.instance_path = str(tmp_path / "instance")
    with get_database(app).session() as db:
        add_user(db, USER, PASSWORD, utcnow())
    return app


def token(client: FlaskClient, url: str = "/ops/login") -> str:
    """The CSRF token of the first form on ``url``."""
    page = client.get(url)
    found = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert found, f"no CSRF token on {url}: {page.status_code}"
    return found.group(1)


def login(client: FlaskClient, username: str = USER, password: str = PASSWORD,
          **headers: str) -> Any:
    """Submit the sign-in form as a browser would."""
    return client.post("/ops/login", data={"csrf_token": token(client), "username": username,
                                           "password": password}, headers=headers)


def signed_in(app: Flask) -> FlaskClient:
    """A client with a signed-in session."""
    client = app.test_client()
    response = login(client)
    assert response.status_code == 302, response.text
    return client


def _random_ids(match: re.Match[str]) -> str:
    token = match.group(0)
    return " " if re.search(r"[A-Za-z]", token) else token


def assert_no_secrets(html: str) -> None:
    """No full account, phone, card or bank number anywhere in a page."""
    # Random identifiers (CSRF tokens, CallSids, versions) could contain any digits by chance.
    html = re.sub(r'value="[^"]*\.[^"]*"', " ", html)
    html = re.sub(r"[0-9A-Za-z]{12,}", _random_ids, html)
    digits_only = re.sub(r"\D", " ", html)
    for secret in SECRETS:
        assert secret not in html, secret
        assert f" {secret} " not in f" {digits_only} ", secret


class _FormAudit(HTMLParser):
    """Collects form fields and labels, landmarks and the skip link of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.fields: list[dict[str, str | None]] = []
        self.label_for: set[str] = set()
        self.tags: set[str] = set()
        self.skip_link = False
        self.positive_tabindex = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        self.tags.add(tag)
        if tag == "label" and values.get("for"):
            self.label_for.add(str(values["for"]))
        if tag in {"input", "select", "textarea"} and values.get("type") not in {"hidden",
                                                                                   "submit"}:
            self.fields.append(values)
        # A positive tabindex would break the page's natural (logical) tab order.
        self.positive_tabindex |= int(values.get("tabindex") or 0) > 0
        if tag == "a" and values.get("href") == "#main" and "skip-link" in (values.get("class")
                                                                            or ""):
            self.skip_link = True


def assert_accessible(html: str) -> None:
    """Every field labelled; header, nav (when signed in) and main landmarks; a skip link."""
    audit = _FormAudit()
    audit.feed(html)
    for field in audit.fields:
        labelled = field.get("id") in audit.label_for or field.get("aria-label")
        assert labelled, f"unlabelled field {field}"
    assert {"header", "main", "footer"} <= audit.tags
    assert audit.skip_link
    assert not audit.positive_tabindex
    assert 'id="main"' in html
    assert '<html lang="en">' in html
