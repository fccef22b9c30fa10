"""An offline stand-in for Twilio: drives whole calls against the app's webhooks.

``run_call`` plays Twilio's part of a phone call: it posts signed webhooks, reads the TwiML
that comes back (Say, Play, Pause, Gather, Redirect, Pay, Dial, Hangup) and asks a ``Caller``
what to press. Payments are simulated the way a Pay Connector in test mode answers, so anyone
can try the line without a Twilio account and tests can drive complete calls.
"""

from __future__ import annotations

import json
import re
import secrets
import string
import xml.etree.ElementTree as ET
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from email.utils import format_datetime
from typing import TYPE_CHECKING, Protocol
from urllib.parse import urljoin, urlsplit

from twilio.request_validator import (  # type: ignore[import-untyped, unused-ignore]
    RequestValidator,
)

if TYPE_CHECKING:
    import flask
    import requests

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

DTMF_KEYS = frozenset("0123456789*#")
SILENCE_TOKENS = frozenset({"", "-", "_"})

# Twilio's published test cards (plus the usual gateway test numbers) and their brands.
# 3065930009020004 is listed as Twilio's Diners test card although it fails the Luhn check
# (Stripe's is 3056930009020004), so test cards are matched before any Luhn check.
TEST_CARDS: dict[str, str] = {
    "4111111111111111": "visa",
    "4242424242424242": "visa",
    "4012888888881881": "visa",
    "5555555555554444": "mastercard",
    "5105105105105100": "mastercard",
    "378282246310005": "amex",
    "371449635398431": "amex",
    "6011111111111117": "discover",
    "6011000990139424": "discover",
    "3065930009020004": "diners-club",
    "3056930009020004": "diners-club",
    "30569309025904": "diners-club",
    "3566002020360505": "jcb",
    "3530111333300000": "jcb",
}
DECLINED_CARD = "4000000000000002"
TEST_BANK_ACCOUNTS = frozenset({"12345678", "123456789"})
CLOSED_BANK_ACCOUNT = "000000000"
TEST_ROUTING_NUMBER = "121000248"
TEST_EXPIRATION = "1230"
TEST_POSTAL_CODE = "94109"

_AMOUNT_RE = re.compile(r"\d+(?:\.\d{1,2})?")
_MAX_AMOUNT = Decimal("1000000")

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


# ---------------------------------------------------------------------------------------------
# Transports: how a webhook reaches the app.


class Transport(Protocol):
    """Delivers one signed webhook POST and returns (HTTP status, body)."""

    def post(self, url: str, params: Mapping[str, str]) -> tuple[int, str]: ...


def twilio_signature(auth_token: str, url: str, params: Mapping[str, str]) -> str:
    """The X-Twilio-Signature Twilio would send for a POST of ``params`` to ``url``."""
    return str(RequestValidator(auth_token).compute_signature(url, dict(params)))


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
            "X-Twilio-Signature": twilio_signature(self.auth_token, url, params),
            "User-Agent": "TwilioProxy/1.1",
        }
        response = self.client.post(path, data=dict(params), headers=headers, base_url=origin)
        return response.status_code, response.get_data(as_text=True)


class HttpTransport:
    """Posts webhooks over HTTP to a running server, as Twilio does."""

    def __init__(self, auth_token: str, timeout: float = 15.0) -> None:
        import requests  # only this transport needs it

        self.auth_token = auth_token
        # Twilio gives up connecting after 5 s and waits up to 15 s for the response.
        self.timeout = (min(5.0, timeout), timeout)
        self.session: requests.Session = requests.Session()
        self.session.headers["User-Agent"] = "TwilioProxy/1.1"

    def post(self, url: str, params: Mapping[str, str]) -> tuple[int, str]:
        """POST ``params`` to ``url``, signed; (0, reason) when no response came back."""
        import requests

        headers = {"X-Twilio-Signature": twilio_signature(self.auth_token, url, params)}
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


# ---------------------------------------------------------------------------------------------
# Callers: who is on the other end of the line.


class Hangup(Exception):
    """Raised by a Caller to hang up."""


class Caller(Protocol):
    """The person on the phone.

    A caller may also define ``hear(event)``; run_call then hands it every transcript event
    as it happens (InteractiveCaller uses this to print the call live).
    """

    def press(self, spoken: list[str], gather: Mapping[str, str]) -> str | None:
        """Keys typed at a <Gather> (None = silence); raise Hangup to hang up."""
        ...

    def card(self, pay: Mapping[str, str], prompts: list[str]) -> str:
        """A card or bank account number, "*" to cancel, or "hangup"."""
        ...


