"""Twilio request signatures, PIN hashing and masking of personal data for logs."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Protocol
from urllib.parse import urlparse

from twilio.request_validator import (
    HMAC_SHA1,
    HMAC_SHA256,
    RequestValidator,
    add_port,
    get_signature_algorithm,
    remove_port,
)

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


@dataclass(frozen=True)
class SigningKeys:
    """The secrets Twilio may sign a webhook with (docs/configuration.md).

    ``auth_tokens``: the account's auth token, then the secondary token about to replace it
    (a rotation without refused calls). ``shared``: Twilio's webhook shared keys by SID, for
    webhooks a Webhook Rule has Twilio sign with a key (they carry
    X-Twilio-Webhooks-Signature-Settings); several during a key's rotation.
    """

    auth_tokens: tuple[str, ...] = ()
    shared: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, auth_token: str, secondary_auth_token: str, shared_keys: str) -> SigningKeys:
        """From the settings (IVR_TWILIO_AUTH_TOKEN, IVR_TWILIO_SECONDARY_AUTH_TOKEN,
        IVR_TWILIO_WEBHOOK_KEYS)."""
        tokens = tuple(t for t in (auth_token, secondary_auth_token) if t)
        return cls(tokens, parse_shared_keys(shared_keys))

    @property
    def configured(self) -> bool:
        """Whether any webhook could be checked at all."""
        return bool(self.auth_tokens or self.shared)


def parse_shared_keys(text: str) -> dict[str, str]:
    """``SID:secret`` pairs separated by commas (IVR_TWILIO_WEBHOOK_KEYS) as a mapping;
    ValueError names the pair by its position, never a secret."""
    keys: dict[str, str] = {}
    for n, pair in enumerate((p.strip() for p in text.split(",") if p.strip()), start=1):
        sid, colon, secret = pair.partition(":")
        sid, secret = sid.strip(), secret.strip()
        if not colon or not sid or not secret or any(c.isspace() for c in sid + secret):
            raise ValueError(f"key {n} is not SID:secret")
        if sid in keys:
            raise ValueError(f"key {sid} is given twice")
        keys[sid] = secret
    return keys


def _shared_key_sid(settings: str) -> str:
    """The ``key=`` of X-Twilio-Webhooks-Signature-Settings ('' when absent)."""
    for part in settings.split(","):
        name, equals, value = part.partition("=")
        if equals and name.strip() == "key":
            return value.strip()
    return ""


def _signed_with(secret: str, url: str, values: _SignedValues, signature: bytes,
                 algorithm: str) -> bool:
    validator = RequestValidator(secret)
    # Twilio signs the URL with or without its port (":443" on https); the URL as the line
    # knows it first, so a matching webhook costs one HMAC, not twilio's validate()'s two.
    parsed = urlparse(url)
    try:
        other = remove_port(parsed) if parsed.port else add_port(parsed)
    except ValueError:  # no port to add or remove in a Host header such as "a:b"
        other = url
    for candidate in dict.fromkeys((url, other)):
        computed = validator.compute_signature(candidate, values, algorithm)
        if hmac.compare_digest(computed.encode(), signature):
            return True
    return False


def signature_problem(keys: SigningKeys, url: str, params: Mapping[str, str] | _Form,
                      signature: str | None, settings: str | None = None) -> str:
    """'' when ``signature`` (X-Twilio-Signature) is Twilio's for ``url`` and ``params`` (a
    dict, or a multi-valued form such as werkzeug's) with one of ``keys``; else why not,
    for the log: never a secret. ``settings``: X-Twilio-Webhooks-Signature-Settings, which
    says the webhook was signed with a shared key, and with which algorithm."""
    if not signature:
        return "no signature"
    if settings:
        algorithm = get_signature_algorithm(settings)
        if algorithm.upper() not in (HMAC_SHA1, HMAC_SHA256):
            return f"unsupported signature algorithm {algorithm[:40]!r}"
        sid = _shared_key_sid(settings)
        secret = keys.shared.get(sid) if sid else (
            next(iter(keys.shared.values())) if len(keys.shared) == 1 else None)
        if secret is None:
            return (f"signed with webhook shared key {sid[:40]!r}, which "
                    "IVR_TWILIO_WEBHOOK_KEYS does not hold")
        candidates: tuple[str, ...] = (secret,)
    else:
        algorithm, candidates = HMAC_SHA1, keys.auth_tokens
        if not candidates:
            return "signed with the auth token, and IVR_TWILIO_AUTH_TOKEN is not set"
    values = _SignedValues(params)
    given = signature.encode(errors="replace")
    if any(_signed_with(secret, url, values, given, algorithm) for secret in candidates):
        return ""
    return "signature does not match"


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
