"""The worker's pool against real servers on 127.0.0.1: several posts in flight never
double-post, a first attempt looks for no earlier copy, a retry after a lost answer does."""

from __future__ import annotations

import socket
from datetime import timedelta
from decimal import Decimal

import pytest
import requests
from flask import Flask

from connectors.accounting.hledger import transaction_code
from ivr.models import utcnow
from ivr.money.connector_state import DatabaseStateStore
from ivr.money.posting import drain_once, pool_size
from ivr.web.app import get_config, get_database
from tests.servers.gate import Gate
from tests.servers.hledger import HledgerServer
from tests.servers.webhook import Receiver
from tests.test_posting import (
    attempts,
    diagnose,
    gated_worker_env,
    outbox,
    posting_app,
    queue_payments,
    start_worker,
    wait_all_posted,
    worker_env,
)

pytestmark = pytest.mark.slow



def drain(app: Flask, later: timedelta = timedelta(0)) -> None:
    accounting = app.extensions["ivr.money.accounting"]
    drain_once(get_database(app), accounting.connector, get_config(app), poster="pool-test",
               clock=lambda: utcnow() + later)


def test_two_pooled_workers_post_each_payment_once_to_the_receiver(
        database_url: str, receiver: Receiver) -> None:
    app = posting_app(database_url, receiver.settings())
    keys = queue_payments(app, 120)
    env = worker_env(get_database(app).url, receiver.settings())
    env.update({"IVR_WORKER_CONCURRENCY": "4", "IVR_OUTBOX_CLAIM_SECONDS": "36"})
    # Each post waits a little at the receiver, so both pools have several in flight.
    receiver.set_faults({"delay": 0.05, "count": 10_000})
    workers = [start_worker(env) for _ in range(2)]
    try:
        wait_all_posted(app, 120)
    finally:
        for w in workers:
            w.terminate()
            w.wait(timeout=10)
    stored = [p["idempotency_key"] for p in receiver.payments()]
    assert sorted(stored) == sorted(keys)  # every payment once, none twice
    assert len(attempts(app)) == 120
    posters = {a.poster for a in attempts(app)}
    assert posters <= {f"worker:{socket.gethostname()}:{w.pid}" for w in workers}


def test_two_pooled_workers_post_each_payment_once_to_hledger(
        database_url: str, hledger: HledgerServer) -> None:
    app = posting_app(database_url, hledger.settings())
    keys = queue_payments(app, 60)
    before = hledger.balance("4401001234")
    with Gate(hledger.url) as gate:
        env = gated_worker_env(app, hledger, gate)
        env.update({"IVR_WORKER_CONCURRENCY": "4", "IVR_OUTBOX_CLAIM_SECONDS": "36"})
        # Both workers are inside a post at once before any write reaches the books.
        together = gate.together("PUT", "/add", parties=2)
        workers = [start_worker(env) for _ in range(2)]
        try:
            together.wait()
            wait_all_posted(app, 120, gate)
        finally:
            for w in workers:
                w.terminate()
                w.wait(timeout=10)
    for key in keys:
        assert hledger.transactions_with_code(transaction_code(key)) == 1, \
            diagnose(app, hledger, key)
    # Every write is visible to hledger-web's own reads, not only in the file.
    total = sum(100 + i for i in range(60))
    assert hledger.balance("4401001234") == before - Decimal(total) / 100
    assert len({a.poster for a in attempts(app)}) == 2


