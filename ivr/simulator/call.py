"""Twilio's side of a call: posts the webhooks, plays the TwiML that comes back (Say, Play,
Pause, Gather, Redirect, Pay, Dial, Hangup) and asks the caller what to press."""

from __future__ import annotations

import secrets
import xml.etree.ElementTree as ET
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime
from urllib.parse import urljoin, urlsplit

from ivr.simulator.callers import Caller, Hangup, check_keys
from ivr.simulator.connector import charge_card, debit_bank, valid_amount
from ivr.simulator.transcript import CallResult
from ivr.simulator.transport import Transport

# What Twilio says when a <Pay> has no <Prompt> for a step (wording approximated).
_DEFAULT_PROMPTS: dict[str, str] = {
    "payment-card-number": "Please enter your credit card number.",
    "expiration-date": "Please enter your expiration date, two digits for the month and two "
    "digits for the year.",
    "security-code": "Please enter your security code.",
    "postal-code": "Please enter your zip code.",
    "bank-routing-number": "Please enter your bank routing number.",
    "bank-account-number": "Please enter your bank account number.",
}


def _sid(prefix: str) -> str:
    return prefix + secrets.token_hex(16)


def _flatten(element: ET.Element) -> str:
    """Text of a <Say> with its SSML children, whitespace collapsed."""
    return " ".join("".join(element.itertext()).split())


@dataclass
class _Goto:
    url: str
    params: dict[str, str]


@dataclass
class _End:
    by: str  # "line", "caller" or "error"


_Next = _Goto | _End | None  # None: carry on with the next verb


class _Unsupported(Exception):
    """A verb the simulator cannot play; the call ends with an error."""


