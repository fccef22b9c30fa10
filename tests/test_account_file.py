"""Tests for the account file parser and phone normalisation (connectors/)."""

from __future__ import annotations

import csv
import io
import tracemalloc
from collections.abc import Iterator
from datetime import date
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from connectors.files.account_file import (
    AccountFileError,
    AccountRecord,
    FileSummary,
    Rejection,
    iter_account_file,
    parse_amount_cents,
)
from connectors.phones import mask_phone, normalize_e164

FULL_HEADER = (
    "account_number,customer_name,phones,service_zip,pin,balance_due,past_due_amount,"
    "due_date,last_payment_amount,last_payment_date,status,disconnect_date,usage_amount,"
    "usage_unit,usage_period_end,language,payment_allowed"
)
COLUMNS = FULL_HEADER.split(",")


def parse(data: str | bytes) -> tuple[list[AccountRecord | Rejection], FileSummary]:
    """Parse a whole file given as text or bytes; return results and the summary."""
    summary = FileSummary()
    stream: io.BytesIO | io.StringIO
    stream = io.BytesIO(data) if isinstance(data, bytes) else io.StringIO(data, newline="")
    return list(iter_account_file(stream, summary)), summary


def row(**values: str) -> str:
    """One CSV line for FULL_HEADER, blank except the given columns (csv-quoted)."""
    out = io.StringIO()
    csv.writer(out, lineterminator="\r\n").writerow([values.get(c, "") for c in COLUMNS])
    return out.getvalue()


def minimal(*lines: str, trailer: str | None = None) -> str:
    """A file with only the two required columns."""
    body = "account_number,balance_due\r\n" + "".join(line + "\r\n" for line in lines)
    return body + (trailer + "\r\n" if trailer is not None else "")


# --- phones -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        "(555) 123-4567",
        "555.123.4567",
        "+1 555 123 4567",
        "15551234567",
        "5551234567",
        "1-555-123-4567",
        " +15551234567 ",
    ],
)
def test_normalize_e164_accepts_common_us_formats(raw: str) -> None:
    assert normalize_e164(raw) == "+15551234567"


def test_normalize_e164_keeps_fictional_555_01xx_numbers() -> None:
    # is_valid would refuse these; demos and tests depend on them.
    assert normalize_e164("(555) 555-0199") == "+15555550199"


def test_normalize_e164_other_countries() -> None:
    assert normalize_e164("+44 20 7946 0958") == "+442079460958"
    assert normalize_e164("020 7946 0958", default_region="GB") == "+442079460958"


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "   ",
        "anonymous",
        "unknown",
        "Anonymous",
        "client:bob",
        "sip:bob@example.com",
        "abc",
        "123",
        "555-1234",  # no area code: ambiguous
        "0000000000",
        "1234567890",  # NANP area codes never start with 1
        "+1555123456",  # one digit short
        "+266696687",  # Twilio's "ANONYMOUS"
        "+86282452253",  # Twilio's "UNAVAILABLE"
        "555-123-4567 ext 12",
        "9" * 100,
    ],
)
def test_normalize_e164_rejects_junk(raw: str) -> None:
    assert normalize_e164(raw) is None


@given(
    area=st.integers(min_value=200, max_value=999),
    exchange=st.integers(min_value=0, max_value=999),
    line=st.integers(min_value=0, max_value=9999),
)
def test_e164_fast_path_agrees_with_phonenumbers(area: int, exchange: int, line: int) -> None:
    # "+1..." skips the library; the formatted spelling goes through it.
    e164 = f"+1{area}{exchange:03d}{line:04d}"
    assert normalize_e164(e164) == normalize_e164(f"({area}) {exchange:03d}-{line:04d}") == e164


@pytest.mark.parametrize(
    ("e164", "masked"),
    [
        ("+15551234567", "+1******4567"),
        ("+442079460958", "+44******0958"),
        ("+1234", "+1***"),
        ("anonymous", "***"),
        ("", "***"),
        ("+1555abc4567", "***"),
    ],
)
def test_mask_phone(e164: str, masked: str) -> None:
    assert mask_phone(e164) == masked


