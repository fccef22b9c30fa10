"""Text-message receipts through Twilio's REST API (masked data only)."""

from __future__ import annotations

import logging

from twilio.base.exceptions import TwilioException
from twilio.http.http_client import TwilioHttpClient
from twilio.rest import Client

from connectors.phones import mask_phone
from ivr.config import AppConfig

log = logging.getLogger(__name__)

# Seconds: the caller is waiting on the line while we send.
SEND_TIMEOUT = 5.0


class ReceiptError(Exception):
    """The text could not be sent."""


def can_send(config: AppConfig) -> bool:
    """Whether credentials and a sender are configured."""
    return bool(config.twilio_account_sid and config.twilio_auth_token and config.sms_from)


def send_text(config: AppConfig, to_number: str, body: str) -> str:
    """Send ``body`` to ``to_number``; return the message SID or raise ReceiptError."""
    if not can_send(config):
        raise ReceiptError("text receipts need IVR_TWILIO_ACCOUNT_SID and IVR_SMS_FROM")
    client = Client(config.twilio_account_sid, config.twilio_auth_token,
                    http_client=TwilioHttpClient(timeout=SEND_TIMEOUT))
    if config.twilio_api_base_url:
        # A regional or test endpoint; the library has no constructor option for it.
        client.api.base_url = config.twilio_api_base_url.rstrip("/")
    sender = ({"messaging_service_sid": config.sms_from} if config.sms_from.startswith("MG")
              else {"from_": config.sms_from})
    try:
        message = client.messages.create(to=to_number, body=body, **sender)
    except (TwilioException, OSError) as exc:
        log.warning("text receipt failed", extra={"fields": {
            "to": mask_phone(to_number), "error": type(exc).__name__}})
        raise ReceiptError(str(exc)[:200]) from exc
    sid = str(message.sid)
    log.info("text receipt sent", extra={"fields": {"to": mask_phone(to_number), "sid": sid}})
    return sid
