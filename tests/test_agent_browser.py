"""In headless Chromium: an agent signs in, opens a call the line transferred, verifies the
caller, takes a card payment whose progress the page shows live, and sees the confirmation
number; a viewer cannot start one. Screenshots go to test-artifacts/agent-*.png."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.agent_helpers import AGENT, VIEWER, agent_line, transferred_call
from tests.test_browser import ARTIFACTS, _check_page, page  # noqa: F401 - the fixture
from tests.test_ops_helpers import PASSWORD

pytestmark = pytest.mark.slow
FIELDS = ("card number", "expiration date", "security code", "billing zip code")


def _shot(page: Any, name: str) -> None:  # noqa: F811
    page.screenshot(path=str(ARTIFACTS / f"agent-{name}.png"), full_page=True)


def _sign_in(page: Any, username: str) -> None:  # noqa: F811
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(PASSWORD)
    page.keyboard.press("Enter")
    page.wait_for_load_state()


def test_agent_takes_a_card_payment_and_a_viewer_cannot(sqlite_url: str, tmp_path: Path,
                                                         page: Any) -> None:  # noqa: F811
    with agent_line(sqlite_url, tmp_path) as line:
        line.twilio.delay = 0.4  # the caller takes a moment to key each field
        # A number not on file: the line had no account to offer, so the agent types it.
        sid = transferred_call(line, from_number="+15555550999")
        base = line.base
        page.goto(f"{base}/ops/agent")
        _sign_in(page, AGENT)
        page.wait_for_url(f"{base}/ops/agent")
        _check_page(page)
        row = page.locator("tr.transferred")
        assert "Transferred (pressed 0)" in row.inner_text()
        assert "5555550999" not in page.content()
        _shot(page, "01-calls")

        row.get_by_role("link").click()
        page.wait_for_url(f"{base}/ops/agent/calls/{sid}")
        _check_page(page)
        assert "Balance" not in page.content()
        page.get_by_label("Account number").fill("4401001234")
        page.get_by_label("Service ZIP code").fill("60614")
        _shot(page, "02-verify")
        page.get_by_role("button", name="Verify").click()
        page.wait_for_load_state()
        assert "$123.45" in page.content() and "60614" not in page.content()
        _shot(page, "03-account")

        page.get_by_label("Full balance: $123.45").check()
        page.get_by_label("Card").check()
        page.get_by_role("button", name="Set up payment").click()
        page.wait_for_load_state()
        page.get_by_role("button", name="Start secure capture").click()
        page.wait_for_load_state()
        for field in FIELDS:
            page.get_by_role("button", name=f"Ask the caller for the {field}").click()
            page.wait_for_load_state()
            # Shown live, without a reload, as the caller keys it.
            page.locator("tr", has_text=field.capitalize() if field != "billing zip code"
                         else "Billing ZIP code").get_by_text("Entered and valid").wait_for(
                timeout=10000)
        page.wait_for_function("!document.getElementById('complete').disabled", timeout=10000)
        assert page.locator("#required").inner_text() == "Every field is in."
        _shot(page, "04-progress")
        page.get_by_role("button", name="Complete payment").click()
        page.locator("#confirmation").wait_for(timeout=15000)
        page.wait_for_load_state("networkidle")
        code = page.locator("#confirmation").inner_text()
        assert code.startswith("ch_")
        html = page.locator("main").inner_html()
        assert "Visa ending 1111" in html
        for secret in ("4111111111111111", "60614", "4401001234"):
            assert secret not in html
        _shot(page, "05-confirmation")

        # A viewer may read the payments, but not take one.
        page.get_by_role("button", name="Sign out").click()
        page.wait_for_load_state()
        page.goto(f"{base}/ops/agent/calls/{sid}")
        _sign_in(page, VIEWER)
        page.wait_for_url(f"{base}/ops/agent/calls/{sid}")
        assert "Your role does not allow this page or action." in page.locator("main").inner_text()
        assert "Take a payment" not in page.locator("nav").inner_text()
        _shot(page, "06-viewer-refused")
        page.goto(f"{base}/ops/payments")
        assert code in page.content() and f"agent {AGENT}" in page.content()
