"""Out-of-range dates and ids in the console's query strings, paths and forms: a page that
says what is wrong (400) or an empty one, never a server error."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from urllib.parse import urlencode

import pytest
from flask import Flask

from tests.conftest import REPO
from tests.test_ops_helpers import assert_accessible, ops_app, signed_in, token

pytestmark = pytest.mark.slow

# Dates Python parses but the calendar arithmetic and databases may not, and ids beyond any
# database integer (or below zero).
BAD_VALUES = ("9999-12-31", "0001-01-01", "99999999999999999999", "-5")
# Every query value a console page reads.
QUERY_NAMES = ("from", "to", "date", "lang", "q", "status", "outcome", "kind")


def _get_urls(app: Flask, value: str) -> list[str]:
    """Every console GET route with ``value`` in each path variable and query value."""
    urls = []
    with app.test_request_context():
        for rule in app.url_map.iter_rules():
            if not rule.endpoint.startswith("ops.") or "GET" not in (rule.methods or ()):
                continue
            if rule.endpoint == "ops.static":
                continue
            path = re.sub(r"<[^>]+>", value, rule.rule)
            urls.append(path)
            for names in (QUERY_NAMES, ("from",), ("to",)):
                urls.append(f"{path}?{urlencode({name: value for name in names})}")
            # A period that is short, but at the far end of the calendar.
            urls.append(f"{path}?{urlencode({'from': value, 'to': value})}")
    return urls


@pytest.fixture(params=["America/Chicago", "Asia/Tokyo"])
def app(request: pytest.FixtureRequest, database_url: str, tmp_path: Path) -> Flask:
    """The console on both databases, for a line behind UTC and one ahead of it (the first
    and last days of the calendar overflow on different sides)."""
    prompts = tmp_path / "prompts"
    shutil.copytree(REPO / "prompts", prompts)
    settings = prompts / "settings.toml"
    settings.write_text(settings.read_text(encoding="utf-8").replace(
        'timezone = "America/Chicago"', f'timezone = "{request.param}"'), encoding="utf-8")
    return ops_app(database_url, tmp_path)


@pytest.mark.parametrize("value", BAD_VALUES)
def test_out_of_range_values_never_give_a_server_error(app: Flask, value: str) -> None:
    client = signed_in(app)
    urls = _get_urls(app, value)
    assert len(urls) > 40
    failed = []
    for url in urls:
        response = client.get(url)
        if response.status_code not in {200, 302, 400, 404}:
            failed.append((url, response.status_code))
        elif response.status_code == 400:
            assert 'role="alert"' in response.text, url
            assert_accessible(response.text)
    csrf = token(client, "/ops/")
    for url in (f"/ops/outbox/{value}/retry", f"/ops/prompts/menu.main/revert/{value}"):
        response = client.post(url, data={"csrf_token": csrf})
        if response.status_code not in {302, 400, 404}:
            failed.append((url, response.status_code))
    assert failed == []

def test_far_dates_say_what_is_wrong(app: Flask) -> None:
    client = signed_in(app)
    for url in ("/ops/reconcile?date=9999-12-31", "/ops/payments?date=0001-01-01",
                "/ops/calls?from=9999-12-31&to=9999-12-31"):
        response = client.get(url)
        assert response.status_code == 400, url
        assert "is outside the supported dates" in response.text, url