def _check_keys(keys: str) -> None:
    bad = set(keys) - DTMF_KEYS
    if bad:
        raise ValueError(f"not phone keys: {''.join(sorted(bad))!r} in {keys!r}")


class ScriptedCaller:
    """Presses keys from a script: one token per <Gather>, one card per <Pay>."""

    def __init__(self, presses: Sequence[str],
                 cards: Sequence[str] = ("4111111111111111",),
                 bank_accounts: Sequence[str] = ("123456789",)) -> None:
        if isinstance(presses, str):
            # A bare string would be read one key per gather, which is never what was meant.
            raise TypeError("presses must be a sequence of tokens, e.g. ['1', '60614#']")
        if not cards or not bank_accounts:
            raise ValueError("cards and bank_accounts need at least one entry")
        for keys in presses:
            if keys not in SILENCE_TOKENS and keys != "hangup":
                _check_keys(keys)
        self.presses = list(presses)
        self.cards = list(cards)
        self.bank_accounts = list(bank_accounts)
        self.used = 0
        self.pays = {"credit-card": 0, "ach-debit": 0}
        self.ran_out = False

    def press(self, spoken: list[str], gather: Mapping[str, str]) -> str | None:
        """The next scripted token; hangs up when the script is used up."""
        if self.used >= len(self.presses):
            self.ran_out = True
            raise Hangup("the script ran out of presses")
        keys = self.presses[self.used]
        self.used += 1
        if keys == "hangup":
            raise Hangup("scripted hang-up")
        return None if keys in SILENCE_TOKENS else keys

    def card(self, pay: Mapping[str, str], prompts: list[str]) -> str:
        """The next card (or bank account for ACH); the last one repeats."""
        method = "ach-debit" if pay.get("paymentMethod") == "ach-debit" else "credit-card"
        numbers = self.bank_accounts if method == "ach-debit" else self.cards
        index = min(self.pays[method], len(numbers) - 1)
        self.pays[method] += 1
        return numbers[index]


# Shortcuts InteractiveCaller accepts at <Pay>, so test numbers never need printing in full.
_CARD_SHORTCUTS = {
    "": "4111111111111111",
    "visa": "4111111111111111",
    "mc": "5555555555554444",
    "mastercard": "5555555555554444",
    "amex": "378282246310005",
    "discover": "6011111111111117",
    "declined": DECLINED_CARD,
    "bad": "4111111111111112",
}
_ACCOUNT_SHORTCUTS = {"": "123456789", "closed": CLOSED_BANK_ACCOUNT, "bad": "11"}


class InteractiveCaller:
    """A person at a terminal: prints the call as it goes and reads keys."""

    def __init__(self, input_fn: Callable[[str], str] = input,
                 output_fn: Callable[[str], None] = print) -> None:
        self.input_fn = input_fn
        self.output_fn = output_fn
        self._heard = False

    def hear(self, event: Mapping[str, object]) -> None:
        """Print one transcript event (except the caller's own keys)."""
        self._heard = True
        if event.get("event") in ("press", "silence"):
            return  # the person just typed them
        line = format_event(event)
        if line:
            self.output_fn(line)

    def _ask(self, prompt: str) -> str | None:
        try:
            return self.input_fn(prompt).strip()
        except EOFError:
            return None

    def press(self, spoken: list[str], gather: Mapping[str, str]) -> str | None:
        """Ask for keys: blank = silence, h = hang up, end of input = hang up."""
        if not self._heard:
            # Used without run_call's live events: show what was said first.
            for text in spoken:
                self.output_fn(f"IVR: {text}")
        while True:
            raw = self._ask("keys> ")
            if raw is None or raw.lower() in ("h", "hangup"):
                raise Hangup("caller hung up")
            keys = raw.replace(" ", "")
            if keys in SILENCE_TOKENS:
                return None
            if set(keys) <= DTMF_KEYS:
                return keys
            self.output_fn("Use the keys 0-9, * and # (blank = silence, h = hang up).")

    def card(self, pay: Mapping[str, str], prompts: list[str]) -> str:
        """Explain the test numbers and ask for one."""
        if not self._heard:
            for text in prompts:
                self.output_fn(f"IVR: {text}")
        ach = pay.get("paymentMethod") == "ach-debit"
        if ach:
            shortcuts = _ACCOUNT_SHORTCUTS
            self.output_fn(
                "[Payment, test mode] Enter a bank account number. Enter alone = a test "
                "account ending 89 that succeeds; 'closed' = a closed account; 'bad' = an "
                "invalid number; '*' = cancel; 'h' = hang up. The routing number is filled in.")
            prompt = "account> "
        else:
            shortcuts = _CARD_SHORTCUTS
            self.output_fn(
                "[Payment, test mode] Enter a card number. Enter alone = Visa test card "
                "xxxx1111; 'mc' = Mastercard xxxx4444; 'amex' = Amex xxxx0005; 'discover' = "
                "xxxx1117; 'declined' = a declined card; 'bad' = an invalid number; '*' = "
                "cancel; 'h' = hang up. Expiry, security code and ZIP are filled in.")
            prompt = "card> "
        while True:
            raw = self._ask(prompt)
            if raw is None or raw.lower() in ("h", "hangup"):
                return "hangup"
            entry = re.sub(r"[\s-]", "", raw)
            if entry.lower() in shortcuts:
                return shortcuts[entry.lower()]
            if entry == "*" or entry.isdigit():
                return entry
            self.output_fn("Type digits only, a shortcut, '*' or 'h'.")


