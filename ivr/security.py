"""Twilio request signatures, PIN hashing and masking of personal data for logs."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Iterator, Mapping
from typing import Protocol

from twilio.request_validator import RequestValidator

PIN_SCHEME = "hmac_sha256"


class _Request(Protocol):
    @property
    def url(self) -> str: ...

    @property
    def full_path(self) -> str: ...


def signed_url(public_base_url: str, request: _Request) -> str:
    """The URL Twilio signed: the public base plus path and query when one is configured.

    Behind a TLS-terminating proxy the app sees http://internal-host/..., while Twilio signed
    https://public-host/...; IVR_PUBLIC_BASE_URL tells us the latter. (The URL the app sees
    is worked out only when needed: werkzeug's costs more than the signature's HMAC.)
    """
    if not public_base_url:
        return request.url
    full_path = request.full_path
    path = full_path[:-1] if full_path.endswith("?") else full_path
    return public_base_url.rstrip("/") + path


class _Form(Protocol):
    def __iter__(self) -> Iterator[str]: ...

    def getlist(self, key: str) -> list[str]: ...


class _SignedValues:
    """Form values as twilio's RequestValidator reads them (``getall``, as on the MultiDict
    it was written for). Given werkzeug's MultiDict or a dict, it looks for ``getall``,
    then ``getlist``, raising and catching an AttributeError each time it misses: twice
    per parameter per URL it tries, 20-30 exceptions a webhook."""

    __slots__ = ("_values",)

    def __init__(self, params: Mapping[str, str] | _Form) -> None:
        if hasattr(params, "getlist"):
            form: _Form = params
            self._values = {key: form.getlist(key) for key in form}
        else:
            self._values = {key: [value] for key, value in params.items()}

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def getall(self, key: str) -> list[str]:
        return self._values[key]


def valid_signature(auth_token: str, url: str, params: Mapping[str, str] | _Form,
                    signature: str | None) -> bool:
    """True when ``signature`` is Twilio's signature of ``url`` and ``params`` (a dict, or
    a multi-valued form such as werkzeug's)."""
    if not auth_token or not signature:
        return False
    validator = RequestValidator(auth_token)
    return bool(validator.validate(url, _SignedValues(params), signature))


def hash_pin(pin: str, key: str) -> str:
    """A salted, keyed hash of a PIN: scheme$salt$hash.

    PINs have 4 to 8 digits, so no hash, however slow, stops someone who holds the database
    from trying them all. A secret key kept outside the database (IVR_PIN_KEY) does: without
    it the stored hashes reveal nothing. It is also fast, so a million-account file imports
    in seconds rather than hours, and the lockout still limits guessing by phone.
    """
    salt = secrets.token_bytes(16)
    digest = hmac.new(key.encode(), salt + pin.encode(), hashlib.sha256).hexdigest()
    return f"{PIN_SCHEME}${salt.hex()}${digest}"


def check_pin(pin: str, stored: str | None, key: str) -> bool:
    """Whether ``pin`` matches a hash made by hash_pin with ``key`` (constant-time compare)."""
    if not stored or not key:
        return False
    try:
        scheme, salt_hex, digest_hex = stored.split("$")
        salt = bytes.fromhex(salt_hex)
    except ValueError:
        return False
    if scheme != PIN_SCHEME:
        return False
    digest = hmac.new(key.encode(), salt + pin.encode(), hashlib.sha256).hexdigest()
    return hmac.compare_digest(digest, digest_hex)


def mask_account(number: str | None) -> str:
    """An account number for logs: only the last 4 characters show."""
    if not number:
        return ""
    return "*" * max(len(number) - 4, 0) + number[-4:]
