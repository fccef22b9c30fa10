"""Declared file layouts, the public interface: billers' account files in, confirmation files out.

An ``AccountLayout`` (account_layout.py) says how a biller's account file spells the columns
of the default layout (docs/files.md, columns.py); ``iter_layout_file`` (account_reader.py)
streams such a file through the same loop and row checks (rows.py) as the default layout, so
every layout accepts and rejects values by the same rules. A ``PaymentLayout``
(payment_layout.py) says how to write the payment confirmation file sent back to a biller;
``write_payment_file`` and ``read_payment_file`` (payment_file.py) write and read one.
An ``ArrangementLayout`` says how to write the arrangement confirmation file
(``write_arrangement_file``, arrangement_file.py). ``load_layouts`` (layout_toml.py) reads
every kind from a TOML file. See docs/layouts.md.
"""

from __future__ import annotations

from connectors.files.account_layout import (
    DEFAULT_ACCOUNT_LAYOUT,
    AccountLayout,
    AmountFormat,
    ControlRecord,
)
from connectors.files.account_reader import iter_layout_file
from connectors.files.arrangement_file import (
    ARRANGEMENT_FIELDS,
    DEFAULT_ARRANGEMENT_LAYOUT,
    ArrangementLayout,
    ArrangementRow,
    write_arrangement_file,
)
from connectors.files.layout_base import (
    ACCOUNT_FIELDS,
    CREDIT_MARKS,
    DEFAULT_PAYMENT_COLUMNS,
    PAYMENT_FIELDS,
    LayoutError,
    PaymentFileError,
)
from connectors.files.layout_toml import load_layouts
from connectors.files.payment_file import read_payment_file, write_payment_file
from connectors.files.payment_layout import DEFAULT_PAYMENT_LAYOUT, PaymentLayout, PaymentRow

__all__ = [
    "ACCOUNT_FIELDS",
    "ARRANGEMENT_FIELDS",
    "CREDIT_MARKS",
    "DEFAULT_ACCOUNT_LAYOUT",
    "DEFAULT_ARRANGEMENT_LAYOUT",
    "DEFAULT_PAYMENT_COLUMNS",
    "DEFAULT_PAYMENT_LAYOUT",
    "PAYMENT_FIELDS",
    "AccountLayout",
    "AmountFormat",
    "ArrangementLayout",
    "ArrangementRow",
    "ControlRecord",
    "LayoutError",
    "PaymentFileError",
    "PaymentLayout",
    "PaymentRow",
    "iter_layout_file",
    "load_layouts",
    "read_payment_file",
    "write_arrangement_file",
    "write_payment_file",
]
