"""The floor for a webhook: a bare Flask app that checks the Twilio signature and answers a
constant ~1 KB <Gather>, served by bench/load.py under the same gunicorn settings as the line.

No database, no logging, no templating: what any webhook app pays (gunicorn, Flask, the form,
the HMAC) and nothing more.
"""

from __future__ import annotations

import os

from flask import Flask, Response, abort, request
from twilio.request_validator import RequestValidator

_validator = RequestValidator(os.environ.get("IVR_TWILIO_AUTH_TOKEN", ""))
_SAY = ("Thank you for calling. For your account balance, press 1. To make a payment, press 2. "
        "For your usage and due dates, press 3. To hear this again, press 9. "
        "For a representative, press 0. ")
# About 1 KB: two sentences, a question, the action URL (what the line's menus answer).
BODY = ('<?xml version="1.0" encoding="UTF-8"?><Response><Gather action="/voice/step/main_menu"'
        ' actionOnEmptyResult="true" finishOnKey="" input="dtmf" method="POST" numDigits="1"'
        ' timeout="6"><Say language="en-US" voice="Polly.Joanna">' + _SAY * 2
        + '</Say></Gather><Redirect method="POST">/voice/step/main_menu</Redirect></Response>')

app = Flask(__name__)


@app.post("/voice/<path:_rest>")
def voice(_rest: str) -> Response:
    """Any webhook: 403 unless signed, then the constant <Gather>."""
    if not _validator.validate(request.url, request.form,
                               request.headers.get("X-Twilio-Signature", "")):
        abort(403)
    return Response(BODY, mimetype="text/xml")


@app.get("/healthz")
def healthz() -> Response:
    """Ready."""
    return Response("ok")
