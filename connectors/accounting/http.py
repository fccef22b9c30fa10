"""What the HTTP connectors share: one requests.Session per system, explicit timeouts, an
operation's time budget, URL settings, and HTTP failures classified."""

from __future__ import annotations

import email.utils
import math
import os
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import SplitResult, urlsplit

import requests

from connectors.accounting.base import PermanentError, RetryableError

USER_AGENT = "ivr-paybyphone/0.1"
# Connect and read timeouts, seconds. Webhooks must answer Twilio within 15 s, so every
# outbound call made while a caller waits has to fit well inside that.
DEFAULT_TIMEOUT = (3.0, 8.0)


def make_session(*urls: str) -> requests.Session:
    """A session with our user agent and no retries of its own (the outbox retries).

    What the environment says about ``urls`` (proxies and ``NO_PROXY``, a CA bundle in
    ``REQUESTS_CA_BUNDLE`` or ``CURL_CA_BUNDLE``, ``.netrc`` credentials) is read once, here:
    requests reads it again on every request otherwise, which cost a quarter of a post's CPU.
    Where the URLs would not agree on it, requests goes on reading it per request.
    """
    session = requests.Session()
    session.headers["User-Agent"] = USER_AGENT
    if urls:
        proxies = [requests.utils.get_environ_proxies(url) for url in urls]
        netrc = [requests.utils.get_netrc_auth(url) for url in urls]
        if all(p == proxies[0] for p in proxies) and all(n == netrc[0] for n in netrc):
            session.trust_env = False
            session.proxies.update(proxies[0])
            session.auth = netrc[0]
            session.verify = (os.environ.get("REQUESTS_CA_BUNDLE")
                              or os.environ.get("CURL_CA_BUNDLE") or True)
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


class Deadline:
    """One operation's time budget, shared by its several requests.

    ``spent`` is the RetryableError's message once the budget is used up.
    """

    def __init__(self, system: str, seconds: float | None,
                 default: tuple[float, float] = DEFAULT_TIMEOUT, *,
                 spent: str = "time budget used up") -> None:
        self.system = system
        self.default = default
        self.spent = spent
        self.end = None if seconds is None else time.monotonic() + seconds

    def remaining(self) -> float | None:
        """Seconds left (None: no budget); RetryableError once spent."""
        if self.end is None:
            return None
        left = self.end - time.monotonic()
        if left <= 0:
            raise RetryableError(self.system, self.spent)
        return left

    def timeouts(self, cap: tuple[float, float] | None = None) -> tuple[float, float]:
        """Connect/read timeouts for the next request (``cap`` instead of the default),
        shrunk to what is left; RetryableError once the budget is spent."""
        return timeout_for(self.remaining(), cap or self.default)


def url_setting(settings: Mapping[str, str], name: str, *, strip: str = "",
                required: str = "") -> tuple[str, SplitResult]:
    """The http(s) URL in setting ``name`` (blanks and trailing ``strip`` characters removed)
    and its parts; ValueError naming it when it is missing (``required`` follows "is
    required" in the message), unparsable, or not http(s) with a host."""
    url = settings.get(name, "").strip().rstrip(strip)
    if not url:
        raise ValueError(f"{name} is required{required}")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise ValueError(f"{name} is not a valid URL") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{name} must be an http:// or https:// URL with a host")
    return url, parts


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
