"""The accounting system as the call sees it: post now, read live balances, fail fast."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime

from connectors.accounting.base import AccountingConnector, ConnectorError, LookupUnsupported
from connectors.amounts import decimal_to_cents
from ivr.config import AppConfig
from ivr.db import Database
from ivr.models import utcnow
from ivr.money.posting import post_now

log = logging.getLogger(__name__)


class CircuitBreaker:
    """After ``failures`` failures in a row, stop trying for ``reset_seconds``.

    An outage then costs one caller the timeout, not every caller. After the pause one
    trial call is let through (half-open); its success closes the breaker again.
    """

    def __init__(self, failures: int, reset_seconds: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.failures = failures
        self.reset_seconds = reset_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._count = 0
        self._opened_at: float | None = None
        self._trial = False

    def allow(self) -> bool:
        """Whether to try the system now."""
        with self._lock:
            if self._opened_at is None:
                return True
            if self._clock() - self._opened_at < self.reset_seconds or self._trial:
                return False
            self._trial = True  # half-open: exactly one trial
            return True

    def success(self) -> None:
        """The system answered."""
        with self._lock:
            self._count = 0
            self._opened_at = None
            self._trial = False

    def failure(self) -> None:
        """The system failed or was too slow."""
        with self._lock:
            self._count += 1
            if self._trial or self._count >= self.failures:
                self._opened_at = self._clock()
            self._trial = False

    @property
    def is_open(self) -> bool:
        """True while calls are being skipped."""
        with self._lock:
            return self._opened_at is not None


class Accounting:
    """The configured connector with a breaker each for lookups and real-time posts."""

    def __init__(self, connector: AccountingConnector, database: Database, config: AppConfig,
                 clock: Callable[[], datetime] = utcnow) -> None:
        self.connector = connector
        self.database = database
        self.config = config
        self.clock = clock
        self.lookup_breaker = CircuitBreaker(config.breaker_failures, config.breaker_reset_seconds)
        self.post_breaker = CircuitBreaker(config.breaker_failures, config.breaker_reset_seconds)
        self._lookup_supported = True

    def post_now(self, payment_id: int) -> bool:
        """Try to post while the caller waits; False leaves it queued for the worker."""
        if not self.post_breaker.allow():
            return False
        return self._post_now(payment_id, arrangement=False)

    def post_arrangement_now(self, arrangement_id: int) -> bool:
        """Try to record a just-made arrangement while the caller waits (same budget and
        breaker as payments); False leaves it queued for the worker."""
        if not self.post_breaker.allow():
            return False
        return self._post_now(arrangement_id, arrangement=True)

    def _post_now(self, subject_id: int, *, arrangement: bool) -> bool:
        posted = post_now(self.database, self.connector, subject_id, self.config, self.clock,
                          arrangement=arrangement)
        if posted:
            self.post_breaker.success()
        else:
            self.post_breaker.failure()
        return posted

    def live_balance_cents(self, account_number: str) -> int | None:
        """The live balance in cents, or None (unsupported, slow, down or refused)."""
        if not self._lookup_supported or not self.lookup_breaker.allow():
            return None
        try:
            live = self.connector.lookup_balance(account_number,
                                                 timeout=self.config.lookup_timeout_ms / 1000)
        except LookupUnsupported:
            self._lookup_supported = False
            return None
        except ConnectorError as exc:
            self.lookup_breaker.failure()
            log.warning("live balance unavailable, using the cache", extra={"fields": {
                "system": self.connector.name, "error": str(exc)[:200]}})
            return None
        except Exception:
            self.lookup_breaker.failure()
            log.exception("live balance lookup failed")
            return None
        self.lookup_breaker.success()
        return decimal_to_cents(live.balance_due)

    def close(self) -> None:
        """Release the connector's connections."""
        self.connector.close()


