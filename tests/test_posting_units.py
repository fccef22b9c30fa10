"""Backoff and circuit-breaker arithmetic (pure functions, no servers needed)."""

from __future__ import annotations

from ivr.config import load_config
from ivr.money.accounting import CircuitBreaker
from ivr.money.posting import backoff_seconds


def test_backoff_grows_exponentially_with_jitter_and_a_cap() -> None:
    config = load_config({"outbox_backoff_seconds": 2, "outbox_backoff_max_seconds": 60},
                         environ={})
    lows = [backoff_seconds(n, config, rng=lambda: 0.0) for n in range(1, 9)]
    highs = [backoff_seconds(n, config, rng=lambda: 1.0) for n in range(1, 9)]
    assert lows[:4] == [1.0, 2.0, 4.0, 8.0]  # half the ceiling at least: never immediate
    assert highs[:4] == [2.0, 4.0, 8.0, 16.0]
    assert max(highs) == 60.0 and max(lows) == 30.0
    # Retry-After from a 429 wins when it asks for longer.
    assert backoff_seconds(1, config, retry_after=45, rng=lambda: 0.5) == 45
    assert backoff_seconds(10**6, config, rng=lambda: 1.0) == 60.0  # no overflow


def test_breaker_opens_after_failures_and_half_opens_once() -> None:
    now = [0.0]
    breaker = CircuitBreaker(failures=3, reset_seconds=30, clock=lambda: now[0])
    for _ in range(2):
        assert breaker.allow()
        breaker.failure()
    assert breaker.allow() and not breaker.is_open
    breaker.failure()
    assert breaker.is_open and not breaker.allow()
    now[0] = 29.9
    assert not breaker.allow()
    now[0] = 30.0
    assert breaker.allow()  # one trial
    assert not breaker.allow()  # and only one
    breaker.failure()  # the trial failed: open again for a full period
    now[0] = 59.0
    assert not breaker.allow()
    now[0] = 60.1
    assert breaker.allow()
    breaker.success()
    assert not breaker.is_open and breaker.allow() and breaker.allow()
