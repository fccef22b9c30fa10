"""How a webhook reaches the app: in process through Flask's test client, or over HTTP to a
running line, signed either way as Twilio signs it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Protocol
from urllib.parse import urljoin, urlsplit

from twilio.request_validator import (  # type: ignore[import-untyped, unused-ignore]
    HMAC_SHA256,
    SIGNATURE_HEADER,
    SIGNATURE_SETTINGS_HEADER,
    RequestValidator,
)

if TYPE_CHECKING:
    import flask
    import requests


class Transport(Protocol):
    """Delivers one signed webhook POST and returns (HTTP status, body)."""

    def post(self, url: str, params: Mapping[str, str]) -> tuple[int, str]: ...


def twilio_signature(auth_token: str, url: str, params: Mapping[str, str]) -> str:
    """The X-Twilio-Signature Twilio would send for a POST of ``params`` to ``url``."""
    return str(RequestValidator(auth_token).compute_signature(url, dict(params)))


def shared_key_headers(key_sid: str, secret: str, url: str,
                       params: Mapping[str, str]) -> dict[str, str]:
    """The headers of a webhook a Twilio Webhook Rule signs with a shared key (HMAC-SHA256)."""
    signature = RequestValidator(secret).compute_signature(url, dict(params), HMAC_SHA256)
    return {SIGNATURE_HEADER: str(signature),
            SIGNATURE_SETTINGS_HEADER: f"key={key_sid},algorithm={HMAC_SHA256}"}


class FlaskTransport:
    """Posts webhooks in-process through a Flask app's test client."""

    def __init__(self, app: flask.Flask, auth_token: str,
                 base_url: str = "http://localhost") -> None:
        self.app = app
        self.auth_token = auth_token
        self.base_url = base_url
        self.client = app.test_client()

    def post(self, url: str, params: Mapping[str, str]) -> tuple[int, str]:
        """POST ``params`` to ``url`` (absolute, or relative to base_url), signed."""
        url = urljoin(self.base_url, url)
        parts = urlsplit(url)
        origin = f"{parts.scheme}://{parts.netloc}"
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        headers = {
            SIGNATURE_HEADER: twilio_signature(self.auth_token, url, params),
            "User-Agent": "TwilioProxy/1.1",
        }
        response = self.client.post(path, data=dict(params), headers=headers, base_url=origin)
        return response.status_code, response.get_data(as_text=True)


class HttpTransport:
    """Posts webhooks over HTTP to a running server, as Twilio does."""

    def __init__(self, auth_token: str, timeout: float = 15.0,
                 shared_key: tuple[str, str] | None = None) -> None:
        """Signed with ``auth_token``, or with ``shared_key`` (SID, secret) when given."""
        import requests  # only this transport needs it

        self.auth_token = auth_token
        self.shared_key = shared_key
        # Twilio gives up connecting after 5 s and waits up to 15 s for the response.
        self.timeout = (min(5.0, timeout), timeout)
        self.session: requests.Session = requests.Session()
        self.session.headers["User-Agent"] = "TwilioProxy/1.1"

    def post(self, url: str, params: Mapping[str, str]) -> tuple[int, str]:
        """POST ``params`` to ``url``, signed; (0, reason) when no response came back."""
        import requests

        headers = (shared_key_headers(*self.shared_key, url, params) if self.shared_key
                   else {SIGNATURE_HEADER: twilio_signature(self.auth_token, url, params)})
        try:
            # Redirects are not followed: a 3xx is an application error, not a new document.
            response = self.session.post(url, data=dict(params), headers=headers,
                                         timeout=self.timeout, allow_redirects=False)
        except requests.RequestException as exc:
            # Twilio treats a refused connection or a timeout like any other failed webhook.
            return 0, f"{type(exc).__name__}: {exc}"
        return response.status_code, response.text

    def close(self) -> None:
        """Close the HTTP session."""
        self.session.close()

    def __enter__(self) -> HttpTransport:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