@settings(max_examples=300, deadline=None)
@given(st.from_regex(r"\+[1-9][0-9]{6,14}", fullmatch=True))
def test_mask_phone_keeps_the_country_code_phonenumbers_reads(e164: str) -> None:
    """The masked number shows the country code phonenumbers parses, whatever the country,
    and never more than the last 4 digits of the rest."""
    import phonenumbers

    try:
        country = str(phonenumbers.parse(e164, None).country_code)
    except phonenumbers.NumberParseException:
        return  # not a number phonenumbers reads; nothing to compare
    masked = mask_phone(e164)
    rest = e164[len(country) + 1:]
    assert masked.startswith("+" + country + "*")
    # A rest of 4 digits or fewer is hidden whole: showing 4 would show it all.
    assert masked.replace("*", "")[len(country) + 1:] == (rest[-4:] if len(rest) > 4 else "")


# --- a good file --------------------------------------------------------------------------


def test_good_file_parsed_exactly() -> None:
    data = (
        FULL_HEADER
        + "\r\n"
        + row(
            account_number="0001234",
            customer_name="Ana García",
            phones="(555) 123-4567; +1 555 987 6543",
            service_zip="02134-1234",
            pin="0042",
            balance_due="123.45",
            past_due_amount="20.00",
            due_date="2025-07-15",
            last_payment_amount="50",
            last_payment_date="2025-06-01",
            status="disconnect_pending",
            disconnect_date="2025-07-30",
            usage_amount="812.5",
            usage_unit="kWh",
            usage_period_end="2025-06-30",
            language="ES",
            payment_allowed="y",
        )
        + row(account_number="A-77", customer_name="Bob", balance_due="-5.5")
    )
    results, summary = parse(data)
    assert results == [
        AccountRecord(
            account_number="0001234",
            customer_name="Ana García",
            phones=("+15551234567", "+15559876543"),
            service_zip="02134",
            pin="0042",
            balance_due_cents=12345,
            past_due_cents=2000,
            due_date=date(2025, 7, 15),
            last_payment_cents=5000,
            last_payment_date=date(2025, 6, 1),
            status="disconnect_pending",
            disconnect_date=date(2025, 7, 30),
            usage_amount=Decimal("812.5"),
            usage_unit="kWh",
            usage_period_end=date(2025, 6, 30),
            language="es",
            payment_allowed=True,
        ),
        # Blank optional cells take their documented defaults.
        AccountRecord(
            account_number="A-77",
            customer_name="Bob",
            phones=(),
            service_zip=None,
            pin=None,
            balance_due_cents=-550,
            past_due_cents=0,
            due_date=None,
            last_payment_cents=None,
            last_payment_date=None,
            status="active",
            disconnect_date=None,
            usage_amount=None,
            usage_unit=None,
            usage_period_end=None,
            language="en",
            payment_allowed=True,
        ),
    ]
    assert summary == FileSummary(records=2, rejected=0, balance_sum_cents=11795, trailer=None)


def test_header_is_case_insensitive_unordered_and_ignores_extra_columns() -> None:
    data = (
        ' Balance_Due ,Notes,ACCOUNT_NUMBER,payment_allowed\r\n10.00,"anything, really",00099,N\r\n'
    )
    (record,), _ = parse(data)
    assert isinstance(record, AccountRecord)
    assert record.account_number == "00099"
    assert record.balance_due_cents == 1000
    assert record.payment_allowed is False
    assert record.customer_name == ""


def test_leading_zeros_kept() -> None:
    results, _ = parse(minimal("000000001,1.00", "0,2.00"))
    assert [r.account_number for r in results if isinstance(r, AccountRecord)] == [
        "000000001",
        "0",
    ]


def test_phones_normalised_deduplicated_and_empty_pieces_skipped() -> None:
    data = "account_number,balance_due,phones\r\n1,0,555.123.4567;;+15551234567; 15559876543;\r\n"
    (record,), _ = parse(data)
    assert isinstance(record, AccountRecord)
    assert record.phones == ("+15551234567", "+15559876543")


def test_blank_lines_skipped_and_line_numbers_stay_physical() -> None:
    data = "\r\naccount_number,balance_due\r\n\r\n1,1.00\r\n,\r\n   \r\n2,x\r\n\r\n"
    results, summary = parse(data)
    assert results[0] == parse(minimal("1,1.00"))[0][0]
    assert results[1] == Rejection(7, "2", "balance_due: 'x' is not an amount")
    assert (summary.records, summary.rejected) == (1, 1)


# --- rejections -------------------------------------------------------------------------