# ---------------------------------------------------------------------------------------------
# Results.


def mask_card(number: str) -> str:
    """A card number for display: "xxxx" and the last 4 digits."""
    return "xxxx" + number[-4:] if len(number) > 4 else "xxxx"


def _mask_account(number: str) -> str:
    return "*" * max(len(number) - 2, 0) + number[-2:]


def format_event(event: Mapping[str, object]) -> str | None:
    """One transcript event as a line for people (None for events not worth a line)."""
    kind = event.get("event")
    if kind == "say":
        return f"IVR: {event.get('text', '')}"
    if kind == "play":
        return f"IVR: [plays audio {event.get('url', '')}]"
    if kind == "press":
        return f"CALLER: pressed {event.get('digits') or '(no digits)'}"
    if kind == "silence":
        return "CALLER: (silence)"
    if kind == "pay":
        parts = [str(event.get(k)) for k in ("method", "amount", "card", "account")
                 if event.get(k)]
        outcome = [str(event.get(k)) for k in ("result", "confirmation", "error") if event.get(k)]
        return f"[payment {' '.join(parts)}: {' '.join(outcome)}]"
    if kind == "dial":
        return f"[transfers the call to {event.get('number')}]"
    if kind == "hangup":
        who = "the caller" if event.get("by") == "caller" else "the line"
        return f"[call ended by {who}]"
    if kind == "error":
        return (f"[application error (HTTP {event.get('status')}): {event.get('detail')}; "
                "Twilio would say 'An application error has occurred' and hang up]")
    return None


@dataclass
class CallResult:
    """What happened on one simulated call."""

    call_sid: str
    events: list[dict[str, object]]
    ended_by: str
    # HTTP status of the final call status callback (None when none was posted).
    status_callback_status: int | None = field(default=None)

    def said(self) -> str:
        """Everything the line said, one <Say> per line."""
        return "\n".join(str(e["text"]) for e in self.events if e.get("event") == "say")

    def to_json(self) -> str:
        """The result as JSON."""
        return json.dumps({"call_sid": self.call_sid, "ended_by": self.ended_by,
                           "status_callback_status": self.status_callback_status,
                           "events": self.events}, indent=2)


# ---------------------------------------------------------------------------------------------
# The call engine.


def _sid(prefix: str) -> str:
    return prefix + secrets.token_hex(16)


def _confirmation_code() -> str:
    alphabet = string.ascii_uppercase + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(10))


def _flatten(element: ET.Element) -> str:
    """Text of a <Say> with its SSML children, whitespace collapsed."""
    return " ".join("".join(element.itertext()).split())


def _luhn_ok(number: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(number)):
        digit = int(ch)
        if i % 2:
            digit = digit * 2 - 9 if digit > 4 else digit * 2
        total += digit
    return total % 10 == 0


def _card_brand(number: str) -> str | None:
    """The brand a card number's prefix and length belong to (None if none)."""
    n = len(number)
    if number.startswith(("34", "37")):
        return "amex" if n == 15 else None
    if number.startswith("4"):
        return "visa" if n in (13, 16, 19) else None
    if 51 <= int(number[:2]) <= 55 or 2221 <= int(number[:4]) <= 2720:
        return "mastercard" if n == 16 else None
    if number.startswith(("6011", "65")) or 644 <= int(number[:3]) <= 649:
        return "discover" if 16 <= n <= 19 else None
    if 3528 <= int(number[:4]) <= 3589:
        return "jcb" if 16 <= n <= 19 else None
    if number.startswith(("36", "38", "39", "3095")) or 300 <= int(number[:3]) <= 305:
        return "diners-club" if 14 <= n <= 19 else None
    return None


