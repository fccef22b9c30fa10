"""The default account file layout (docs/files.md), the public interface: names to import.

The work is done by modules with one job each: ``columns`` (the column schema and
``AccountRecord``), ``parsers`` (one cell into one value), ``rows`` (one row into a record or
a rejection), and ``account_reader`` (the file: encoding, header, trailer), which reads the
default layout and declared ones (``connectors.files.layouts``) in the same loop.
"""

from __future__ import annotations

from connectors.files.account_reader import check_control_totals, iter_account_file
from connectors.files.columns import (
    LANGUAGES,
    OPTIONAL_COLUMNS,
    REQUIRED_COLUMNS,
    STATUSES,
    AccountRecord,
)
from connectors.files.parsers import (
    FieldError,
    RowRules,
    parse_amount_cents,
    parse_count,
    parse_iso_date,
    show_value,
)
from connectors.files.rows import (
    AccountFileError,
    FileSummary,
    Rejection,
    RowValidator,
    has_undecodable,
    is_blank_row,
)

__all__ = [
    "LANGUAGES",
    "OPTIONAL_COLUMNS",
    "REQUIRED_COLUMNS",
    "STATUSES",
    "AccountFileError",
    "AccountRecord",
    "FieldError",
    "FileSummary",
    "Rejection",
    "RowRules",
    "RowValidator",
    "check_control_totals",
    "has_undecodable",
    "is_blank_row",
    "iter_account_file",
    "parse_amount_cents",
    "parse_count",
    "parse_iso_date",
    "show_value",
]
