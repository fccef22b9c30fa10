"""One requests.Session per system, explicit timeouts, and HTTP failures classified."""

from __future__ import annotations

import email.utils
import math
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import requests

from connectors.accounting.base import PermanentError, RetryableError

USER_AGENT = "ivr-paybyphone/0.1"
# Connect and read timeouts, seconds. Webhooks must answer Twilio within 15 s, so every
# outbound call made while a caller waits has to fit well inside that.
DEFAULT_TIMEOUT = (3.0, 8.0)


def make_session() -> requests.Session:
    """A session with our user agent and no retries of its own (the outbox retries)."""
    session = requests.Session()
    session.headers["User-Agent"] = USER_AGENT
    return session


def timeout_for(budget: float | None, default: tuple[float, float] = DEFAULT_TIMEOUT
                ) -> tuple[float, float]:
    """Connect/read timeouts, shrunk to ``budget`` seconds when one is given."""
    if budget is None:
        return default
    return (min(default[0], budget), min(default[1], budget))


def timeouts_from_settings(settings: Mapping[str, str]) -> tuple[float, float]:
    """Connect/read timeouts from IVR_ACCOUNTING_CONNECT_TIMEOUT and _READ_TIMEOUT (seconds)."""
    return (_seconds(settings, "IVR_ACCOUNTING_CONNECT_TIMEOUT", DEFAULT_TIMEOUT[0]),
            _seconds(settings, "IVR_ACCOUNTING_READ_TIMEOUT", DEFAULT_TIMEOUT[1]))


def _seconds(settings: Mapping[str, str], name: str, default: float) -> float:
    raw = settings.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{name} must be a number of seconds, not {raw!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive number of seconds, not {raw!r}")
    return value


def retry_after_seconds(value: str | None, now: datetime | None = None) -> float | None:
    """Parse Retry-After: seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def request(system: str, session: requests.Session, method: str, url: str, *,
            timeout: tuple[float, float], ok_statuses: tuple[int, ...] = (),
            **kwargs: Any) -> requests.Response:
    """Send a request; raise RetryableError or PermanentError for failures.

    2xx (and any of ``ok_statuses``) return the response. Timeouts, connection errors, 429
    and 5xx are retryable; other 4xx are permanent.
    """
    try:
        response = session.request(method, url, timeout=timeout, allow_redirects=False, **kwargs)
    except requests.Timeout as exc:
        raise RetryableError(system, f"timed out: {type(exc).__name__}") from exc
    except requests.ConnectionError as exc:
        raise RetryableError(system, f"connection failed: {type(exc).__name__}") from exc
    except requests.RequestException as exc:
        raise RetryableError(system, f"request failed: {type(exc).__name__}") from exc
    status = response.status_code
    if 200 <= status < 300 or status in ok_statuses:
        return response
    detail = f"HTTP {status}: {response.text[:200]!r}"
    if status == 429:
        wait = retry_after_seconds(response.headers.get("Retry-After"))
        raise RetryableError(system, detail, wait)
    if status >= 500 or status in (408, 425):
        raise RetryableError(system, detail)
    raise PermanentError(system, detail)
