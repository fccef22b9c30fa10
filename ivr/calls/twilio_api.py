"""Twilio's REST API, for the few things the line asks of it during a call: text receipts
and recording the spoken authorization of a bank debit. Every call has a short timeout
because a caller is waiting on the line."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeVar

from twilio.base.exceptions import TwilioException, TwilioRestException
from twilio.http.http_client import TwilioHttpClient
from twilio.rest import Client

from connectors.phones import mask_phone
from ivr.config import AppConfig

log = logging.getLogger(__name__)
T = TypeVar("T")

TIMEOUT = 5.0


class TwilioApiError(Exception):
    """The request failed; the message says why (never with personal data)."""


def has_credentials(config: AppConfig) -> bool:
    """Whether the account SID and auth token are configured."""
    return bool(config.twilio_account_sid and config.twilio_auth_token)


def client(config: AppConfig, auth_token: str = "") -> Client:
    """A client with a timeout, pointed at IVR_TWILIO_API_BASE_URL when set (with the auth
    token, or ``auth_token``)."""
    api = Client(config.twilio_account_sid, auth_token or config.twilio_auth_token,
                 http_client=TwilioHttpClient(timeout=TIMEOUT))
    if config.twilio_api_base_url:
        # A regional or test endpoint; the library has no constructor option for it.
        api.api.base_url = config.twilio_api_base_url.rstrip("/")
    return api


def _with_client(config: AppConfig, request: Callable[[Client], T]) -> T:
    """``request`` with the auth token; once more with IVR_TWILIO_SECONDARY_AUTH_TOKEN when
    Twilio refused the token (401: nothing was done), as it does between its promotion of
    the secondary token and this node's restart with it (docs/deployment.md)."""
    try:
        return request(client(config))
    except TwilioRestException as exc:
        if exc.status != 401 or not config.twilio_secondary_auth_token:
            raise
    log.warning("Twilio refused IVR_TWILIO_AUTH_TOKEN; used IVR_TWILIO_SECONDARY_AUTH_TOKEN: "
                "make it IVR_TWILIO_AUTH_TOKEN")
    return request(client(config, config.twilio_secondary_auth_token))


def send_text(config: AppConfig, to_number: str, body: str) -> str:
    """Send ``body`` to ``to_number``; return the message SID."""
    sender = ({"messaging_service_sid": config.sms_from} if config.sms_from.startswith("MG")
              else {"from_": config.sms_from})
    try:
        message = _with_client(config, lambda api: api.messages.create(
            to=to_number, body=body, **sender))
    except (TwilioException, OSError) as exc:
        log.warning("text receipt failed", extra={"fields": {
            "to": mask_phone(to_number), "error": type(exc).__name__}})
        raise TwilioApiError(str(exc)[:200]) from exc
    sid = str(message.sid)
    log.info("text receipt sent", extra={"fields": {"to": mask_phone(to_number), "sid": sid}})
    return sid


def start_recording(config: AppConfig, call_sid: str) -> str:
    """Start recording the live call (both sides); return the recording SID."""
    try:
        recording = _with_client(config, lambda api: api.calls(call_sid).recordings.create(
            recording_channels="dual", recording_track="both"))
    except (TwilioException, OSError) as exc:
        log.warning("could not start recording", extra={"fields": {
            "call_sid": call_sid, "error": type(exc).__name__}})
        raise TwilioApiError(str(exc)[:200]) from exc
    return str(recording.sid)


def stop_recording(config: AppConfig, call_sid: str, recording_sid: str) -> None:
    """Stop a recording started with start_recording."""
    try:
        _with_client(config, lambda api: api.calls(call_sid).recordings(recording_sid).update(
            status="stopped"))
    except (TwilioException, OSError) as exc:
        log.warning("could not stop recording", extra={"fields": {
            "call_sid": call_sid, "recording_sid": recording_sid,
            "error": type(exc).__name__}})
        raise TwilioApiError(str(exc)[:200]) from exc


def start_payment(config: AppConfig, call_sid: str, idempotency_key: str, status_callback: str,
                  **options: str | bool) -> str:
    """Start an agent-assisted Payments session on the live call; return its SID (PK...).

    ``options`` are twilio's ``payments.create`` keywords (charge_amount, payment_method...).
    """
    try:
        payment = _with_client(config, lambda api: api.calls(call_sid).payments.create(
            idempotency_key=idempotency_key, status_callback=status_callback, **options))
    except (TwilioException, OSError) as exc:
        log.warning("could not start a payment session", extra={"fields": {
            "call_sid": call_sid, "error": type(exc).__name__}})
        raise TwilioApiError(str(exc)[:200]) from exc
    return str(payment.sid)


def update_payment(config: AppConfig, call_sid: str, payment_sid: str, idempotency_key: str,
                   status_callback: str, *, capture: str | None = None,
                   status: str | None = None) -> None:
    """Ask the caller for one field (``capture``), or end the session (``status``: complete
    or cancel)."""
    options = {"capture": capture} if capture else {"status": status}
    try:
        _with_client(config, lambda api: api.calls(call_sid).payments(payment_sid).update(
            idempotency_key=idempotency_key, status_callback=status_callback, **options))
    except (TwilioException, OSError) as exc:
        log.warning("could not update a payment session", extra={"fields": {
            "call_sid": call_sid, "payment_sid": payment_sid, **options,
            "error": type(exc).__name__}})
        raise TwilioApiError(str(exc)[:200]) from exc