# The multi-line quoted name occupies lines 2-4, so the bad row is on physical line 5.
MULTILINE_NAME = row(
    account_number="100", customer_name="Line one\nLine two\nThree", balance_due="1"
)


@pytest.mark.parametrize(
    ("values", "reason"),
    [
        ({"balance_due": "12.3x"}, "balance_due: '12.3x' is not an amount"),
        ({"balance_due": ""}, "balance_due: is required"),
        ({"balance_due": "12.345"}, "balance_due: '12.345' is not an amount"),
        ({"balance_due": "1e3"}, "balance_due: '1e3' is not an amount"),
        ({"balance_due": "NaN"}, "balance_due: 'NaN' is not an amount"),
        ({"balance_due": "$5.00"}, "balance_due: '$5.00' is not an amount"),
        ({"balance_due": "1,000.00"}, "balance_due: '1,000.00' is not an amount"),
        ({"balance_due": "1" * 13}, f"balance_due: '{'1' * 13}' is too large"),
        ({"past_due_amount": "abc"}, "past_due_amount: 'abc' is not an amount"),
        ({"past_due_amount": "-1.00"}, "past_due_amount: '-1.00' cannot be negative"),
        ({"last_payment_amount": "1.001"}, "last_payment_amount: '1.001' is not an amount"),
        ({"phones": "555-123-4567;call me"}, "phones: 'call me' is not a phone number"),
        ({"phones": "anonymous"}, "phones: 'anonymous' is not a phone number"),
        (
            {"service_zip": "2134"},
            "service_zip: '2134' is not a ZIP code (12345 or 12345-6789)",
        ),
        ({"pin": "12a4"}, "pin: must be 4 to 8 digits (value not shown)"),
        ({"pin": "123"}, "pin: must be 4 to 8 digits (value not shown)"),
        ({"due_date": "07/15/2025"}, "due_date: '07/15/2025' is not a date (YYYY-MM-DD)"),
        ({"due_date": "2025-02-30"}, "due_date: '2025-02-30' is not a real date"),
        (
            {"last_payment_date": "20250101"},
            "last_payment_date: '20250101' is not a date (YYYY-MM-DD)",
        ),
        (
            {"status": "suspended"},
            "status: 'suspended' is not one of active, closed, disconnect_pending, disconnected",
        ),
        (
            {"status": "disconnect_pending"},
            "disconnect_date: is required when status is disconnect_pending",
        ),
        ({"usage_amount": "1e3"}, "usage_amount: '1e3' is not a number with at most 3 decimals"),
        (
            {"usage_amount": "1.2345"},
            "usage_amount: '1.2345' is not a number with at most 3 decimals",
        ),
        (
            {"customer_name": "N" * 201},
            f"customer_name: '{'N' * 60}...' is longer than 200 characters",
        ),
        ({"usage_period_end": "soon"}, "usage_period_end: 'soon' is not a date (YYYY-MM-DD)"),
        ({"language": "fr"}, "language: 'fr' is not one of en, es"),
        ({"payment_allowed": "yes"}, "payment_allowed: 'yes' is not Y or N"),
        ({"customer_name": "a\x00b"}, "customer_name: contains a NUL character"),
        # Control characters other than tab and line breaks (which quoted cells hold).
        ({"customer_name": "Alex\x1b[2JMorgan"},
         "customer_name: contains a control character (U+001B)"),
        ({"customer_name": "a\x7fb"}, "customer_name: contains a control character (U+007F)"),
        ({"customer_name": "a\x85b\x08"},
         "customer_name: contains a control character (U+0085)"),
        ({"usage_unit": "k\x0bWh"},
         "usage_unit: contains a control character (U+000B); usage_unit: 'k\\x0bWh' is not "
         "a unit name"),
    ],
)
def test_each_rejection_reason_and_line(values: dict[str, str], reason: str) -> None:
    fields = {"account_number": "200", "balance_due": "1.00"} | values
    data = (
        FULL_HEADER
        + "\r\n"
        + MULTILINE_NAME
        + row(**fields)
        + row(account_number="300", balance_due="2")
    )
    results, summary = parse(data)
    assert results[1] == Rejection(line=5, account_number="200", reason=reason)
    # Rows either side are unaffected.
    assert isinstance(results[0], AccountRecord)
    assert results[0].customer_name == "Line one\nLine two\nThree"
    assert isinstance(results[2], AccountRecord)
    assert (summary.records, summary.rejected) == (2, 1)


