"""/metrics: Prometheus text with call, state, payment and connector metrics, no personal data,
and correct sums under several gunicorn workers."""

from __future__ import annotations

import re
import socket
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import pytest
import requests
from flask import Flask
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import select
from twilio.request_validator import RequestValidator

from connectors.accounting import PaymentPost, PostResult, RetryableError
from ivr import get_config, get_database
from ivr.db import Database
from ivr.metrics import DatabaseCollector
from ivr.models import OutboxEntry, utcnow
from ivr.posting import attempt
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
    call(app, "1 1 60614 1 1 1 1 1")
    call(app, "1 1 99999 hangup")
    after = _scrape(app)

    def delta(name: str, **labels: str) -> float:
        return _value(after, name, **labels) - _value(before, name, **labels)

    assert delta("ivr_webhook_requests_total", route="incoming", outcome="ok") == 2
    assert delta("ivr_webhook_requests_total", route="status", outcome="ok") == 2
    assert delta("ivr_webhook_requests_total", route="pay_result", outcome="ok") == 1
    assert delta("ivr_webhook_duration_seconds_count", route="step") >= 9
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
    result = call(app, "1 1 60614 1 1 1 1 1")
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
    call(app, "1 1 60614 1 1 1 1 1")
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


@contextmanager
def _webhook_held_before_its_body(base: str) -> Iterator[Callable[[], int]]:
    """A signed /voice/incoming whose body is sent only when the caller calls ``finish()``
    (which returns the status code)."""
    url = f"{base}/voice/incoming"
    form = {"CallSid": new_sid(), "From": "+15555550123", "To": "+15555550100"}
    body = urlencode(form).encode()
    signature = RequestValidator(TOKEN).compute_signature(url, form)
    parts = urlsplit(base)
    with socket.create_connection((parts.hostname, parts.port), timeout=30) as sock:
        sock.sendall((f"POST /voice/incoming HTTP/1.1\r\nHost: {parts.netloc}\r\n"
                      "Content-Type: application/x-www-form-urlencoded\r\n"
                      f"Content-Length: {len(body)}\r\nX-Twilio-Signature: {signature}\r\n"
                      "Connection: close\r\n\r\n").encode())

        def finish() -> int:
            sock.sendall(body)
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
            return int(answer.split(b" ", 2)[1])

        yield finish


def test_counters_add_up_across_gunicorn_workers(multiworker: tuple[str, Path]) -> None:
    base, metrics_dir = multiworker
    assert not (metrics_dir / "counter_1.db").exists()  # cleared at start
    # Both (sync) workers answer by construction: the first webhook sends its headers but
    # holds back its body, so whichever worker took it is busy until the other has answered
    # the 23 others.
    with _webhook_held_before_its_body(base) as finish:
        with ThreadPoolExecutor(max_workers=4) as pool:
            statuses = list(pool.map(lambda _: _incoming(base), range(23)))
        statuses.append(finish())
    assert statuses == [200] * 24
    pids = {re.sub(r"\D", "", p.name) for p in metrics_dir.glob("counter_*.db")}
    assert len(pids) >= 2, "both workers should have answered some webhooks"
    # Whichever worker answers the scrape, the sum is the same.
    for _ in range(6):
        samples = _samples(requests.get(f"{base}/metrics", timeout=10).text)
        assert _value(samples, "ivr_webhook_requests_total", route="incoming",
                      outcome="ok") == 24
        assert _value(samples, "ivr_call_events_total", state="language", event="enter") == 24
        assert _value(samples, "ivr_calls_today", outcome="in_progress") == 24 or \
            _value(samples, "ivr_calls_today", outcome="in_progress") == 0  # real clock: day
        assert _value(samples, "ivr_metrics_database_up") == 1


def test_metrics_needs_no_sign_in(sqlite_url: str) -> None:
    app = make_app(sqlite_url, REPO / "prompts")
    response: Any = app.test_client().get("/metrics")
    assert response.status_code == 200 and b"ivr_metrics_database_up 1.0" in response.data
