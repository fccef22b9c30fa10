"""Outbox drain rate and real-time posting latency, against real servers on 127.0.0.1.

Prints, for the reference webhook receiver and for hledger-web:
- the server's own maximum request rate: prebuilt requests on keep-alive sessions, as many at
  once as one worker's pool posts (IVR_WORKER_CONCURRENCY for the webhook, 1 for hledger-web);
- our outbox drain rate (one `ivr worker` pass over N queued payments) and its ratio to that,
  repeated (--rounds), bare and ivr interleaved, min and median of each. Every hledger-web
  run starts a server on a fresh journal (it re-parses the whole journal on each reload, so
  it slows as a run adds to it): the seeded one with the defaults (the connector finds the
  journal on this machine and stamps it), with IVR_HLEDGER_JOURNAL=off (as with hledger-web
  on another machine: a read and the reload gap before each write), and off with a gap of
  0, and the seeded one plus HISTORY earlier bills (N/5 payments), defaults and off. N is
  1,000 by default: long enough a drain that its start and end (the first claim, the pool's
  threads starting, the last posts recorded with nothing left to overlap) weigh little, as
  in a real backlog;
- the real-time path's extra latency: a whole <Pay> success callback (record the payment,
  commit, post within the budget, answer TwiML) against the connector's bare round trip.

Usage: python -m bench.posting [--payments 1000] [--rounds 3] [--database-url URL]
       python -m bench.posting --systems webhook   # one row (about a minute), no real-time
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
import tempfile
import threading
import time
import tomllib
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import cast
from xml.sax.saxutils import escape

import requests
from sqlalchemy import update

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from connectors.accounting.base import AccountingConnector, PaymentPost, PostResult  # noqa: E402
from connectors.accounting.hledger import HledgerConnector, transaction_code  # noqa: E402
from connectors.accounting.webhook import WebhookConnector, _encode, payload, sign  # noqa: E402
from ivr.models import Account  # noqa: E402
from ivr.money.posting import drain_once  # noqa: E402
from ivr.simulator.demo import demo_rows  # noqa: E402
from ivr.web.app import get_config, get_database  # noqa: E402
from tests.conftest import OPEN_TIME, Twilio, make_app, new_sid, set_clock  # noqa: E402
from tests.servers.hledger import HledgerServer, start_hledger  # noqa: E402
from tests.servers.webhook import start_receiver  # noqa: E402
from tests.test_posting import queue_payments  # noqa: E402
from tests.test_webhooks import success_form, walk_to_pay  # noqa: E402

SECRET = "bench-secret-0123456789abcdef"
# Earlier bills in the "with history" hledger journal: a small biller's month or two.
HISTORY = 2000
# What a caller hears when the payment reached the books while they waited.
POSTED = escape(tomllib.loads((REPO / "prompts" / "en-US.toml").read_text())
                ["pay"]["success_posted"]["say"]).encode()


def post(i: int, account: str = "4401001234") -> PaymentPost:
    """A payment with a fresh key."""
    return PaymentPost(idempotency_key=str(uuid.uuid4()), account_number=account,
                       amount=Decimal("1.00") + Decimal(i) / 100, fee=Decimal(0),
                       currency="USD", paid_at=datetime.now(UTC),
                       confirmation_number=f"B{i:08d}", method="card", last4="1111")


def bills(count: int) -> str:
    """``count`` earlier bills, as journal text, spread over the demo customers."""
    rows = demo_rows(datetime.now(UTC).date())
    return "".join(
        f"\n2026-0{1 + i % 9}-15 Bill {i}  ; acct:{row['account_number']}\n"
        f"    receivables:customers:{row['account_number']}    USD 10.00\n"
        "    income:utility\n"
        for i, row in ((i, rows[i % len(rows)]) for i in range(count)))


def rate(count: int, action: Callable[[int], None], threads: int = 1) -> float:
    """Requests per second of ``action`` over ``count`` runs, ``threads`` at once."""
    started = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(action, range(count)))
    return count / (time.perf_counter() - started)


def bare_webhook(url: str, count: int, threads: int) -> float:
    """The receiver's rate for prebuilt, presigned requests on keep-alive sessions."""
    local = threading.local()
    payments = [post(i) for i in range(count)]
    bodies = [_encode(payload(p)) for p in payments]

    def send(i: int) -> None:
        body = bodies[i]
        stamp = int(time.time())
        if not hasattr(local, "session"):
            local.session = requests.Session()
        response = local.session.post(url, data=body, timeout=10, headers={
            "Content-Type": "application/json", "X-IVR-Signature": sign(SECRET, body, stamp),
            "Idempotency-Key": payments[i].idempotency_key})
        response.raise_for_status()

    return rate(count, send, threads)