def test_pin_rejection_never_echoes_the_value() -> None:
    data = FULL_HEADER + "\r\n" + row(account_number="1", balance_due="0", pin="98765x")
    (rejection,), _ = parse(data)
    assert isinstance(rejection, Rejection)
    assert "98765" not in rejection.reason


@pytest.mark.parametrize(
    ("account", "reason"),
    [
        ("", "account_number: is required"),
        ("12 34", "account_number: '12 34' must be 1-32 letters, digits or dashes"),
        ("A" * 33, f"account_number: '{'A' * 33}' must be 1-32 letters, digits or dashes"),
        ("---", "account_number: '---' must be 1-32 letters, digits or dashes"),
        ("12_34", "account_number: '12_34' must be 1-32 letters, digits or dashes"),
    ],
)
def test_bad_account_number(account: str, reason: str) -> None:
    (rejection,), _ = parse(minimal(f"{account},1.00"))
    assert rejection == Rejection(2, None, reason)


def test_all_bad_columns_are_reported_together() -> None:
    data = FULL_HEADER + "\r\n" + row(account_number="9", balance_due="x", language="de")
    (rejection,), _ = parse(data)
    assert rejection == Rejection(
        2, "9", "balance_due: 'x' is not an amount; language: 'de' is not one of en, es"
    )


def test_wrong_cell_count_rejected() -> None:
    data = minimal("1,1.00", "2,2.00,extra", "3", "4,4.00")
    results, summary = parse(data)
    assert results[1] == Rejection(3, None, "row has 3 cells but the header has 2")
    assert results[2] == Rejection(4, None, "row has 1 cells but the header has 2")
    assert [r.account_number for r in results if isinstance(r, AccountRecord)] == ["1", "4"]
    assert summary == FileSummary(records=2, rejected=2, balance_sum_cents=500, trailer=None)


def test_duplicate_account_rejects_the_later_line() -> None:
    data = minimal("7,1.00", "8,2.00", '"x\ny",3', "7,3.00")
    results, summary = parse(data)
    assert results[0] == parse(minimal("7,1.00"))[0][0]
    assert results[2] == Rejection(
        4, None, "account_number: 'x\\ny' must be 1-32 letters, digits or dashes"
    )
    assert results[3] == Rejection(6, "7", "account_number: '7' duplicates line 2")
    # The duplicate's amount still counts toward the sum the trailer is checked against.
    assert summary == FileSummary(records=2, rejected=2, balance_sum_cents=900, trailer=None)


def test_duplicate_detection_is_case_sensitive_and_exact() -> None:
    results, _ = parse(minimal("ab-1,1", "AB-1,1", "ab-01,1"))
    assert all(isinstance(r, AccountRecord) for r in results)


# --- trailer ------------------------------------------------------------------------------


def test_trailer_good() -> None:
    data = minimal("1,10.00", "2,x", "3,-2.50", trailer="TRAILER,3,7.50")
    results, summary = parse(data)
    assert len(results) == 3
    assert summary == FileSummary(records=2, rejected=1, balance_sum_cents=750, trailer=(3, 750))


def test_trailer_padded_by_a_spreadsheet_is_accepted() -> None:
    data = "account_number,balance_due,customer_name\r\n1,1.00,A\r\nTRAILER,1,1.00,\r\n,,\r\n"
    _, summary = parse(data)
    assert summary.trailer == (1, 100)


def test_summary_is_reset_so_a_reused_one_cannot_skew_the_trailer_check() -> None:
    summary = FileSummary(records=5, rejected=1, balance_sum_cents=999, trailer=(1, 1))
    data = minimal("1,1.00", trailer="TRAILER,1,1.00")
    list(iter_account_file(io.StringIO(data, newline=""), summary))
    assert summary == FileSummary(records=1, rejected=0, balance_sum_cents=100, trailer=(1, 100))


def test_trailer_bad_count_raises_after_all_rows() -> None:
    summary = FileSummary()
    stream = io.StringIO(minimal("1,10.00", "2,5.00", trailer="TRAILER,3,15.00"))
    results: list[AccountRecord | Rejection] = []
    with pytest.raises(AccountFileError, match=r"^trailer: record count 3 does not match 2 "):
        results.extend(iter_account_file(stream, summary))
    assert [r.account_number for r in results] == ["1", "2"]
    assert summary.trailer == (3, 1500)


