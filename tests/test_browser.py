"""End to end in headless Chromium: sign in, edit a prompt, hear the change in the next
simulated call, see that call in the funnel, revert the prompt. Screenshots go to
test-artifacts/.

Uses Debian's chromium through Playwright's `executable_path`; nothing downloads a browser.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import select

from ivr.models import OutboxEntry, SyncRun
from ivr.simulator import HttpTransport, ScriptedCaller, run_call
from ivr.web.app import get_database
from tests.conftest import OPEN_TIME, REPO, TOKEN, need_espeak, unavailable
from tests.servers.threaded import serving
from tests.test_ops_helpers import PASSWORD, USER, ops_app

pytestmark = pytest.mark.slow

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = REPO / "test-artifacts"
WELCOME = "Thanks for calling."
EDITED = "Welcome to City Water payments, open day and night."
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def _browser_or_skip() -> Any:
    if not Path(CHROMIUM).exists():
        unavailable(f"{CHROMIUM} not found (Debian: apt-get install chromium)")
    need_espeak()  # the prompt preview the test plays
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        unavailable("playwright is not installed (pip install -e '.[dev]')")
    return sync_playwright


@pytest.fixture
def served(sqlite_url: str, tmp_path: Path) -> Iterator[tuple[Flask, str]]:
    """The app on a real HTTP server on 127.0.0.1 (threaded, like a browser needs)."""
    app = ops_app(sqlite_url, tmp_path)
    with serving(app) as base:
        yield app, base


@pytest.fixture
def page(tmp_path: Path) -> Iterator[Any]:
    sync_playwright = _browser_or_skip()
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=CHROMIUM, headless=True, args=ARGS,
            viewport={"width": 1280, "height": 900})
        try:
            yield context.pages[0] if context.pages else context.new_page()
        finally:
            context.close()


def _shot(page: Any, name: str, full_page: bool = True) -> None:
    page.screenshot(path=str(ARTIFACTS / f"ops-{name}.png"), full_page=full_page)


def _unlabelled(page: Any) -> int:
    return int(page.evaluate("""() => [...document.querySelectorAll(
        'input:not([type=hidden]), select, textarea')]
        .filter(e => !e.labels.length && !e.getAttribute('aria-label')).length"""))


def _check_page(page: Any) -> None:
    """Labelled fields and the landmarks on every page the test visits."""
    assert _unlabelled(page) == 0, page.url
    for landmark in ("header", "nav", "main", "footer"):
        assert page.locator(landmark).count() >= 1, (landmark, page.url)


def _call(base: str, presses: str) -> str:
    """A simulated paid call over real HTTP, signed like Twilio's; what the caller heard."""
    with HttpTransport(TOKEN) as transport:
        result = run_call(transport, ScriptedCaller(presses.split(),
                                                    cards=["4111111111111111"],
                                                    bank_accounts=["123456789"]),
                          base_url=base, from_number="+15555550123")
    assert result.ended_by != "error"
    return result.said()


