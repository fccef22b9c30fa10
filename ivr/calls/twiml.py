"""The one place that turns flow steps into TwiML, through twilio's builder."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any

from twilio.twiml import GenericNode, TwiML
from twilio.twiml.voice_response import VoiceResponse

from connectors.amounts import cents_to_text
from ivr.calls.steps import Ask, Hangup, PayCapture, Silent, Speech, Step, Transfer
from ivr.prompts.catalog import Catalog

_XML_NS = "{http://www.w3.org/XML/1998/namespace}"

# <Pay> <Prompt for=...> wording per field: (prompt id, extra <Prompt> attributes).
CARD_PROMPTS: tuple[tuple[str, dict[str, str]], ...] = (
    ("pay.card_number", {"for_": "payment-card-number"}),
    ("pay.card_number_invalid", {"for_": "payment-card-number",
                                 "error_type": "invalid-card-number timeout"}),
    ("pay.card_type_invalid", {"for_": "payment-card-number", "error_type": "invalid-card-type"}),
    ("pay.expiration", {"for_": "expiration-date"}),
    ("pay.expiration_invalid", {"for_": "expiration-date", "error_type": "invalid-date timeout"}),
    ("pay.security_code", {"for_": "security-code"}),
    ("pay.security_code_amex", {"for_": "security-code", "card_type": "amex"}),
    ("pay.security_code_invalid", {"for_": "security-code",
                                   "error_type": "invalid-security-code timeout"}),
    ("pay.postal_code", {"for_": "postal-code"}),
    ("pay.postal_code_invalid", {"for_": "postal-code",
                                 "error_type": "invalid-postal-code timeout"}),
    ("pay.processing", {"for_": "payment-processing"}),
)
BANK_PROMPTS: tuple[tuple[str, dict[str, str]], ...] = (
    ("pay.routing_number", {"for_": "bank-routing-number"}),
    ("pay.routing_number_invalid", {"for_": "bank-routing-number",
                                    "error_type": "invalid-bank-routing-number timeout"}),
    ("pay.bank_account", {"for_": "bank-account-number"}),
    ("pay.bank_account_again", {"for_": "bank-account-number",
                                "require_matching_inputs": "true"}),
    ("pay.bank_account_mismatch", {"for_": "bank-account-number",
                                   "error_type": "input-matching-failed"}),
    ("pay.bank_account_invalid", {"for_": "bank-account-number",
                                  "error_type": "invalid-bank-account-number timeout"}),
    ("pay.processing", {"for_": "payment-processing"}),
)


class TwimlBuilder:
    """Builds responses for one request: knows the catalog, the language and the URLs."""

    def __init__(self, catalog: Catalog, lang: str, base_url: str, pay_connector: str,
                 audio_base: str = "/voice/audio") -> None:
        self.catalog = catalog
        self.lang = lang
        self.base_url = base_url.rstrip("/")
        self.pay_connector = pay_connector
        self.audio_base = audio_base

    def url(self, path: str) -> str:
        """Absolute when a public base URL is configured (required for <Pay>), else relative."""
        return f"{self.base_url}{path}" if self.base_url else path

    def build(self, step: Step) -> VoiceResponse:
        """The TwiML for one step."""
        response = VoiceResponse()
        if isinstance(step, Ask):
            self._ask(response, step)
        elif isinstance(step, Transfer):
            self.speak(response, step.speech)
            dial = response.dial(action=self.url("/voice/dial/done"), method="POST",
                                 timeout=30, answer_on_bridge=True)
            dial.number(step.number)
        elif isinstance(step, Hangup):
            self.speak(response, step.speech)
            response.hangup()
        elif isinstance(step, PayCapture):
            self._pay(response, step)
        elif isinstance(step, Silent):
            pass
        return response

    def speak(self, parent: Any, items: tuple[Speech, ...]) -> None:
        """One <Say> (or <Play> for recorded audio) per prompt, in that prompt's language."""
        settings = self.catalog.settings
        for item in items:
            lang = item.lang or self.lang
            rendered = self.catalog.render(item.prompt_id, lang, item.variant, **item.params)
            if rendered.audio:
                parent.play(self._audio_url(rendered.audio))
                continue
            voice = settings.voices.get(lang) or settings.voices[settings.default_language]
            say = parent.say(voice=voice.voice, language=voice.language)
            _append_ssml(say, rendered.ssml)

    def _audio_url(self, audio: str) -> str:
        if audio.startswith(("https://", "http://")):
            return audio
        return self.url(f"{self.audio_base}/{audio}")

    def _ask(self, response: VoiceResponse, step: Ask) -> None:
        action = self.url(f"/voice/step/{step.state}")
        gather = response.gather(
            action=action, method="POST", input="dtmf", timeout=step.timeout,
            num_digits=step.num_digits, finish_on_key=step.finish_on_key,
            action_on_empty_result=True,
        )
        self.speak(gather, step.speech)
        # Should a <Gather> ever fall through, the same URL with no Digits counts as silence.
        response.redirect(action, method="POST")

    def _pay_language(self, is_card: bool) -> str:
        """Twilio's own <Pay> wording: bank (ACH) capture exists in English variants only.

        Our <Prompt>s, in the caller's language, replace that wording for every step anyway.
        """
        language = self.catalog.settings.pay.language.get(self.lang, "en-US")
        if not is_card and not language.startswith("en-"):
            return "en-US"
        return language

    def _pay(self, response: VoiceResponse, step: PayCapture) -> None:
        pay_settings = self.catalog.settings.pay
        self.speak(response, step.speech)
        is_card = step.method == "credit-card"
        pay = response.pay(
            input="dtmf",
            action=self.url("/voice/pay/result"),
            status_callback=self.url("/voice/pay/status"),
            payment_connector=self.pay_connector or pay_settings.connector,
            payment_method=step.method,
            bank_account_type=None if is_card else (step.bank_account_type or "consumer-checking"),
            charge_amount=cents_to_text(step.charge_cents),
            currency=pay_settings.currency,
            description=step.description,
            language=self._pay_language(is_card),
            max_attempts=pay_settings.max_attempts,
            timeout=pay_settings.timeout_seconds,
            security_code=pay_settings.security_code if is_card else None,
            postal_code=pay_settings.postal_code if is_card else None,
            valid_card_types=" ".join(pay_settings.valid_card_types) if is_card else None,
        )
        for prompt_id, attrs in CARD_PROMPTS if is_card else BANK_PROMPTS:
            if not self.catalog.has(prompt_id, self.lang):
                continue
            prompt = pay.prompt(**attrs)
            self.speak(prompt, (Speech(prompt_id),))
        # If <Pay> ever ends without calling its action, treat it as a failed attempt.
        response.redirect(self.url("/voice/pay/fallback"), method="POST")




