"""Application configuration from ``IVR_*`` environment variables, validated at start."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from connectors.accounting.registry import settings_prefixes, system_names
from ivr.security import SigningKeys, parse_shared_keys

REPO_PROMPTS_DIR = Path(__file__).resolve().parent.parent / "prompts"

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def unsigned_refusal(config: AppConfig) -> str:
    """Why unsigned mode would serve a real line here ('' when it looks like a local demo).

    A real auth token, an https public URL or a server database each mean real callers could
    reach the line, and then anyone could forge a payment.
    """
    for name in ("twilio_auth_token", "twilio_secondary_auth_token", "twilio_webhook_keys"):
        if getattr(config, name):
            return f"with {_ENV[name]} set"
    if config.public_base_url.lower().startswith("https://"):
        return "with an https IVR_PUBLIC_BASE_URL"
    if config.database_url and make_url(config.database_url).get_backend_name() != "sqlite":
        return "with a server database (IVR_DATABASE_URL)"
    return ""


class ConfigError(ValueError):
    """A configuration value is missing or malformed; the message names the variable."""


@dataclass(frozen=True)
class AppConfig:
    """Deployment settings (docs/configuration.md). Line behaviour lives in prompts/."""

    database_url: str = ""
    twilio_auth_token: str = ""
    # Accepted beside the auth token, so that rotating it refuses no webhook (the token
    # Twilio will sign with once it is promoted to primary).
    twilio_secondary_auth_token: str = ""
    # Twilio's webhook shared keys, "SID:secret,SID:secret" (ivr.security.parse_shared_keys).
    twilio_webhook_keys: str = ""
    twilio_account_sid: str = ""
    public_base_url: str = ""
    prompts_dir: Path = REPO_PROMPTS_DIR
    pay_connector: str = ""
    allow_unsigned: bool = False
    # gunicorn's access line for every request (off: the "webhook" JSON line says it all).
    access_log: bool = False
    # Secret key for PIN hashes (see ivr.security.hash_pin); a key file in the instance
    # folder is created when unset.
    pin_key: str = ""
    # Signs the ops console's session cookies and CSRF tokens; a key file in the instance
    # folder is created when unset (several machines must share IVR_SECRET_KEY).
    secret_key: str = ""
    log_level: str = "INFO"
    # How many reverse proxies in front of the app append to X-Forwarded-For (werkzeug's
    # ProxyFix x_for). 0: the header is ignored and the peer address is the client's.
    trusted_proxies: int = 0
    # Posting to the accounting system (see connectors/ and docs/connectors.md).
    accounting: str = "none"
    post_budget_ms: int = 2000
    outbox_max_attempts: int = 15
    outbox_backoff_seconds: float = 5.0
    outbox_backoff_max_seconds: float = 3600.0
    outbox_claim_seconds: int = 60
    # Posts one `ivr worker` process has in flight at once (a bounded pool).
    worker_concurrency: int = 4
    lookup_timeout_ms: int = 1500
    breaker_failures: int = 3
    breaker_reset_seconds: int = 30
    # The longest a webhook's work may take before the caller hears the apology instead
    # (Twilio gives up at 15 s). See docs/deployment.md#twilios-15-second-limit.
    webhook_deadline_ms: int = 8000
    # Set by `ivr serve` (never from the environment): the request threads of each gunicorn
    # worker. 0 elsewhere (CLI jobs, tests); when set, the database gets the web app's
    # timeouts and a pool that fits the threads.
    serve_threads: int = 0
    # Text receipts through Twilio's REST API.
    sms_from: str = ""
    twilio_api_base_url: str = ""
    # Set by `ivr call` and `ivr demo` (never from the environment): payments taken by a
    # simulated call are marked "test", never posted and never put in confirmation files.
    simulated: bool = False
    # Each registered system's IVR_TRYTON_*, IVR_HLEDGER_*... and the IVR_ACCOUNTING_*
    # variables, for the connector (connectors.accounting.registry).
    accounting_settings: Mapping[str, str] = field(default_factory=dict)
    # IVR_SYNC_*, IVR_SFTP_*, IVR_PGP_* variables, for `ivr sync` (ivr.accounts.sync.SyncConfig).
    sync_settings: Mapping[str, str] = field(default_factory=dict)

    @property
    def signing_keys(self) -> SigningKeys:
        """What a webhook's signature is checked with."""
        return SigningKeys.of(self.twilio_auth_token, self.twilio_secondary_auth_token,
                              self.twilio_webhook_keys)

    @property
    def base_url(self) -> str:
        """The public base URL without a trailing slash ('' when unset)."""
        return self.public_base_url.rstrip("/")


