"""An offline stand-in for Twilio: drives whole calls against the app's webhooks.

``run_call`` plays Twilio's part of a phone call: it posts signed webhooks, reads the TwiML
that comes back (Say, Play, Pause, Gather, Redirect, Pay, Dial, Hangup) and asks a ``Caller``
what to press. Payments are simulated the way a Pay Connector in test mode answers, so anyone
can try the line without a Twilio account and tests can drive complete calls.

By job: ``transport`` (how a webhook reaches the app), ``callers`` (who presses the keys),
``call`` (Twilio's side of the call), ``connector`` (the Pay Connector in test mode),
``transcript`` (what happened), ``demo`` (the demo accounts and call). No Flask is imported
unless a FlaskTransport is built on an app.
"""

from __future__ import annotations

from ivr.simulator.call import run_call
from ivr.simulator.callers import Caller, Hangup, InteractiveCaller, ScriptedCaller
from ivr.simulator.connector import mask_card
from ivr.simulator.transcript import CallResult, format_event
from ivr.simulator.transport import FlaskTransport, HttpTransport, Transport, twilio_signature

__all__ = [
    "CallResult",
    "Caller",
    "FlaskTransport",
    "Hangup",
    "HttpTransport",
    "InteractiveCaller",
    "ScriptedCaller",
    "Transport",
    "format_event",
    "mask_card",
    "run_call",
    "twilio_signature",
]