def test_trailer_bad_sum() -> None:
    with pytest.raises(
        AccountFileError, match=r"^trailer: balance sum 15\.01 does not match 15\.00 in the file$"
    ):
        parse(minimal("1,10.00", "2,5.00", trailer="TRAILER,2,15.01"))


@pytest.mark.parametrize(
    "trailer",
    ["TRAILER,2", "TRAILER,two,1.00", "TRAILER,2,1.5x", "TRAILER,-1,0", "TRAILER,2,1.00,junk"],
)
def test_malformed_trailer(trailer: str) -> None:
    with pytest.raises(AccountFileError, match=r"^trailer: line 4"):
        parse(minimal("1,1", "2,0", trailer=trailer))


def test_rows_after_trailer_are_a_file_error() -> None:
    data = minimal("1,1.00", trailer="TRAILER,1,1.00") + "2,2.00\r\n"
    with pytest.raises(AccountFileError, match=r"^line 4: rows after the trailer on line 3$"):
        parse(data)


def test_second_trailer_is_a_file_error() -> None:
    data = minimal("1,1.00", trailer="TRAILER,1,1.00") + "TRAILER,1,1.00\r\n"
    with pytest.raises(AccountFileError, match="rows after the trailer"):
        parse(data)


# --- file-level errors and encodings --------------------------------------------------------


def test_bom_is_tolerated_in_bytes_and_text() -> None:
    text = minimal("0042,1.00")
    for data in (b"\xef\xbb\xbf" + text.encode(), "\ufeff" + text):
        (record,), _ = parse(data)
        assert isinstance(record, AccountRecord)
        assert record.account_number == "0042"


def test_cp1252_bytes_are_a_file_error_naming_the_line() -> None:
    data = minimal("1,1.00", "2,2.00").encode() + b'3,3.00\r\n"Jos\xe9",4\r\n'
    results: list[AccountRecord | Rejection] = []
    with pytest.raises(AccountFileError, match=r"^line 5: file is not valid UTF-8"):
        results.extend(iter_account_file(io.BytesIO(data)))
    assert len(results) == 3


def test_decode_error_from_a_caller_text_stream() -> None:
    raw = io.BytesIO(minimal("1,1.00").encode() + b"\xe9,1\r\n")
    stream = io.TextIOWrapper(raw, encoding="utf-8", newline="")
    with pytest.raises(AccountFileError, match="not valid UTF-8"):
        list(iter_account_file(stream))


def test_missing_required_column() -> None:
    with pytest.raises(
        AccountFileError, match=r"^line 1: header is missing required column\(s\): balance_due$"
    ):
        parse("account_number,customer_name\r\n1,Bob\r\n")


def test_duplicate_header_column() -> None:
    with pytest.raises(AccountFileError, match="'balance_due' twice"):
        parse("account_number,balance_due,Balance_Due\r\n1,1,1\r\n")


@pytest.mark.parametrize("data", ["", "\r\n\r\n", b"", b"\xef\xbb\xbf"])
def test_no_header(data: str | bytes) -> None:
    with pytest.raises(AccountFileError, match="no header row"):
        parse(data)


def test_header_only_is_an_empty_file() -> None:
    assert parse(minimal()) == ([], FileSummary())


def test_malformed_quoting_is_a_file_error() -> None:
    with pytest.raises(AccountFileError, match=r"^line 3: malformed CSV"):
        parse(minimal("1,1.00", '2,"3.00"x'))
    with pytest.raises(AccountFileError, match=r"^line 3: malformed CSV: unexpected end"):
        parse(minimal("1,1.00", '2,"3.00'))


def test_callers_binary_stream_is_left_open() -> None:
    stream = io.BytesIO(minimal("1,1.00").encode())
    assert len(list(iter_account_file(stream))) == 1
    assert not stream.closed


# --- amounts ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "cents"),
    [
        ("0", 0),
        ("-0.00", 0),
        ("1", 100),
        ("1.5", 150),
        ("0.05", 5),
        ("-12.34", -1234),
        (" 7.10 ", 710),
        ("999999999999.99", 99_999_999_999_999),
        ("000012.30", 1230),
    ],
)
def test_amounts(raw: str, cents: int) -> None:
    assert parse_amount_cents("x", raw) == cents