class _Call:
    """One call in progress: the state run_call threads through the verbs."""

    def __init__(self, transport: Transport, caller: Caller, call_params: dict[str, str],
                 max_requests: int) -> None:
        self.transport = transport
        self.caller = caller
        self.call_params = call_params
        self.max_requests = max_requests
        self.requests = 0
        self.events: list[dict[str, object]] = []
        self.spoken: list[str] = []  # said since the caller last acted
        self.seconds = 1.0  # simulated call time; the first ring
        hear = getattr(caller, "hear", None)
        self.hear: Callable[[dict[str, object]], None] | None = hear if callable(hear) else None

    # -- bookkeeping ---------------------------------------------------------------------------

    def emit(self, event: dict[str, object]) -> None:
        self.events.append(event)
        if self.hear is not None:
            self.hear(event)

    def say(self, element: ET.Element, language: str | None) -> None:
        text = _flatten(element)
        if not text:
            return
        event: dict[str, object] = {"event": "say", "text": text,
                                    "language": element.get("language") or language or "en-US"}
        if element.get("voice"):
            event["voice"] = element.get("voice")
        self.emit(event)
        self.spoken.append(text)
        self.seconds += max(1.0, len(text.split()) / 2.5)  # about 150 words a minute

    def params(self, **extra: str) -> dict[str, str]:
        return {**self.call_params, **extra}

    def error(self, status: int, detail: str) -> _End:
        self.emit({"event": "error", "status": status, "detail": detail})
        return _End("error")

    def side_post(self, url: str, params: Mapping[str, str]) -> int:
        """A callback whose answer Twilio ignores (status callbacks)."""
        status, _body = self.transport.post(url, params)
        return status

    # -- documents -----------------------------------------------------------------------------

    def run(self, start: _Goto) -> str:
        step: _Goto | _End = start
        while isinstance(step, _Goto):
            step = self.request(step.url, step.params)
        return step.by

    def request(self, url: str, params: Mapping[str, str]) -> _Goto | _End:
        """Fetch one TwiML document and play it; where the call goes next."""
        if self.requests >= self.max_requests:
            return self.error(0, f"more than {self.max_requests} webhook requests "
                                 "(a redirect loop?)")
        self.requests += 1
        status, body = self.transport.post(url, params)
        if status != 200:
            snippet = " ".join(body.split())[:200]
            return self.error(status, f"HTTP {status} from {url}: {snippet}".rstrip(": "))
        try:
            # The document comes from the app under test, not from strangers, and expat
            # refuses external entities; defusedxml would be an extra dependency for nothing.
            root = ET.fromstring(body)  # noqa: S314
        except ET.ParseError as exc:
            return self.error(status, f"invalid TwiML from {url}: {exc}")
        if root.tag != "Response":
            return self.error(status, f"TwiML from {url} has <{root.tag}>, not <Response>, "
                                      "at the top")
        try:
            return self.document(url, root)
        except _Unsupported as exc:
            return self.error(status, f"{exc} in TwiML from {url}")
        except Hangup as exc:
            event: dict[str, object] = {"event": "hangup", "by": "caller"}
            if str(exc):
                event["reason"] = str(exc)
            self.emit(event)
            return _End("caller")

    def document(self, url: str, root: ET.Element) -> _Goto | _End:
        for verb in root:
            nxt = self.verb(url, verb)
            if nxt is not None:
                return nxt
        # Twilio hangs up when a document runs out of verbs.
        self.emit({"event": "hangup", "by": "line", "reason": "end of document"})
        return _End("line")

    def verb(self, url: str, verb: ET.Element) -> _Next:
        tag = verb.tag
        if tag in ("Say", "Play", "Pause"):
            self.media(verb)
            return None
        if tag == "Gather":
            return self.gather(url, verb)
        if tag == "Redirect":
            target = (verb.text or "").strip() or url
            return _Goto(urljoin(url, target), self.params())
        if tag == "Pay":
            return self.pay(url, verb)
        if tag == "Dial":
            return self.dial(url, verb)
        if tag in ("Hangup", "Reject"):
            self.emit({"event": "hangup", "by": "line"})
            return _End("line")
        raise _Unsupported(f"unsupported verb <{tag}>")

    def media(self, element: ET.Element, language: str | None = None) -> None:
        """Say, Play or Pause (at top level or nested in Gather or a Pay <Prompt>)."""
        if element.tag == "Say":
            self.say(element, language)
        elif element.tag == "Play":
            event: dict[str, object] = {"event": "play", "url": (element.text or "").strip()}
            if element.get("digits"):
                event["digits"] = element.get("digits")
            self.emit(event)
            self.seconds += 3
        elif element.tag == "Pause":
            self.seconds += _int(element.get("length"), 1)
        else:
            raise _Unsupported(f"<{element.tag}> cannot be nested here")

    # -- Gather --------------------------------------------------------------------------------

    def gather(self, url: str, gather: ET.Element) -> _Next:
        for child in gather:
            self.media(child)
        token = self.caller.press(list(self.spoken), dict(gather.attrib))
        self.spoken.clear()
        finish_key = gather.get("finishOnKey", "#")[:1]
        num_digits = _int(gather.get("numDigits"), 0)
        if token is None:
            self.emit({"event": "silence"})
            self.seconds += _int(gather.get("timeout"), 5)
            digits, finished = "", ""
        else:
            check_keys(token)
            digits, finished = "", ""
            for key in token:
                if finish_key and key == finish_key:
                    finished = key
                    break
                digits += key
                if num_digits and len(digits) >= num_digits:
                    break  # Twilio submits as soon as numDigits keys are in
            self.emit({"event": "press", "digits": digits})
            self.seconds += 1 + len(token) / 2
        if not digits and gather.get("actionOnEmptyResult", "false").lower() != "true":
            return None  # Twilio moves on to the verb after the <Gather>
        action = urljoin(url, gather.get("action") or url)
        return _Goto(action, self.params(Digits=digits, FinishedOnKey=finished))

    # -- Dial ----------------------------------------------------------------------------------

    def dial(self, url: str, dial: ET.Element) -> _Next:
        nouns = [(child.text or "").strip() for child in dial]
        number = next((n for n in nouns if n), (dial.text or "").strip())
        self.emit({"event": "dial", "number": number})
        self.seconds += 60
        if not dial.get("action"):
            return None
        return _Goto(urljoin(url, dial.get("action", "")), self.params(
            DialCallStatus="completed", DialCallDuration="60", DialCallSid=_sid("CA")))

    # -- Pay -----------------------------------------------------------------------------------

    def prompts(self, pay: ET.Element, step: str, brand: str | None = None) -> list[str]:
        """Say the first-attempt <Prompt>s for one capture step; returns their texts."""
        language = pay.get("language")
        said: list[str] = []
        found = False
        for prompt in pay.iter("Prompt"):
            if prompt.get("for") != step or prompt.get("errorType"):
                continue
            if "1" not in (prompt.get("attempt") or "1").split():
                continue
            card_types = prompt.get("cardType")
            if card_types and (brand is None or brand not in card_types.split()):
                continue
            found = True
            for child in prompt:
                before = len(self.spoken)
                self.media(child, language)
                said.extend(self.spoken[before:])
        if not found and step in _DEFAULT_PROMPTS:
            text = _DEFAULT_PROMPTS[step]
            self.emit({"event": "say", "text": text, "language": language or "en-US",
                       "source": "twilio-default"})
            self.spoken.append(text)
            said.append(text)
        return said

    def pay(self, url: str, pay: ET.Element) -> _Goto | _End:
        attrs = dict(pay.attrib)
        method = attrs.get("paymentMethod", "credit-card")
        amount = attrs.get("chargeAmount", "")
        action = urljoin(url, attrs.get("action") or url)
        result: dict[str, str] = {"PaymentMethod": method}
        event: dict[str, object] = {"event": "pay", "method": method, "amount": amount}
        entry = ""
        if amount and not valid_amount(amount):
            # Twilio rejects the verb before collecting anything.
            result.update(Result="validation-error", PaymentError=(
                f"paymentAmount='{amount}' (not a number between 0.00 - 1,000,000.00)"))
        else:
            steps = (["bank-routing-number", "bank-account-number"] if method == "ach-debit"
                     else ["payment-card-number"])
            said: list[str] = []
            for step in steps:
                said.extend(self.prompts(pay, step))
            try:
                entry = self.caller.card(attrs, said).strip()
            except Hangup:
                entry = "hangup"
            self.spoken.clear()
            self.seconds += 30
            if method == "ach-debit":
                result.update(debit_bank(entry, attrs, event))
            else:
                result.update(charge_card(
                    entry, pay, event, lambda step, brand: self.prompts(pay, step, brand)))
                self.spoken.clear()  # the caller has answered the steps after the number
        event["result"] = result["Result"]
        if "PaymentConfirmationCode" in result:
            event["confirmation"] = result["PaymentConfirmationCode"]
        if "PaymentError" in result:
            event["error"] = result["PaymentError"]
        self.emit(event)
        if attrs.get("statusCallback"):
            capture = "bank-account-number" if method == "ach-debit" else "payment-card-number"
            self.side_post(urljoin(url, attrs["statusCallback"]), {
                "AccountSid": self.call_params["AccountSid"],
                "CallSid": self.call_params["CallSid"], "Sid": _sid("PK"),
                "PaymentMethod": method, "ChargeAmount": amount, "Capture": capture,
                "PartialResult": "false"})
        params = self.params(**result)
        if entry == "hangup":
            # The caller is gone: Twilio still reports the result, but nobody hears the reply.
            self.requests += 1
            self.transport.post(action, params)
            self.emit({"event": "hangup", "by": "caller"})
            return _End("caller")
        return _Goto(action, params)


