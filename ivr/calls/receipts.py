"""Text-message receipts through Twilio's REST API (masked data only)."""

from __future__ import annotations

from ivr.calls.twilio_api import TwilioApiError, has_credentials
from ivr.calls.twilio_api import send_text as _send
from ivr.config import AppConfig


class ReceiptError(Exception):
    """The text could not be sent."""


def can_send(config: AppConfig) -> bool:
    """Whether credentials and a sender are configured."""
    return has_credentials(config) and bool(config.sms_from)


def send_text(config: AppConfig, to_number: str, body: str) -> str:
    """Send ``body`` to ``to_number``; return the message SID or raise ReceiptError."""
    if not can_send(config):
        raise ReceiptError("text receipts need IVR_TWILIO_ACCOUNT_SID and IVR_SMS_FROM")
    try:
        return _send(config, to_number, body)
    except TwilioApiError as exc:
        raise ReceiptError(str(exc)) from exc