_ENV = {
    "database_url": "IVR_DATABASE_URL",
    "twilio_auth_token": "IVR_TWILIO_AUTH_TOKEN",
    "twilio_secondary_auth_token": "IVR_TWILIO_SECONDARY_AUTH_TOKEN",
    "twilio_webhook_keys": "IVR_TWILIO_WEBHOOK_KEYS",
    "twilio_account_sid": "IVR_TWILIO_ACCOUNT_SID",
    "public_base_url": "IVR_PUBLIC_BASE_URL",
    "prompts_dir": "IVR_PROMPTS_DIR",
    "pay_connector": "IVR_PAY_CONNECTOR",
    "allow_unsigned": "IVR_ALLOW_UNSIGNED",
    "access_log": "IVR_ACCESS_LOG",
    "pin_key": "IVR_PIN_KEY",
    "secret_key": "IVR_SECRET_KEY",
    "log_level": "IVR_LOG_LEVEL",
    "trusted_proxies": "IVR_TRUSTED_PROXIES",
    "accounting": "IVR_ACCOUNTING",
    "post_budget_ms": "IVR_POST_BUDGET_MS",
    "outbox_max_attempts": "IVR_OUTBOX_MAX_ATTEMPTS",
    "outbox_backoff_seconds": "IVR_OUTBOX_BACKOFF_SECONDS",
    "outbox_backoff_max_seconds": "IVR_OUTBOX_BACKOFF_MAX_SECONDS",
    "outbox_claim_seconds": "IVR_OUTBOX_CLAIM_SECONDS",
    "worker_concurrency": "IVR_WORKER_CONCURRENCY",
    "lookup_timeout_ms": "IVR_LOOKUP_TIMEOUT_MS",
    "breaker_failures": "IVR_BREAKER_FAILURES",
    "breaker_reset_seconds": "IVR_BREAKER_RESET_SECONDS",
    "webhook_deadline_ms": "IVR_WEBHOOK_DEADLINE_MS",
    "sms_from": "IVR_SMS_FROM",
    "twilio_api_base_url": "IVR_TWILIO_API_BASE_URL",
}
_INT_FIELDS = {"post_budget_ms", "outbox_max_attempts", "worker_concurrency",
               "outbox_claim_seconds", "lookup_timeout_ms", "breaker_failures",
               "breaker_reset_seconds", "webhook_deadline_ms", "serve_threads"}
# Twilio waits 15 s; the apology itself must still reach it in time.
MAX_WEBHOOK_DEADLINE_MS = 12_000
_FLOAT_FIELDS = {"outbox_backoff_seconds", "outbox_backoff_max_seconds"}
# Prefixes of the variables handed to the accounting connector as they are, and the values
# IVR_ACCOUNTING accepts: both from the registry of accounting systems.
CONNECTOR_PREFIXES = settings_prefixes()
ACCOUNTING_SYSTEMS = system_names()
SYNC_PREFIXES = ("IVR_SYNC_", "IVR_SFTP_", "IVR_PGP_")