def test_edit_hear_see_and_revert(served: tuple[Flask, str], page: Any) -> None:
    app, base = served
    prompts = Path(app.extensions["ivr.config"].prompts_dir)

    # Sign in, by keyboard: the skip link comes first, then the form.
    page.goto(f"{base}/ops/calls")
    assert "/ops/login" in page.url
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Skip to main content"
    _shot(page, "01-login")
    page.get_by_label("Username").fill(USER)
    page.get_by_label("Password").fill("not my password")
    page.keyboard.press("Enter")
    page.wait_for_load_state()
    assert "do not match an active user" in page.locator("[role=alert]").inner_text()
    _shot(page, "02-login-error")
    page.get_by_label("Username").fill(USER)
    page.get_by_label("Password").fill(PASSWORD)
    page.keyboard.press("Enter")
    page.wait_for_url(f"{base}/ops/calls")
    _check_page(page)

    # The prompt list, then the editor of the greeting.
    page.get_by_role("navigation").get_by_role("link", name="Prompts").click()
    page.wait_for_url(f"{base}/ops/prompts")
    _check_page(page)
    _shot(page, "03-prompts", full_page=False)  # the whole list is very long
    page.get_by_role("link", name="greeting.welcome").click()
    page.wait_for_url(f"{base}/ops/prompts/greeting.welcome")
    _check_page(page)
    editor = page.locator("#t-en-US-say")
    assert editor.input_value() == WELCOME

    # Keyboard: every control is reachable and shows where the focus is.
    page.keyboard.press("Tab")
    seen = []
    # Up to the editor, past the navigation (however many pages it lists).
    for _ in range(30):
        page.keyboard.press("Tab")
        seen.append(page.evaluate("""() => { const e = document.activeElement;
            return [e.tagName, getComputedStyle(e).outlineStyle, e.id || e.textContent]; }"""))
        if seen[-1][2] == "t-en-US-say":
            break
    assert all(style != "none" for _, style, _ in seen), seen
    assert ["TEXTAREA", "solid", "t-en-US-say"] in seen

    # A mistake first: the check refuses it and says why.
    editor.fill("Welcome <emphasis>unclosed")
    page.get_by_role("button", name="Save changes").click()
    page.wait_for_load_state()
    assert "malformed SSML" in page.locator("#edit-errors").inner_text()
    _shot(page, "04-refused")
    assert WELCOME in (prompts / "en-US.toml").read_text(encoding="utf-8")

    # Preview the new wording: rendered and synthesised on the server, played in the page.
    page.locator("#t-en-US-say").fill(EDITED)
    page.get_by_role("button", name="Preview say (en-US)").click()
    page.wait_for_load_state()
    assert EDITED in page.locator(".spoken").inner_text()
    duration = page.evaluate("""() => new Promise((done, fail) => {
        const audio = document.querySelector('audio');
        if (audio.readyState >= 1) { done(audio.duration); return; }
        audio.addEventListener('loadedmetadata', () => done(audio.duration));
        audio.addEventListener('error', () => fail('audio failed to load'));
        audio.load(); })""")
    assert 1.0 < duration < 20.0
    _shot(page, "05-preview")

    # Save, then place a call: the caller hears the new greeting at once.
    page.get_by_label("Note for the history (why this change)").fill("friendlier greeting")
    page.get_by_role("button", name="Save changes").click()
    page.wait_for_url(f"{base}/ops/prompts/greeting.welcome")
    assert "Saved en-US say" in page.locator("[role=status]").inner_text()
    _shot(page, "06-saved")
    time.sleep(0.3)  # the line looks at the prompt files at most every 0.2 s
    heard = _call(base, "1 60614 1 1")
    assert EDITED in heard and WELCOME not in heard

    # The call in the funnel and its path.
    page.get_by_role("navigation").get_by_role("link", name="Calls").click()
    page.wait_for_url(f"{base}/ops/calls")
    _check_page(page)
    paying = page.locator("table.funnel tr", has_text="paying")
    assert paying.locator("td").first.inner_text().strip() == "1"
    assert page.locator("svg.chart title").first.text_content() == \
        "Conversion from call to payment"
    _shot(page, "07-funnel")
    page.locator("a[href^='/ops/calls/CA']").first.click()
    page.wait_for_load_state()
    _check_page(page)
    assert "pay_result" in page.content() and "60614" not in page.content()
    _shot(page, "08-call-path")

    # Revert the change from the prompt's history.
    page.goto(f"{base}/ops/prompts/greeting.welcome")
    page.get_by_role("button", name="Revert change 1: put back the text before it").click()
    page.wait_for_url(f"{base}/ops/prompts/greeting.welcome")
    assert "Reverted change #1" in page.locator("[role=status]").inner_text()
    assert page.locator("#t-en-US-say").input_value() == WELCOME
    _shot(page, "09-reverted")
    time.sleep(0.3)
    assert WELCOME in _call(base, "-")

    # A posting the accounting system refused: retried from the payments page.
    with get_database(app).session() as db:
        entry = db.scalars(select(OutboxEntry)).first()
        assert entry is not None
        entry.status, entry.attempts, entry.system = "dead", 15, "webhook"
        entry.last_error = "HTTP 422: account 4401001234 is closed in the ledger"
        entry.payment.posting_status = "dead"
        db.add(SyncRun(kind="pull", status="ok", started_at=OPEN_TIME, host="ivr-1",
                       finished_at=OPEN_TIME, records=4,
                       files=[{"name": "accounts-20261201.csv", "outcome": "applied",
                               "records": 4, "rejected": 0}]))
    page.get_by_role("navigation").get_by_role("link", name="Payments").click()
    page.wait_for_url(f"{base}/ops/payments")
    _check_page(page)
    assert "account ******1234 is closed" in page.content()
    _shot(page, "10-payments-dead-letter")
    page.get_by_role("button", name="Retry posting", exact=False).click()
    page.wait_for_load_state()
    assert "is queued again" in page.locator("[role=status]").inner_text()
    _shot(page, "11-payments-retried")

    # The other pages render and keep their promises too.
    for path, name in (("/ops/reconcile", "12-reconcile"), ("/ops/files", "13-files"),
                       ("/ops/", "14-overview"), ("/ops/prompt-history", "15-history")):
        page.goto(f"{base}{path}")
        _check_page(page)
        html = page.content()
        for secret in ("4401001234", "4111111111111111", "5555550123"):
            assert secret not in html, (path, secret)
        _shot(page, name)