def _valid_amount(amount: str) -> bool:
    if not _AMOUNT_RE.fullmatch(amount):
        return False
    try:
        return Decimal(amount) <= _MAX_AMOUNT
    except InvalidOperation:  # pragma: no cover - the regex already rules this out
        return False


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
            _check_keys(token)
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
        if amount and not _valid_amount(amount):
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
                result.update(self.ach(entry, attrs, event))
            else:
                result.update(self.charge(entry, pay, event))
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

    def charge(self, entry: str, pay: ET.Element, event: dict[str, object]) -> dict[str, str]:
        """Pay Connector (test mode) answer for a card entry."""
        special = _special_result(entry)
        if special:
            return special
        if not entry.isdigit():
            return {"Result": "too-many-failed-attempts", "PaymentError": "invalid-card-number"}
        event["card"] = mask_card(entry)
        valid_types = (pay.get("validCardTypes") or "visa mastercard amex").split()
        brand = TEST_CARDS.get(entry) or (_card_brand(entry) if _luhn_ok(entry) else None)
        if brand is None:
            return {"Result": "too-many-failed-attempts", "PaymentError": "invalid-card-number"}
        if brand not in valid_types:
            return {"Result": "too-many-failed-attempts", "PaymentError": "invalid-card-type"}
        event["card_type"] = brand
        # The caller goes on to the remaining steps before the connector is asked.
        self.prompts(pay, "expiration-date", brand)
        if pay.get("securityCode", "true").lower() != "false":
            self.prompts(pay, "security-code", brand)
        postal = pay.get("postalCode", "true")
        if postal.lower() == "true":
            self.prompts(pay, "postal-code", brand)
            postal = TEST_POSTAL_CODE
        self.prompts_processing(pay)
        self.spoken.clear()
        card = {"PaymentCardNumber": "xxxx-xxxx-xxxx-" + entry[-4:], "PaymentCardType": brand,
                "ExpirationDate": TEST_EXPIRATION}
        if postal.lower() != "false":
            card["PaymentCardPostalCode"] = postal
        if entry == DECLINED_CARD:
            return {**card, "Result": "payment-connector-error", "PaymentError": "card is declined",
                    "ConnectorError": "card_declined", "PayErrorCode": "64009"}
        if entry not in TEST_CARDS:
            # In test mode Twilio only lets published test cards through (error 64022).
            return {**card, "Result": "payment-connector-error",
                    "PaymentError": "invalid test card number (the connector is in test mode)",
                    "PayErrorCode": "64022"}
        return {**card, **self.success(pay.get("chargeAmount", ""))}

    def ach(self, entry: str, attrs: Mapping[str, str],
            event: dict[str, object]) -> dict[str, str]:
        """Pay Connector (test mode) answer for a bank account entry."""
        special = _special_result(entry)
        if special:
            return special
        if entry.isdigit():
            event["account"] = _mask_account(entry)
        if entry not in TEST_BANK_ACCOUNTS and entry != CLOSED_BANK_ACCOUNT:
            return {"Result": "too-many-failed-attempts",
                    "PaymentError": "invalid-bank-account-number"}
        account = {"BankAccountNumber": _mask_account(entry),
                   "BankRoutingNumber": TEST_ROUTING_NUMBER,
                   "BankAccountType": attrs.get("bankAccountType", "consumer-checking")}
        if entry == CLOSED_BANK_ACCOUNT:
            return {**account, "Result": "payment-connector-error",
                    "PaymentError": "account closed", "ConnectorError": "account_closed",
                    "PayErrorCode": "64009"}
        return {**account, **self.success(attrs.get("chargeAmount", ""))}

    def prompts_processing(self, pay: ET.Element) -> None:
        # Played while the connector works; there is no Twilio default for it.
        if any(p.get("for") == "payment-processing" for p in pay.iter("Prompt")):
            self.prompts(pay, "payment-processing")

    @staticmethod
    def success(amount: str) -> dict[str, str]:
        if amount and Decimal(amount) > 0:
            return {"Result": "success", "PaymentConfirmationCode": _confirmation_code()}
        # No charge amount: Twilio only tokenizes the card.
        return {"Result": "success", "PaymentToken": "tok_" + secrets.token_hex(12)}


def _special_result(entry: str) -> dict[str, str] | None:
    """Results for entries that are not numbers: cancel, hang-up, simulated failures."""
    if entry == "*":
        return {"Result": "caller-interrupted-with-star"}
    if entry == "hangup":
        return {"Result": "caller-hung-up"}
    if entry == "internal-error":
        return {"Result": "internal-error", "PaymentError": "internal error"}
    if entry == "validation-error":
        return {"Result": "validation-error", "PaymentError": "validation error"}
    return None


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
