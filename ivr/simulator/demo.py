"""Demo accounts and a scripted paid call, so anyone can try the line with no setup."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING

from connectors.amounts import cents_to_text, decimal_to_cents
from ivr.db import Database
from ivr.instance import default_database_url

if TYPE_CHECKING:
    from ivr.accounts.importer import ImportReport

DEMO_CALLER = "+15555550123"
DEMO_SPANISH_CALLER = "+15555550125"
# A landlord whose one phone number is on three accounts.
DEMO_LANDLORD = "+15555550130"
DEMO_LINE = "+15555550100"
# A paid call from the demo caller (English on file): confirm the account found by caller
# ID, ZIP, pay the full balance, by card; then hang up after the confirmation number.
DEMO_PRESSES = ("1", "60614", "1", "1")
DEMO_DATABASE_FILE = "demo.sqlite3"


# The per-account payment rules and arrangement inputs; blank unless a row says otherwise.
_RULES = ("ach_allowed", "card_allowed", "minimum_payment", "full_payment_required",
          "reconnect_amount", "service_start_date", "broken_arrangements_12m",
          "returned_payments_12m", "arrangement_eligible")


def demo_rows(today: date) -> list[dict[str, str]]:
    """Accounts for every path: current, pending disconnection (eligible for an arrangement),
    in credit, Spanish-speaking, disconnected (with a reconnection amount), and a landlord's
    three on one phone number (one refuses bank debits, one takes the full balance only)."""

    def d(days: int) -> str:
        return (today + timedelta(days=days)).isoformat()

    rules = {
        "4401005678": {"service_start_date": d(-800)},
        "4401007890": {"reconnect_amount": "185.40", "service_start_date": d(-400)},
        "4402000022": {"ach_allowed": "N", "returned_payments_12m": "1"},
        "4402000033": {"full_payment_required": "Y"},
    }
    return [{**row, **{name: rules.get(row["account_number"], {}).get(name, "")
                       for name in _RULES}}
            for row in _base_rows(d)]


def _base_rows(d: Callable[[int], str]) -> list[dict[str, str]]:
    return [
        {"account_number": "4401001234", "customer_name": "Alex Morgan",
         "phones": DEMO_CALLER, "service_zip": "60614", "pin": "2468",
         "balance_due": "123.45", "past_due_amount": "0.00", "due_date": d(14),
         "last_payment_amount": "98.10", "last_payment_date": d(-16), "status": "active",
         "disconnect_date": "", "usage_amount": "640", "usage_unit": "kWh",
         "usage_period_end": d(-6), "language": "en", "payment_allowed": "Y"},
        {"account_number": "4401005678", "customer_name": "Jordan Lee",
         "phones": "+15555550124", "service_zip": "60615", "pin": "1357",
         "balance_due": "312.80", "past_due_amount": "187.50", "due_date": d(-20),
         "last_payment_amount": "50.00", "last_payment_date": d(-45),
         "status": "disconnect_pending", "disconnect_date": d(5), "usage_amount": "1210",
         "usage_unit": "kWh", "usage_period_end": d(-6), "language": "en",
         "payment_allowed": "Y"},
        {"account_number": "4401009012", "customer_name": "Sam Rivera",
         "phones": "+15555550126", "service_zip": "60616", "pin": "",
         "balance_due": "-25.00", "past_due_amount": "0.00", "due_date": "",
         "last_payment_amount": "150.00", "last_payment_date": d(-3), "status": "active",
         "disconnect_date": "", "usage_amount": "3400", "usage_unit": "gallons",
         "usage_period_end": d(-6), "language": "en", "payment_allowed": "Y"},
        {"account_number": "4401003456", "customer_name": "Rosa Martínez",
         "phones": DEMO_SPANISH_CALLER, "service_zip": "60617", "pin": "",
         "balance_due": "76.20", "past_due_amount": "0.00", "due_date": d(10),
         "last_payment_amount": "80.00", "last_payment_date": d(-20), "status": "active",
         "disconnect_date": "", "usage_amount": "42", "usage_unit": "therms",
         "usage_period_end": d(-6), "language": "es", "payment_allowed": "Y"},
        {"account_number": "4401007890", "customer_name": "Casey Brooks",
         "phones": "+15555550127", "service_zip": "60618", "pin": "",
         "balance_due": "265.40", "past_due_amount": "265.40", "due_date": d(-35),
         "last_payment_amount": "40.00", "last_payment_date": d(-70),
         "status": "disconnected", "disconnect_date": "", "usage_amount": "0",
         "usage_unit": "kWh", "usage_period_end": d(-6), "language": "en",
         "payment_allowed": "Y"},
        *({"account_number": number, "customer_name": "Pat Kim", "phones": DEMO_LANDLORD,
           "service_zip": zip_code, "pin": "", "balance_due": balance,
           "past_due_amount": "0.00", "due_date": d(12), "last_payment_amount": "",
           "last_payment_date": "", "status": "active", "disconnect_date": "",
           "usage_amount": "", "usage_unit": "", "usage_period_end": "", "language": "en",
           "payment_allowed": "Y"}
          for number, zip_code, balance in (("4402000011", "60620", "45.10"),
                                            ("4402000022", "60621", "88.00"),
                                            ("4402000033", "60622", "120.75"))),
    ]


def demo_file(today: date) -> bytes:
    """The demo accounts as an account file in the default layout, with its trailer."""
    rows = demo_rows(today)
    out = io.StringIO()
    # The columns are the rows' own keys, in their order.
    writer = csv.DictWriter(out, fieldnames=list(rows[0]), lineterminator="\r\n")
    writer.writeheader()
    writer.writerows(rows)
    total = sum(decimal_to_cents(Decimal(r["balance_due"])) for r in rows)
    out.write(f"TRAILER,{len(rows)},{cents_to_text(total)}\r\n")
    return out.getvalue().encode("utf-8")


def seed(database: Database, today: date, pin_key: str) -> ImportReport:
    """Load (or refresh) the demo accounts through the normal import path."""
    # Imported here: the importer brings pyarrow (about 50 MB), and the served app reaches
    # this module through the console's call timings, which never seed.
    from ivr.accounts.importer import import_accounts

    return import_accounts(database, io.BytesIO(demo_file(today)), "demo accounts",
                           pin_key=pin_key)


def fresh_database_url(instance: Path) -> str:
    """The demo's own SQLite file in the instance folder, removed first: the scripted call
    expects the accounts as seeded."""
    demo = instance / DEMO_DATABASE_FILE
    for leftover in (demo, demo.with_name(f"{demo.name}-wal"), demo.with_name(f"{demo.name}-shm")):
        leftover.unlink(missing_ok=True)
    return default_database_url(instance, DEMO_DATABASE_FILE)