_DECLARATION = '<?xml version="1.0" encoding="UTF-8"?>'
_CDATA = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;"})
_ATTRIBUTE = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;",
                            "\r": "&#13;", "\n": "&#10;", "\t": "&#09;"})


def twiml_text(response: TwiML) -> str:
    """The response as the text Twilio gets: what twilio's ``to_xml`` writes, byte for byte
    (tests/test_twiml_text.py), in one walk of the tree. Its pass through ElementTree was a
    webhook's largest single cost after the database (about 240 Python calls)."""
    out = [_DECLARATION]
    _write(response, out)
    return "".join(out)


def _write(node: TwiML, out: list[str]) -> None:
    # twilio's rules: attributes sorted, booleans lower-case, a dict value as JSON; a string
    # before the first child element is the text, one after a child is that child's tail,
    # and a later string in the same place replaces the earlier one.
    if node.value and not isinstance(node.value, str):
        out.append(node.to_xml(xml_declaration=False))  # a JSON value: left to twilio
        return
    text = node.value or None
    children: list[list[Any]] = []  # [child, tail]
    for verb in node.verbs:
        if isinstance(verb, str):
            if children:
                children[-1][1] = verb
            else:
                text = verb
        else:
            children.append([verb, None])
    out.append("<" + node.name)
    for key in sorted(node.attrs):
        value = node.attrs[key]
        value = str(value).lower() if isinstance(value, bool) else str(value)
        out.append(f' {key}="{value.translate(_ATTRIBUTE)}"')
    if not text and not children:
        out.append(" />")
        return
    out.append(">")
    if text:
        out.append(text.translate(_CDATA))
    for child, tail in children:
        _write(child, out)
        if tail:
            out.append(tail.translate(_CDATA))
    out.append(f"</{node.name}>")


def _append_ssml(say: Any, ssml: str) -> None:
    """Copy prompt text with its SSML tags into a <Say>, node by node through the builder."""
    if "<" not in ssml and "&" not in ssml:
        say.append(ssml)  # plain words (most prompts): what parsing them would give
        return
    root = ET.fromstring(f"<speak>{ssml}</speak>")  # noqa: S314 - our own validated prompt text
    _copy_children(say, root)


def _copy_children(parent: Any, element: ET.Element) -> None:
    if element.text:
        parent.append(element.text)
    for child in element:
        node = GenericNode(child.tag, None)
        node.attrs = {k.replace(_XML_NS, "xml:"): v for k, v in child.attrib.items()}
        parent.nest(node)
        _copy_children(node, child)
        if child.tail:
            parent.append(child.tail)