def format_cents(cents: int, style: int) -> str:
    """Render cents the ways billers do: "12.30", "12.3" (when exact) or "12" (when whole)."""
    sign = "-" if cents < 0 else ""
    whole, frac = divmod(abs(cents), 100)
    if style == 1 and frac % 10 == 0:
        return f"{sign}{whole}.{frac // 10}"
    if style == 2 and frac == 0:
        return f"{sign}{whole}"
    return f"{sign}{whole}.{frac:02d}"


@settings(max_examples=300)
@given(
    cents=st.integers(min_value=-(10**14) + 1, max_value=10**14 - 1),
    style=st.integers(min_value=0, max_value=2),
)
def test_amount_round_trip_property(cents: int, style: int) -> None:
    text = format_cents(cents, style)
    assert parse_amount_cents("balance_due", text) == cents
    (record,), summary = parse(minimal(f"1,{text}"))
    assert isinstance(record, AccountRecord)
    assert record.balance_due_cents == cents == summary.balance_sum_cents


@settings(max_examples=300)
@given(
    names=st.lists(
        st.text(
            alphabet=st.one_of(
                st.sampled_from([",", '"', "\n", "\r", ";", " ", "é", "ñ", "中", "🙂"]),
                # Other control characters reject a row (test_each_rejection_reason_and_line);
                # line breaks are allowed and come from the list above.
                st.characters(codec="utf-8", exclude_categories=("Cc",)),
            ),
            max_size=40,
        ),
        min_size=1,
        max_size=5,
    )
)
def test_customer_names_round_trip_through_csv_writer(names: list[str]) -> None:
    out = io.StringIO(newline="")
    writer = csv.writer(out)
    writer.writerow(["account_number", "customer_name", "balance_due"])
    for i, name in enumerate(names):
        writer.writerow([f"A{i}", name, "1.00"])
    results, summary = parse(out.getvalue().encode("utf-8"))
    assert summary.rejected == 0
    assert [r.customer_name for r in results if isinstance(r, AccountRecord)] == [
        n.strip() for n in names
    ]


# --- streaming ----------------------------------------------------------------------------


class GeneratorStream(io.RawIOBase):
    """A read-only binary stream fed by a generator, so the file never exists in memory."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._pending = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        while not self._pending:
            try:
                self._pending = next(self._chunks)
            except StopIteration:
                return 0
        n = min(len(buffer), len(self._pending))
        buffer[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        return n


def generated_lines(rows: int) -> Iterator[bytes]:
    """Header, ``rows`` realistic data rows and a matching trailer, one line at a time."""
    yield b"account_number,customer_name,phones,service_zip,balance_due,due_date,usage_amount\r\n"
    total = 0
    for i in range(rows):
        cents = (i * 7919) % 10_000_000 - 50_000
        total += cents
        amount = f"{'-' if cents < 0 else ''}{abs(cents) // 100}.{abs(cents) % 100:02d}"
        # Mostly E.164 as billers' systems export it, some typed by hand.
        phone = f"(555) 201-{i % 10000:04d}" if i % 10 == 0 else f"+1555987{i % 10000:04d}"
        yield (
            f'{i:09d},"Customer {i}, Jr.",{phone},12345-6789,{amount},2025-07-15,812.5\r\n'
        ).encode()
    yield f"TRAILER,{rows},{total // 100}.{total % 100:02d}\r\n".encode()


def generated_file(rows: int, chunk: int = 64 * 1024) -> Iterator[bytes]:
    """The generated file in ~64 KB chunks, like a socket or an upload would deliver it."""
    pending: list[bytes] = []
    size = 0
    for line in generated_lines(rows):
        pending.append(line)
        size += len(line)
        if size >= chunk:
            yield b"".join(pending)
            pending, size = [], 0
    yield b"".join(pending)


@pytest.mark.slow
def test_streaming_200k_rows_keeps_memory_flat() -> None:
    rows = 200_000
    stream = io.BufferedReader(GeneratorStream(generated_file(rows)))
    summary = FileSummary()
    count = 0
    tracemalloc.start()
    try:
        for result in iter_account_file(stream, summary):
            assert isinstance(result, AccountRecord)
            count += 1
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == rows
    assert summary.records == rows and summary.rejected == 0
    assert summary.trailer == (rows, summary.balance_sum_cents)
    assert peak < 20 * 1024 * 1024, f"peak {peak / 1e6:.1f} MB"