def bare_hledger(base: str, connector: HledgerConnector, count: int) -> float:
    """hledger-web's rate for prebuilt PUT /add requests."""
    session = requests.Session()
    bodies = [connector.transaction(post(i)) for i in range(count)]

    def send(i: int) -> None:
        session.put(f"{base}/add", json=bodies[i], timeout=10).raise_for_status()

    return rate(count, send)


def drain_rate(database_url: str, settings: dict[str, str], count: int) -> float:
    """Payments per second one worker pass posts from the outbox."""
    settings = dict(settings)
    pool = int(settings.pop("IVR_WORKER_CONCURRENCY", "4"))
    app = make_app(database_url, REPO / "prompts", accounting=settings["IVR_ACCOUNTING"],
                   accounting_settings=settings, worker_concurrency=pool)
    queue_payments(app, count)
    connector = app.extensions["ivr.money.accounting"].connector
    started = time.perf_counter()
    stats = drain_once(get_database(app), connector, get_config(app), poster="bench")
    elapsed = time.perf_counter() - started
    assert stats.posted == count, stats
    get_database(app).dispose()
    return count / elapsed


class InstantConnector:
    """Acknowledges every payment at once, without a network: what is left of a drain is
    the worker's own work (claiming, recording, logging)."""

    name = "webhook"

    def post_payment(self, post: PaymentPost, timeout: float | None = None) -> PostResult:
        """Posted, with the key as the receipt."""
        return PostResult(receipt_id=post.idempotency_key)


def bookkeeping_ms(database_url: str, count: int, pool: int) -> float:
    """The worker's own CPU per post (ms): one pass over ``count`` rows, instant posts."""
    app = make_app(database_url, REPO / "prompts", worker_concurrency=pool)
    queue_payments(app, count)
    started = time.process_time()
    stats = drain_once(get_database(app), cast(AccountingConnector, InstantConnector()),
                       get_config(app), poster="bench")
    spent = time.process_time() - started
    assert stats.posted == count, stats
    get_database(app).dispose()
    return spent * 1000 / count


def realtime_latency(database_url: str, settings: dict[str, str], connector: AccountingConnector,
                     calls: int, new_bill: Callable[[], None]) -> tuple[float, float]:
    """Median ms of a whole success callback vs. the connector's bare post."""
    app = make_app(database_url, REPO / "prompts", accounting=settings["IVR_ACCOUNTING"],
                   accounting_settings=settings)
    twilio = Twilio(app)
    whole: list[float] = []
    for i in range(calls):
        # A day apart: each call is a new day's payment, not "you already paid today".
        set_clock(app, OPEN_TIME + timedelta(hours=25 * i))
        new_bill()  # the same bill again for each call, in the books and in the cache
        with get_database(app).session() as session:
            session.execute(update(Account).where(Account.account_number == "4401001234")
                            .values(balance_due_cents=12345))
        sid = new_sid()
        walk_to_pay(twilio, sid)
        started = time.perf_counter()
        response = twilio.post("/voice/pay/result", **success_form(sid, f"RT{i:08d}"))
        whole.append((time.perf_counter() - started) * 1000)
        assert POSTED in response.data, response.data[:300]
    bare: list[float] = []
    for i in range(calls):
        payment = post(i)
        started = time.perf_counter()
        connector.post_payment(payment)
        bare.append((time.perf_counter() - started) * 1000)
    get_database(app).dispose()
    return statistics.median(whole), statistics.median(bare)


