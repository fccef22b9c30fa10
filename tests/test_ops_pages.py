"""Every page of the console, with data on it: it renders, every field is labelled, the
landmarks and skip link are there, and no full account, phone, card or bank number shows."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from flask import Flask
from sqlalchemy import select

from ivr.models import (
    Account,
    CallSession,
    ImportRun,
    IngestedFile,
    OutboxEntry,
    Payment,
    PostingAttempt,
    SyncRun,
)
from ivr.ops.audio import synthesize
from ivr.web.app import get_database
from tests.conftest import OPEN_TIME, call, need_espeak
from tests.test_ops_helpers import (
    assert_accessible,
    assert_no_secrets,
    ops_app,
    signed_in,
    token,
)

pytestmark = pytest.mark.slow
LIVE_CALL = "CA" + "5" * 32
# Pages about a call in progress (an ended call's is "Not found").
LIVE_ONLY = frozenset({"ops.agent_call", "ops.agent_progress"})


@pytest.fixture
def busy(database_url: str, tmp_path: Path) -> Flask:
    """Calls of every kind, a dead letter with a telling error, file runs, a prompt change."""
    app = ops_app(database_url, tmp_path)
    call(app, "1 60614 1 1")
    call(app, "1 4401005678# 60615 1 2 2 1 1", from_number="+15555550199")
    call(app, "1 99999 hangup")
    call(app, "1 60617 - - hangup", from_number="+15555550125")
    call(app, "1 60614 5 5000# 1 1", cards=["4000000000000002"])
    with get_database(app).session() as db:
        entry = db.scalars(select(OutboxEntry).order_by(OutboxEntry.id)).first()
        assert entry is not None
        entry.status, entry.last_error = "dead", "card 4111111111111111 for 4401001234 refused"
        entry.payment.posting_status = "dead"
        db.add(PostingAttempt(outbox_id=entry.id, at=OPEN_TIME, poster="realtime",
                              system="tryton", outcome="dead", error=entry.last_error))
        run = ImportRun(source="accounts.csv", started_at=OPEN_TIME, status="rejected",
                        records=2, rejected=1, report={"lines": [
                            "line 2: account_number: '4401009012' duplicates line 1",
                            "line 3: phones: '5555550123' is not E.164"]})
        db.add(run)
        db.flush()
        pull = SyncRun(kind="pull", status="failed", started_at=OPEN_TIME, host="h",
                       files=[{"name": "accounts.csv", "outcome": "rejected"}],
                       detail="SyncError: 4401003456 unknown")
        db.add(pull)
        db.flush()
        db.add(IngestedFile(name="accounts.csv", size=1, mtime=1, sha256="0" * 64,
                            status="rejected", run_id=pull.id, import_run_id=run.id,
                            seen_at=OPEN_TIME + timedelta(seconds=1)))
        # A call going on now, handed to a representative: the agent's pages show it.
        account = db.scalars(select(Account).where(Account.account_number == "4401001234")).one()
        db.add(CallSession(call_sid=LIVE_CALL, from_number="+15555550123",
                           to_number="+15555550100", state="main_menu", outcome="transferred",
                           account_id=account.id, verified=True, started_at=OPEN_TIME))
    client = signed_in(app)
    saved = client.post("/ops/prompts/greeting.welcome", data={
        "csrf_token": token(client, "/ops/prompts/greeting.welcome"),
        "text:en-US:say": "Hello, caller.", "had:en-US:say": "1",
        "orig:en-US:say": "Thanks for calling."})
    assert saved.status_code == 302
    return app


def _urls(app: Flask) -> list[str]:
    with get_database(app).session() as db:
        ids = {
            "call_sid": list(db.scalars(select(CallSession.call_sid))),
            "payment_id": list(db.scalars(select(Payment.id))),
            "run_id": list(db.scalars(select(SyncRun.id))),
            "import_id": list(db.scalars(select(ImportRun.id))),
        }
    fixed = {"prompt_id": ["greeting.welcome", "ach.authorize", "summary.disconnect_pending",
                           "units.kwh"]}
    urls = []
    with app.test_request_context():
        for rule in app.url_map.iter_rules():
            if not rule.endpoint.startswith("ops.") or "GET" not in (rule.methods or ()):
                continue
            if rule.endpoint in {"ops.static", "ops.preview_audio"}:
                continue
            if not rule.arguments:
                urls.append(rule.build({})[1])
                continue
            (name,) = rule.arguments
            values = [LIVE_CALL] if rule.endpoint in LIVE_ONLY else (ids | fixed)[name]
            for value in values:
                urls.append(rule.build({name: value})[1])
    return urls


def test_every_page(busy: Flask) -> None:
    client = signed_in(busy)
    urls = _urls(busy)
    assert len(urls) > 20
    for url in urls:
        response = client.get(url)
        assert response.status_code == 200, url
        assert_no_secrets(response.text)
        if response.mimetype == "text/html":  # not the agent page's progress (JSON)
            assert_accessible(response.text)
    # Filters too.
    for url in ("/ops/calls?lang=es-US&outcome=hung_up", "/ops/payments?status=dead",
                "/ops/prompts?lang=es-US&q=cuenta", "/ops/reconcile?date=2026-12-01"):
        response = client.get(url)
        assert response.status_code == 200, url
        assert_no_secrets(response.text)
        assert_accessible(response.text)


def test_login_and_error_pages(busy: Flask) -> None:
    client = busy.test_client()
    page = client.get("/ops/login")
    assert_accessible(page.text)
    refused = client.post("/ops/login", data={"username": "x", "password": "y"})
    assert refused.status_code == 400
    assert_accessible(refused.text)


def test_audio_previews_are_only_served_signed_in(busy: Flask, tmp_path: Path) -> None:
    need_espeak()
    key = synthesize("Hello.", "en-US", Path(busy.instance_path) / "prompt-audio")
    assert busy.test_client().get(f"/ops/audio/{key}.wav").status_code == 302
    with signed_in(busy).get(f"/ops/audio/{key}.wav") as response:
        assert response.status_code == 200
        assert response.headers["Cache-Control"] == "no-store"