def _coerce(name: str, value: Any) -> Any:
    """Turn an environment string (or a test override) into the field's type."""
    var = _ENV.get(name, name)
    if name == "simulated":
        return bool(value)
    if name in ("allow_unsigned", "access_log"):
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
        raise ConfigError(f"{var} must be 1 or 0, not {value!r}")
    if name == "trusted_proxies":
        try:
            count = int(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{var} must be a whole number, not {value!r}") from None
        if not 0 <= count <= 10:
            raise ConfigError(f"{var} must be between 0 and 10")
        return count
    if name in _INT_FIELDS:
        try:
            number = int(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{var} must be a whole number, not {value!r}") from None
        if number < 1:
            raise ConfigError(f"{var} must be at least 1")
        return number
    if name in _FLOAT_FIELDS:
        # Seconds of backoff: a duration, not money, so a float is the right type.
        try:
            seconds = float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{var} must be a number of seconds, not {value!r}") from None
        if not seconds > 0:
            raise ConfigError(f"{var} must be positive")
        return seconds
    if name in ("accounting_settings", "sync_settings"):
        return {str(k): str(v) for k, v in dict(value).items()}
    if name == "prompts_dir":
        return Path(value)
    return str(value)


def load_config(overrides: Mapping[str, Any] | None = None,
                environ: Mapping[str, str] | None = None) -> AppConfig:
    """Read ``IVR_*`` variables, apply overrides, and validate. Raises ConfigError."""
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for name, var in _ENV.items():
        if var in env:
            values[name] = _coerce(name, env[var])
    values["accounting_settings"] = {k: v for k, v in env.items()
                                     if k.startswith(CONNECTOR_PREFIXES)}
    values["sync_settings"] = {k: v for k, v in env.items() if k.startswith(SYNC_PREFIXES)}
    known = {f.name for f in fields(AppConfig)}
    for name, value in (overrides or {}).items():
        if name not in known:
            raise ConfigError(f"unknown setting {name!r}")
        values[name] = _coerce(name, value)
    config = replace(AppConfig(), **values)
    _validate(config)
    return config


# What Twilio issues as an account's auth token (the key every webhook signature uses).
_AUTH_TOKEN = re.compile(r"[0-9a-fA-F]{32}")


def _validate(config: AppConfig) -> None:
    for name in ("twilio_auth_token", "twilio_secondary_auth_token"):
        token = getattr(config, name)
        if token and not _AUTH_TOKEN.fullmatch(token):
            # Never echoed: it is a secret, even when wrong.
            raise ConfigError(
                f"{_ENV[name]} must be an auth token from the Twilio console: "
                f"32 hexadecimal characters (got {len(token)} characters)")
    try:
        parse_shared_keys(config.twilio_webhook_keys)
    except ValueError as exc:
        raise ConfigError(f"IVR_TWILIO_WEBHOOK_KEYS must be SID:secret pairs separated by "
                          f"commas: {exc}") from None
    if config.public_base_url:
        parts = urlsplit(config.public_base_url)
        if parts.scheme not in {"http", "https"} or not parts.netloc or parts.query:
            raise ConfigError(
                "IVR_PUBLIC_BASE_URL must look like https://pay.example.com "
                f"(got {config.public_base_url!r})"
            )
    if config.database_url:
        try:
            make_url(config.database_url)
        except ArgumentError:
            raise ConfigError("IVR_DATABASE_URL is not a valid SQLAlchemy URL") from None
    if config.allow_unsigned:
        reason = unsigned_refusal(config)
        if reason:
            raise ConfigError(f"IVR_ALLOW_UNSIGNED=1 accepts forged webhooks and is for a local "
                              f"demo only; it cannot be used {reason}")
    if not config.prompts_dir.is_dir():
        raise ConfigError(f"IVR_PROMPTS_DIR {str(config.prompts_dir)!r} is not a directory")
    if config.accounting not in ACCOUNTING_SYSTEMS:
        raise ConfigError(f"IVR_ACCOUNTING must be one of {', '.join(ACCOUNTING_SYSTEMS)}, "
                          f"not {config.accounting!r}")
    if config.webhook_deadline_ms > MAX_WEBHOOK_DEADLINE_MS:
        raise ConfigError(f"IVR_WEBHOOK_DEADLINE_MS must be at most {MAX_WEBHOOK_DEADLINE_MS} "
                          "(Twilio waits 15 seconds for an answer)")
    if config.log_level.upper() not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
        raise ConfigError("IVR_LOG_LEVEL must be DEBUG, INFO, WARNING or ERROR")