def _int(value: str | None, default: int) -> int:
    try:
        return int(value) if value is not None else default
    except ValueError:
        return default


def _join(base_url: str, path: str) -> str:
    """base_url + path, keeping any path prefix of base_url; absolute paths win."""
    if urlsplit(path).scheme:
        return path
    return base_url.rstrip("/") + "/" + path.lstrip("/")


def run_call(transport: Transport, caller: Caller, *, base_url: str = "http://localhost",
             from_number: str = "+15555550123", to_number: str = "+15555550100",
             incoming_path: str = "/voice/incoming", status_path: str = "/voice/status",
             auth_token_account_sid: str | None = None, max_requests: int = 300) -> CallResult:
    """Simulate one inbound call from start to hang-up.

    ``auth_token_account_sid`` is the AccountSid to send (a random one when None);
    ``status_path`` "" skips the final status callback. ``max_requests`` caps the TwiML
    requests so a redirect loop ends as an error instead of running forever.
    """
    call_sid = _sid("CA")
    call_params = {
        "CallSid": call_sid, "AccountSid": auth_token_account_sid or _sid("AC"),
        "From": from_number, "To": to_number, "Caller": from_number, "Called": to_number,
        "CallStatus": "in-progress", "Direction": "inbound", "ApiVersion": "2010-04-01",
    }
    call = _Call(transport, caller, call_params, max_requests)
    ended_by = call.run(_Goto(_join(base_url, incoming_path), dict(call_params)))
    status: int | None = None
    if status_path:
        status = call.side_post(_join(base_url, status_path), {
            **call_params, "CallStatus": "completed", "CallDuration": str(round(call.seconds)),
            "Timestamp": format_datetime(datetime.now(UTC)),
            "CallbackSource": "call-progress-events", "SequenceNumber": "0"})
    return CallResult(call_sid=call_sid, events=call.events, ended_by=ended_by,
                      status_callback_status=status)
