"""Seed an initialised Tryton database for the IVR connector tests (run with Tryton's python).

Usage: ``python tryton_seed.py CONFIG_FILE DATABASE < spec.json`` where the spec is
``{"payment_method": "IVR", "users": [{"login": ..., "password": ..., "groups":
[...]}], "parties": [{"code": ..., "name": ..., "invoices":
[[days_ago, "123.45"], ...]}, ...]}``. It creates the company (USD), the chart of accounts,
a fiscal year around today with monthly periods and invoice sequences, the payment method on
the cash journal, and one customer party per entry with its invoices posted. It uses the
helpers Tryton ships for its own scenario tests, through proteus in-process (no server).
"""

from __future__ import annotations

import datetime
import json
import sys
from decimal import Decimal

from proteus import Model, config
from trytond.modules.account.tests.tools import create_chart, create_fiscalyear, get_accounts
from trytond.modules.account_invoice.tests.tools import set_fiscalyear_invoice_sequences
from trytond.modules.company.tests.tools import create_company


def main() -> None:
    """Create everything the connector tests post against; print one line per invoice."""
    config_file, database = sys.argv[1], sys.argv[2]
    spec = json.load(sys.stdin)
    config.set_trytond(database, config_file=config_file)
    # Tryton dates documents by the server's local day, as this does.
    today = datetime.date.today()  # noqa: DTZ011

    create_company()
    create_chart()
    fiscalyear = set_fiscalyear_invoice_sequences(create_fiscalyear(today=today))
    fiscalyear.click("create_period")
    accounts = get_accounts()

    journal_model = Model.get("account.journal")
    cash_journal, = journal_model.find([("type", "=", "cash")])
    method = Model.get("account.invoice.payment.method")(
        name=spec["payment_method"], journal=cash_journal,
        debit_account=accounts["cash"], credit_account=accounts["cash"])
    method.save()

    # A least-privilege user, as a biller would set one up for the IVR.
    group_model = Model.get("res.group")
    company_model = Model.get("company.company")
    company, = company_model.find()
    for entry in spec.get("users", []):
        user = Model.get("res.user")(login=entry["login"], name=entry["login"])
        user.password = entry["password"]
        for group_name in entry["groups"]:
            group, = group_model.find([("name", "=", group_name)])
            user.groups.append(group)
        user.companies.append(company)
        user.company = company
        user.save()

    party_model = Model.get("party.party")
    invoice_model = Model.get("account.invoice")
    to_post = []
    for entry in spec["parties"]:
        party = party_model(name=entry["name"], code=entry["code"])
        party.save()
        to_post.extend((days_ago, entry["code"], party, amount)
                       for days_ago, amount in entry["invoices"])
    # Tryton numbers customer invoices in date order and refuses to post one dated before
    # an already numbered one, so post them oldest first across all parties.
    to_post.sort(key=lambda item: -item[0])
    for days_ago, code, party, amount in to_post:
        invoice = invoice_model(type="out", party=party,
                                invoice_date=today - datetime.timedelta(days=days_ago))
        line = invoice.lines.new()
        line.account = accounts["revenue"]
        line.description = "Service"
        line.quantity = 1
        line.unit_price = Decimal(amount)
        invoice.click("post")
        print(f"{code} invoice {invoice.number} {invoice.invoice_date} "
              f"{invoice.state} {invoice.total_amount}")

if __name__ == "__main__":
    main()
