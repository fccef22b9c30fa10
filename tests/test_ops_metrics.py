"""/metrics: Prometheus text with call, state, payment and connector metrics, no personal data,
and correct sums under several gunicorn workers."""

from __future__ import annotations

import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests
from flask import Flask
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import select
from twilio.request_validator import RequestValidator

from connectors.accounting.base import PaymentPost, PostResult, RetryableError
from ivr.db import Database
from ivr.metrics import DatabaseCollector
from ivr.models import OutboxEntry, utcnow
from ivr.money.posting import attempt
from ivr.web.app import get_config, get_database
from tests.conftest import OPEN_TIME, REPO, TOKEN, call, make_app, new_sid
from tests.servers.line import serve_line
from tests.test_ops_helpers import SECRETS


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def _value(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str,
           **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def _scrape(app: Flask) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = app.test_client().get("/metrics")
    assert response.status_code == 200
    assert response.content_type.startswith("text/plain; version=")
    return _samples(response.text)


def test_metrics_count_calls_states_and_payments(database_url: str) -> None:
    app = make_app(database_url, REPO / "prompts")
    before = _scrape(app)
    call(app, "1 60614 1 1")
    call(app, "1 99999 hangup")
    after = _scrape(app)

    def delta(name: str, **labels: str) -> float:
        return _value(after, name, **labels) - _value(before, name, **labels)

    assert delta("ivr_webhook_requests_total", route="incoming", outcome="ok") == 2
    assert delta("ivr_webhook_requests_total", route="status", outcome="ok") == 2
    assert delta("ivr_webhook_requests_total", route="pay_result", outcome="ok") == 1
    assert delta("ivr_webhook_duration_seconds_count", route="step") >= 6
    assert delta("ivr_call_events_total", state="verify", event="enter") == 2
    assert delta("ivr_call_events_total", state="verify", event="nomatch") == 1
    assert delta("ivr_call_events_total", state="paying", event="pay_start") == 1
    assert delta("ivr_payment_results_total", result="success") == 1
    # Gauges come from the database, the same whichever worker answers.
    assert _value(after, "ivr_metrics_database_up") == 1
    assert _value(after, "ivr_calls_today", outcome="paid") == 1
    assert _value(after, "ivr_calls_today", outcome="hung_up") == 1
    assert _value(after, "ivr_outbox_entries", status="pending") == 1
    assert _value(after, "ivr_outbox_entries", status="dead") == 0
    assert _value(after, "ivr_outbox_oldest_pending_age_seconds") == 0  # the clock is fixed
    assert _value(after, "ivr_payments_today", method="card") == 1
    assert _value(after, "ivr_payments_today_cents", method="card") == 12345


def test_metrics_carry_no_personal_data(sqlite_url: str) -> None:
    app = make_app(sqlite_url, REPO / "prompts")
    result = call(app, "1 60614 1 1")
    text = app.test_client().get("/metrics").text
    for secret in SECRETS:
        assert secret not in text
    assert result.call_sid not in text
    assert not re.search(r"CA[0-9a-f]{32}", text)
    labels = set(re.findall(r'(\w+)="', text))
    assert labels <= {"route", "outcome", "state", "event", "result", "system", "operation",
                      "status", "method", "kind", "le"}


class _Connector:
    """A stand-in accounting system: acknowledges, or fails as told."""

    name = "webhook"

    def __init__(self, fail: bool = False) -> None:
        self.fail = fail

    def post_payment(self, payment: PaymentPost, timeout: float | None = None) -> PostResult:
        if self.fail:
            raise RetryableError(self.name, "down for maintenance")
        return PostResult(receipt_id=f"R-{payment.idempotency_key[:8]}")


def test_posting_attempts_and_connector_latency(sqlite_url: str) -> None:
    app = make_app(sqlite_url, REPO / "prompts")
    call(app, "1 60614 1 1")
    database = get_database(app)
    with database.session() as db:
        entry_id = db.scalars(select(OutboxEntry.id)).one()
    before = _scrape(app)
    config = get_config(app)
    assert attempt(database, _Connector(fail=True), entry_id, poster="t", config=config,
                   clock=lambda: OPEN_TIME) == "retry"
    with database.session() as db:
        entry = db.get(OutboxEntry, entry_id)
        assert entry is not None
        entry.next_attempt_at = OPEN_TIME
    assert attempt(database, _Connector(), entry_id, poster="t", config=config,
                   clock=lambda: OPEN_TIME) == "posted"
    after = _scrape(app)
    for outcome in ("retry", "posted"):
        assert (_value(after, "ivr_posting_attempts_total", system="webhook", outcome=outcome)
                - _value(before, "ivr_posting_attempts_total", system="webhook",
                         outcome=outcome)) == 1
    assert (_value(after, "ivr_connector_request_duration_seconds_count", system="webhook",
                   operation="post")
            - _value(before, "ivr_connector_request_duration_seconds_count", system="webhook",
                     operation="post")) == 2
    assert _value(after, "ivr_outbox_entries", status="posted") == 1


def test_database_down_is_reported_not_fatal() -> None:
    database = Database("postgresql+psycopg://nobody@127.0.0.1:9/none?connect_timeout=2")
    try:
        from zoneinfo import ZoneInfo

        metrics = list(DatabaseCollector(database, ZoneInfo("UTC"), utcnow()).collect())
    finally:
        database.dispose()
    assert [m.name for m in metrics] == ["ivr_metrics_database_up"]
    assert metrics[0].samples[0].value == 0


# --- several gunicorn workers -----------------------------------------------------------------

@pytest.fixture
def multiworker(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """`ivr serve --workers 2` with PROMETHEUS_MULTIPROC_DIR set, as the guide says."""
    url = f"sqlite:///{tmp_path / 'served.sqlite3'}"
    app = make_app(url, REPO / "prompts")
    get_database(app).dispose()
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    (metrics_dir / "counter_1.db").write_bytes(b"stale")  # left by an earlier run
    env = {"IVR_DATABASE_URL": url, "IVR_TWILIO_AUTH_TOKEN": TOKEN,
           "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir), "IVR_SECRET_KEY": "test-secret-key"}
    with serve_line(env) as base:
        yield base, metrics_dir


def _incoming(base: str) -> int:
    url = f"{base}/voice/incoming"
    form = {"CallSid": new_sid(), "From": "+15555550123", "To": "+15555550100"}
    signature = RequestValidator(TOKEN).compute_signature(url, form)
    response = requests.post(url, data=form, headers={"X-Twilio-Signature": signature},
                             timeout=10)
    return response.status_code


@pytest.mark.slow
def test_counters_add_up_across_gunicorn_workers(multiworker: tuple[str, Path]) -> None:
    base, metrics_dir = multiworker
    assert not (metrics_dir / "counter_1.db").exists()  # cleared at start
    # Which worker accepts a connection is the kernel's choice, and a threaded worker keeps
    # accepting while busy, so no held request can force the other one to answer. Instead:
    # send concurrent batches until both workers have answered some (each writes its own
    # counter file), then check the sums against exactly what was sent.
    sent = 0
    pids: set[str] = set()
    with ThreadPoolExecutor(max_workers=8) as pool:
        for _ in range(60):
            statuses = list(pool.map(lambda _: _incoming(base), range(8)))
            assert statuses == [200] * 8
            sent += 8
            pids = {re.sub(r"\D", "", p.name) for p in metrics_dir.glob("counter_*.db")}
            if len(pids) >= 2:
                break
    assert len(pids) >= 2, f"one worker answered all {sent} webhooks"
    # Whichever worker answers the scrape, the sum is the same.
    for _ in range(6):
        samples = _samples(requests.get(f"{base}/metrics", timeout=10).text)
        assert _value(samples, "ivr_webhook_requests_total", route="incoming",
                      outcome="ok") == sent
        assert _value(samples, "ivr_call_events_total", state="confirm_account",
                      event="enter") == sent
        assert _value(samples, "ivr_calls_today", outcome="in_progress") == sent or \
            _value(samples, "ivr_calls_today", outcome="in_progress") == 0  # real clock: day
        assert _value(samples, "ivr_metrics_database_up") == 1


def test_metrics_needs_no_sign_in(sqlite_url: str) -> None:
    app = make_app(sqlite_url, REPO / "prompts")
    response: Any = app.test_client().get("/metrics")
    assert response.status_code == 200 and b"ivr_metrics_database_up 1.0" in response.data