def main() -> None:
    """Run both systems and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--payments", type=int, default=1000)
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=4,
                        help="the worker's pool (IVR_WORKER_CONCURRENCY)")
    parser.add_argument("--database-url", help="default: a temporary SQLite file")
    parser.add_argument("--systems", default="",
                        help="only the drain rows whose names start with these, comma-separated "
                        "(\"webhook\", \"hledger-web\", \"off\"), and no real-time figures")
    args = parser.parse_args()
    chosen = [name.strip() for name in args.systems.split(",") if name.strip()]
    work = Path(tempfile.mkdtemp(prefix="bench-posting-"))

    def db(name: str) -> str:
        return args.database_url or f"sqlite:///{work / (name + '.sqlite3')}"

    receiver = start_receiver(work / "receiver", SECRET)
    runs = itertools.count()

    @contextmanager
    def fresh_hledger(history: int = 0) -> Iterator[HledgerServer]:
        # hledger-web re-parses its whole journal on every reload, so it slows as the journal
        # grows: each run starts from the same seeded journal (plus ``history`` earlier
        # bills), or later runs compare unlike.
        server = start_hledger(work / f"hledger-{next(runs)}")
        try:
            if history:
                server.append_journal(bills(history))
            yield server
        finally:
            server.stop()

    def on_hledger(run: Callable[[HledgerServer], float],
                   history: int = 0) -> Callable[[], float]:
        def fresh() -> float:
            with fresh_hledger(history) as server:
                return run(server)
        return fresh

    try:
        webhook_settings = receiver.settings()
        print(f"payments per run: {args.payments}; rounds: {args.rounds}; database: "
              f"{db('x').split('://')[0]}; worker pool: {args.concurrency}")
        concurrency = {"IVR_WORKER_CONCURRENCY": str(args.concurrency)}

        def hledger_drain(gap: str | None, history: int = 0, payments: int = args.payments,
                          journal: str | None = None) -> Callable[[str], float]:
            def run(database_url: str) -> float:
                with fresh_hledger(history) as server:
                    settings = {**server.settings(), **concurrency}
                    if gap is not None:
                        settings["IVR_HLEDGER_RELOAD_GAP_MS"] = gap
                    if journal is not None:
                        settings["IVR_HLEDGER_JOURNAL"] = journal
                    return drain_rate(database_url, settings, payments)
            return run

        def hledger_bare(history: int = 0, payments: int = args.payments) -> Callable[[], float]:
            return on_hledger(lambda h: bare_hledger(
                h.url, HledgerConnector.from_settings(h.settings()), payments), history)

        # A journal with some history: each reload parses HISTORY more transactions.
        history_payments = max(10, args.payments // 5)

        systems: tuple[tuple[str, Callable[[], float], Callable[[str], float]], ...] = (
            ("webhook receiver",
             lambda: bare_webhook(receiver.url, args.payments, args.concurrency),
             lambda url: drain_rate(url, {**webhook_settings, **concurrency}, args.payments)),
            ("hledger-web", hledger_bare(), hledger_drain(None)),
            ("hledger-web off", hledger_bare(), hledger_drain(None, journal="off")),
            ("off, gap 0", hledger_bare(), hledger_drain("0", journal="off")),
            (f"hledger-web +{HISTORY:,}", hledger_bare(HISTORY, history_payments),
             hledger_drain(None, HISTORY, history_payments)),
            (f"off +{HISTORY:,}", hledger_bare(HISTORY, history_payments),
             hledger_drain(None, HISTORY, history_payments, journal="off")),
        )
        own = [bookkeeping_ms(db(f"own-{n}"), 5 * args.payments, args.concurrency)
               for n in range(args.rounds)]
        print(f"{'worker alone':>17}: CPU per post (instant connector) min/median "
              f"{min(own):.3f}/{statistics.median(own):.3f} ms")
        for name, baseline, drain in systems:
            if chosen and not name.startswith(tuple(chosen)):
                continue
            bares: list[float] = []
            drains: list[float] = []
            for n in range(args.rounds):
                bares.append(baseline())
                drains.append(drain(db(f"{name.split()[0]}-{len(name)}-{n}")))
            ratios = [d / b for d, b in zip(drains, bares, strict=True)]
            print(f"{name:>17}: bare min/median {min(bares):7.1f}/{statistics.median(bares):7.1f}"
                  f" req/s | drain {min(drains):7.1f}/{statistics.median(drains):7.1f} posts/s"
                  f" | ratio min/median {min(ratios):5.2f}/{statistics.median(ratios):5.2f}")

        if chosen:
            return
        whole, bare = realtime_latency(db("webhook-rt"), webhook_settings,
                                       WebhookConnector.from_settings(webhook_settings),
                                       args.calls, lambda: None)
        print(f"{'webhook receiver':>17}: real-time <Pay> callback {whole:6.1f} ms median | "
              f"bare post {bare:6.1f} ms | our extra {whole - bare:6.1f} ms")
        with fresh_hledger() as hledger:
            def hledger_bill() -> None:
                # The drain above paid money in; bring the live balance back to one bill.
                due = hledger.balance("4401001234")
                hledger.append_journal(
                    f"\n2026-12-01 Bill\n    receivables:customers:4401001234   "
                    f"USD {Decimal('123.45') - due:.2f}\n    income:utility\n")

            settings = hledger.settings()
            whole, bare = realtime_latency(db("hledger-rt"), settings,
                                           HledgerConnector.from_settings(settings),
                                           args.calls, hledger_bill)
            print(f"{'hledger-web':>17}: real-time <Pay> callback {whole:6.1f} ms median | "
                  f"bare post {bare:6.1f} ms | our extra {whole - bare:6.1f} ms")
        _ = transaction_code  # imported to show the code the baseline's transactions carry
    finally:
        receiver.stop()


if __name__ == "__main__":
    main()