def test_first_attempts_make_no_dedupe_read_in_hledger(sqlite_url: str,
                                                       hledger: HledgerServer) -> None:
    """The journal is on this machine: after the first write the connector reads that
    write's transaction back once, finds the file hledger-web names, and stamps it from
    then on; no other post makes a read."""
    with Gate(hledger.url) as gate:
        app = posting_app(sqlite_url, {**hledger.settings(), "IVR_HLEDGER_URL": gate.url})
        keys = queue_payments(app, 10)
        drain(app)
        assert [e.status for e in outbox(app)] == ["posted"] * 10
        assert gate.seen.count("PUT /add") == 10
        assert gate.seen.count("GET /version") == 1
        assert gate.seen.count("GET /accountnames") == 1
        assert len([r for r in gate.seen if r.startswith("GET /accounttransactions")]) == 1
    # Every write, the last one too, is seen by hledger-web's own reads at once.
    seen = requests.get(f"{hledger.url}/transactions", timeout=5).json()
    assert {transaction_code(k) for k in keys} <= {t["tcode"] for t in seen}
    with app.app_context():
        found = DatabaseStateStore(app.extensions["ivr.db"], "hledger").get("journal_path")
    assert found == str(hledger.journal)


def test_first_attempts_without_the_journal_read_before_each_write(
        sqlite_url: str, hledger: HledgerServer) -> None:
    """IVR_HLEDGER_JOURNAL=off (or a journal on another machine): one small read per
    post (it takes hledger-web's journal reload, see docs/connectors.md), the account
    names once, and no register read at all."""
    with Gate(hledger.url) as gate:
        app = posting_app(sqlite_url, {**hledger.settings(), "IVR_HLEDGER_URL": gate.url,
                                       "IVR_HLEDGER_JOURNAL": "off"})
        queue_payments(app, 10)
        drain(app)
        assert [e.status for e in outbox(app)] == ["posted"] * 10
        assert not [r for r in gate.seen if r.startswith("GET /accounttransactions")]
        assert gate.seen.count("PUT /add") == 10
        assert gate.seen.count("GET /version") == 10
        assert gate.seen.count("GET /accountnames") == 1


def test_first_attempts_reach_the_receiver_once_each(sqlite_url: str,
                                                     receiver: Receiver) -> None:
    with Gate(receiver.url.rsplit("/", 1)[0], serial=False) as gate:
        app = posting_app(sqlite_url, {**receiver.settings(),
                                       "IVR_WEBHOOK_URL": gate.url + "/payments"})
        queue_payments(app, 12)
        drain(app)
        assert gate.seen == ["POST /payments"] * 12
    assert len(receiver.payments()) == 12


def test_retry_after_a_lost_answer_finds_the_earlier_copy_in_hledger(
        sqlite_url: str, hledger: HledgerServer) -> None:
    with Gate(hledger.url) as gate:
        settings = {**hledger.settings(), "IVR_HLEDGER_URL": gate.url,
                    "IVR_ACCOUNTING_READ_TIMEOUT": "1"}
        app = posting_app(sqlite_url, settings)
        [key] = queue_payments(app, 1)
        # hledger-web writes it; the worker never hears back (its read times out).
        held = gate.hold("PUT", "/add", answered=True)
        drain(app)
        held.wait()
        held.release()
        [entry] = outbox(app)
        assert entry.status == "pending" and entry.attempts == 1
        assert hledger.transactions_with_code(transaction_code(key)) == 1
        seen = len(gate.seen)
        drain(app, timedelta(hours=1))
        retry = gate.seen[seen:]
    assert retry[0].startswith("GET /accounttransactions/")  # looked for it ...
    assert "PUT /add" not in retry  # ... found it, and wrote nothing
    [entry] = outbox(app)
    assert entry.status == "posted"
    assert hledger.transactions_with_code(transaction_code(key)) == 1


def test_pool_size_follows_the_setting_and_the_connector(sqlite_url: str,
                                                         receiver: Receiver) -> None:
    app = posting_app(sqlite_url, receiver.settings(), worker_concurrency=6)
    connector = app.extensions["ivr.money.accounting"].connector
    assert pool_size(connector, get_config(app)) == 6

    class OneAtATime:
        name = "x"
        max_concurrency = 1

    assert pool_size(OneAtATime(), get_config(app)) == 1  # type: ignore[arg-type]
