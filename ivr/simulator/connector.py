"""The Pay Connector in test mode: which card and bank numbers succeed, which fail and how,
and the result parameters Twilio posts back for them."""

from __future__ import annotations

import re
import secrets
import string
import xml.etree.ElementTree as ET
from collections.abc import Callable, Mapping
from decimal import Decimal, InvalidOperation

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
# What a scripted caller enters unless told otherwise: a card and an account that succeed.
DEFAULT_CARD = "4111111111111111"
DEFAULT_BANK_ACCOUNT = "123456789"
TEST_BANK_ACCOUNTS = frozenset({"12345678", "123456789"})
CLOSED_BANK_ACCOUNT = "000000000"
TEST_ROUTING_NUMBER = "121000248"
TEST_EXPIRATION = "1230"
TEST_POSTAL_CODE = "94109"

_AMOUNT_RE = re.compile(r"\d+(?:\.\d{1,2})?")
_MAX_AMOUNT = Decimal("1000000")


def mask_card(number: str) -> str:
    """A card number for display: "xxxx" and the last 4 digits."""
    return "xxxx" + number[-4:] if len(number) > 4 else "xxxx"


def mask_bank_account(number: str) -> str:
    """A bank account number for display: stars and the last 2 digits."""
    return "*" * max(len(number) - 2, 0) + number[-2:]


def confirmation_code() -> str:
    """A confirmation code as the connector makes one up."""
    alphabet = string.ascii_uppercase + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(10))


def luhn_ok(number: str) -> bool:
    """Whether the number passes the Luhn check digit test."""
    total = 0
    for i, ch in enumerate(reversed(number)):
        digit = int(ch)
        if i % 2:
            digit = digit * 2 - 9 if digit > 4 else digit * 2
        total += digit
    return total % 10 == 0


def card_brand(number: str) -> str | None:
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


def valid_amount(amount: str) -> bool:
    """Whether <Pay> accepts ``amount`` as its chargeAmount (0.00 to 1,000,000.00)."""
    if not _AMOUNT_RE.fullmatch(amount):
        return False
    try:
        return Decimal(amount) <= _MAX_AMOUNT
    except InvalidOperation:  # pragma: no cover - the regex already rules this out
        return False


def special_result(entry: str) -> dict[str, str] | None:
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


def success(amount: str) -> dict[str, str]:
    """A successful charge (or, with no amount, a tokenized card)."""
    if amount and Decimal(amount) > 0:
        return {"Result": "success", "PaymentConfirmationCode": confirmation_code()}
    # No charge amount: Twilio only tokenizes the card.
    return {"Result": "success", "PaymentToken": "tok_" + secrets.token_hex(12)}


def charge_card(entry: str, pay: ET.Element, event: dict[str, object],
                say: Callable[[str, str | None], object]) -> dict[str, str]:
    """The answer for a card entry; ``say(step, brand)`` plays the <Prompt>s of the steps
    the caller goes through after the number."""
    special = special_result(entry)
    if special:
        return special
    if not entry.isdigit():
        return {"Result": "too-many-failed-attempts", "PaymentError": "invalid-card-number"}
    event["card"] = mask_card(entry)
    valid_types = (pay.get("validCardTypes") or "visa mastercard amex").split()
    brand = TEST_CARDS.get(entry) or (card_brand(entry) if luhn_ok(entry) else None)
    if brand is None:
        return {"Result": "too-many-failed-attempts", "PaymentError": "invalid-card-number"}
    if brand not in valid_types:
        return {"Result": "too-many-failed-attempts", "PaymentError": "invalid-card-type"}
    event["card_type"] = brand
    # The caller goes on to the remaining steps before the connector is asked.
    say("expiration-date", brand)
    if pay.get("securityCode", "true").lower() != "false":
        say("security-code", brand)
    postal = pay.get("postalCode", "true")
    if postal.lower() == "true":
        say("postal-code", brand)
        postal = TEST_POSTAL_CODE
    # Played while the connector works; there is no Twilio default for it.
    if any(p.get("for") == "payment-processing" for p in pay.iter("Prompt")):
        say("payment-processing", None)
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
    return {**card, **success(pay.get("chargeAmount", ""))}


def debit_bank(entry: str, attrs: Mapping[str, str], event: dict[str, object]) -> dict[str, str]:
    """The answer for a bank account entry."""
    special = special_result(entry)
    if special:
        return special
    if entry.isdigit():
        event["account"] = mask_bank_account(entry)
    if entry not in TEST_BANK_ACCOUNTS and entry != CLOSED_BANK_ACCOUNT:
        return {"Result": "too-many-failed-attempts",
                "PaymentError": "invalid-bank-account-number"}
    account = {"BankAccountNumber": mask_bank_account(entry),
               "BankRoutingNumber": TEST_ROUTING_NUMBER,
               "BankAccountType": attrs.get("bankAccountType", "consumer-checking")}
    if entry == CLOSED_BANK_ACCOUNT:
        return {**account, "Result": "payment-connector-error",
                "PaymentError": "account closed", "ConnectorError": "account_closed",
                "PayErrorCode": "64009"}
    return {**account, **success(attrs.get("chargeAmount", ""))}
