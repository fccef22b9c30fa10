"""Twilio request signatures, PIN hashing and masking of personal data for logs."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Mapping

from twilio.request_validator import RequestValidator

PIN_SCHEME = "pbkdf2_sha256"


def signed_url(public_base_url: str, request_url: str, full_path: str) -> str:
    """The URL Twilio signed: the public base plus path and query when one is configured.

    Behind a TLS-terminating proxy the app sees http://internal-host/..., while Twilio signed
    https://public-host/...; IVR_PUBLIC_BASE_URL tells us the latter.
    """
    if not public_base_url:
        return request_url
    path = full_path[:-1] if full_path.endswith("?") else full_path
    return public_base_url.rstrip("/") + path


def valid_signature(auth_token: str, url: str, params: Mapping[str, str] | object,
                    signature: str | None) -> bool:
    """True when ``signature`` is Twilio's signature of ``url`` and ``params``."""
    if not auth_token or not signature:
        return False
    validator = RequestValidator(auth_token)
    return bool(validator.validate(url, params, signature))


def hash_pin(pin: str, iterations: int) -> str:
    """A salted PBKDF2 hash of a PIN, in the form scheme$iterations$salt$hash."""
    salt = secrets.token_bytes(16)
    digest = hashlib.pbkdf2_hmac("sha256", pin.encode(), salt, iterations)
    return f"{PIN_SCHEME}${iterations}${salt.hex()}${digest.hex()}"


def check_pin(pin: str, stored: str | None) -> bool:
    """Whether ``pin`` matches a hash made by hash_pin (constant-time compare)."""
    if not stored:
        return False
    try:
        scheme, rounds, salt_hex, digest_hex = stored.split("$")
        if scheme != PIN_SCHEME:
            return False
        digest = hashlib.pbkdf2_hmac("sha256", pin.encode(), bytes.fromhex(salt_hex), int(rounds))
    except ValueError:
        return False
    return hmac.compare_digest(digest.hex(), digest_hex)


def mask_account(number: str | None) -> str:
    """An account number for logs: only the last 4 characters show."""
    if not number:
        return ""
    return "*" * max(len(number) - 4, 0) + number[-4:]
