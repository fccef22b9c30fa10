"""Validating the data rows of an account file, in any layout, column by column of the schema.

``RowValidator`` turns one row (its cells located by the layout) into an ``AccountRecord``
or a ``Rejection`` that names every problem, by the rules of ``connectors.files.columns``.
Only a compact fingerprint table for duplicate detection grows with the file.
"""

from __future__ import annotations

import re
from array import array
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import NamedTuple, cast

from connectors.files.columns import BY_NAME, COLUMNS, FIELDS, KEY, SUMMED, AccountRecord
from connectors.files.parsers import FieldError, Parser, RowRules, show_value

__all__ = [
    "DEFAULT_ROW_RULES",
    "AccountFileError",
    "FileSummary",
    "Rejection",
    "RowValidator",
    "has_undecodable",
    "is_blank_row",
]

# Control characters no value may hold: they would reach spoken SSML (where XML forbids
# them), the ops console and files we write. NUL is among them (PostgreSQL text cannot hold
# it). Tab and line breaks are left to quoted cells: a spreadsheet's Alt+Enter makes them.
_CONTROL_RE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
# Under errors="surrogateescape" each undecodable byte becomes one of these code points.
_UNDECODABLE_RE = re.compile("[\udc80-\udcff]")

DEFAULT_ROW_RULES = RowRules()


@dataclass(frozen=True)
class Rejection:
    """A data row that was not accepted, located by the physical line where it starts."""

    line: int
    account_number: str | None
    reason: str


class AccountFileError(Exception):
    """The file as a whole is unusable (header, encoding, CSV syntax or trailer)."""


@dataclass
class FileSummary:
    """Running totals, updated as the iterator is consumed.

    ``balance_sum_cents`` covers every data row whose balance_due parsed, accepted or
    rejected, because that is the figure the trailer's sum is checked against.
    """

    records: int = 0
    rejected: int = 0
    balance_sum_cents: int = 0
    trailer: tuple[int, int] | None = None
    # Our column names the file carries, once its header (or layout) is known: an import
    # updates only these, so a file without a pin column leaves PINs as they are. Not part
    # of equality: it describes the file's shape, not its totals.
    columns: frozenset[str] = field(default=frozenset(), compare=False)

    def restart(self) -> None:
        """Forget a previous file: control totals are checked against this file's alone."""
        self.records = self.rejected = self.balance_sum_cents = 0
        self.trailer = None
        self.columns = frozenset()


def is_blank_row(row: list[str]) -> bool:
    """True for an empty row or one of only empty or space cells."""
    # Spreadsheet exports pad empty lines with commas (",,,,"); those are blank too.
    return all(not cell.strip() for cell in row)


def has_undecodable(row: list[str]) -> bool:
    """True if a row read with errors="surrogateescape" holds bytes its encoding rejected."""
    return _UNDECODABLE_RE.search("".join(row)) is not None


class _Fingerprints:
    """Set of 64-bit account fingerprints, each with the line it was first seen on.

    A Python set of 200,000 account strings costs ~20 MB; two flat arrays cost 12 bytes a
    slot, 2-4 slots per account. The price is a ~n^2/2^65 chance of calling two different
    accounts duplicates (about 3e-8 for a million rows), which rejects a row, never merges.
    """

    def __init__(self) -> None:
        self._keys = array("Q", [0]) * 1024
        # "I" is 4 bytes everywhere that matters ("L" is 8 on 64-bit Linux); lines past 4e9
        # are clamped, which only affects the line quoted in a duplicate's reason.
        self._lines = array("I", [0]) * 1024
        self._used = 0

    @staticmethod
    def _fingerprint(key: str) -> int:
        # hash() of str is 64-bit SipHash on 64-bit builds and cached on the string. 0 marks
        # an empty slot, so it is remapped.
        return (hash(key) & 0xFFFF_FFFF_FFFF_FFFF) or 1

    def add(self, key: str, line: int) -> int | None:
        """Record ``key``; return the first line if it was already present, else None."""
        fp = self._fingerprint(key)
        keys = self._keys
        mask = len(keys) - 1
        slot = fp & mask
        while keys[slot]:
            if keys[slot] == fp:
                return int(self._lines[slot])
            slot = (slot + 1) & mask
        keys[slot] = fp
        self._lines[slot] = min(line, 0xFFFF_FFFF)
        self._used += 1
        if self._used * 2 > len(keys):
            self._grow()
        return None

    def _grow(self) -> None:
        old_keys, old_lines = self._keys, self._lines
        size = len(old_keys) * 2
        self._keys = array("Q", [0]) * size
        self._lines = array("I", [0]) * size
        mask = size - 1
        for fp, line in zip(old_keys, old_lines, strict=True):
            if fp:
                slot = fp & mask
                while self._keys[slot]:
                    slot = (slot + 1) & mask
                self._keys[slot] = fp
                self._lines[slot] = line


class _Step(NamedTuple):
    """One column's check, flattened from its ``Column`` for a loop that runs per cell."""

    name: str
    field: str
    parse: Parser
    required: bool
    blank: object
    if_name: str | None  # a blank cell is required when this column's value is if_value
    if_field: str | None
    if_value: str | None


def _blank_problem(step: _Step, values: dict[str, object]) -> str | None:
    """Why column ``step`` may not be blank, given the values read before it, or None."""
    if step.required:
        return f"{step.name}: is required"
    if step.if_field is not None and values[step.if_field] == step.if_value:
        return f"{step.name}: is required when {step.if_name} is {step.if_value}"
    return None


class RowValidator:
    """Validates data rows, given where each of our columns sits in a row.

    ``columns`` maps column names to 0-based cell indexes (unknown names are ignored; absent
    ones read as blank). A row must have exactly ``width`` cells, or at least ``width`` when
    ``exact_width`` is false; ``width_source`` names what set the width in the reason.
    """

    def __init__(
        self,
        columns: Mapping[str, int],
        width: int,
        *,
        rules: RowRules = DEFAULT_ROW_RULES,
        exact_width: bool = True,
        width_source: str = "the header",
    ) -> None:
        self._columns = tuple((n, i) for n, i in columns.items() if n in BY_NAME)
        self.columns = frozenset(n for n, _ in self._columns)
        self._width = width
        self._exact_width = exact_width
        self._width_source = width_source
        self._seen = _Fingerprints()
        steps: list[_Step] = []
        for column in COLUMNS:
            condition = column.required_if
            if_name, if_value = condition if condition else (None, None)
            steps.append(_Step(
                column.name, column.field, column.read(rules), column.required, column.blank,
                if_name, BY_NAME[if_name].field if if_name else None, if_value,
            ))
        self._steps = tuple(steps)
        # The straight-through path needs less of each step: a blank cell either takes the
        # blank value or (required, or perhaps conditionally) sends the row the careful way.
        self._fast_steps = tuple(
            (s.name, s.field, s.parse, s.blank, s if s.required or s.if_field else None)
            for s in steps
        )
        # The careful path reads the summed column first: control totals count every row
        # whose amount parsed, even one another column rejects (docs/files.md#the-trailer).
        summed = next(step for step in steps if step.name == SUMMED.name)
        self._careful_steps = (summed, *(step for step in steps if step is not summed))
        # Keys folded once here so each row pays one dict lookup per mapped column.
        self._value_maps = tuple(
            (name, {key.strip().casefold(): value for key, value in mapping.items()})
            for name, mapping in rules.value_maps.items()
            if mapping
        )

    @property
    def positions(self) -> Mapping[str, int]:
        """Where each of our columns the file carries sits in a row (0-based)."""
        return dict(self._columns)

    @property
    def width(self) -> tuple[int, bool]:
        """The cell count rows must have, and whether exactly (else at least)."""
        return self._width, self._exact_width

    def width_problem(self, cells: int) -> str | None:
        """Why a row of ``cells`` cells cannot be read, or None if its width is right."""
        if self._exact_width and cells != self._width:
            return f"row has {cells} cells but {self._width_source} has {self._width}"
        if not self._exact_width and cells < self._width:
            return f"row has {cells} cells but {self._width_source} needs at least {self._width}"
        return None

    def parse(self, row: list[str], line: int, summary: FileSummary) -> AccountRecord | Rejection:
        """Validate one data row, adding its balance to ``summary`` if that parsed."""
        width_problem = self.width_problem(len(row))
        if width_problem is not None:
            # Cells are misaligned, so no column can be trusted, not even account_number.
            return Rejection(line, None, width_problem)
        # Columns absent from the header read as blank, i.e. take their default.
        cells = {name: row[i].strip() for name, i in self._columns}
        for name, mapping in self._value_maps:
            value = cells.get(name)
            if value is not None:
                cells[name] = mapping.get(value.casefold(), value)
        try:
            values = self._parse_good_row(cells, line)
        except FieldError:
            # Something is wrong: read the row again, this time collecting every reason.
            return self._parse_bad_row(cells, line, summary)
        summary.balance_sum_cents += cast(int, values[SUMMED.field])
        return AccountRecord.from_values(values)

    def _parse_good_row(self, cells: dict[str, str], line: int) -> dict[str, object]:
        """The common case, straight through: any problem raises FieldError.

        Same steps as _parse_bad_row, without collecting errors per cell (which costs more
        than the checks themselves on large files). The duplicate check comes last, so a
        row that falls back to the careful path is not counted twice.
        """
        get = cells.get
        if _CONTROL_RE.search("".join(cells.values())):
            raise FieldError("control character")
        values: dict[str, object] = {}
        for name, field_name, parse, blank, rule in self._fast_steps:
            raw = get(name)
            if raw:
                values[field_name] = parse(name, raw)
            elif rule is not None and _blank_problem(rule, values) is not None:
                raise FieldError(name)
            else:
                values[field_name] = blank
        if self._seen.add(cast(str, values[KEY.field]), line) is not None:
            raise FieldError("duplicate")
        return values

    def _parse_bad_row(self, cells: dict[str, str], line: int,
                       summary: FileSummary) -> AccountRecord | Rejection:
        """Read a row cell by cell, collecting every problem for the report."""
        errors: list[str] = []
        get = cells.get
        for name, cell in cells.items():
            found = _CONTROL_RE.search(cell)
            if found is None:
                continue
            if "\x00" in cell:
                errors.append(f"{name}: contains a NUL character")
            else:
                errors.append(f"{name}: contains a control character (U+{ord(found[0]):04X})")

        values: dict[str, object] = {}
        key: str | None = None
        for step in self._careful_steps:
            name, field_name, parse, blank = step.name, step.field, step.parse, step.blank
            values[field_name] = blank  # what the record holds if the cell is bad
            raw = get(name, "")
            if not raw:
                problem = _blank_problem(step, values)
                if problem is not None:
                    errors.append(problem)
                continue
            try:
                value = parse(name, raw)
            except FieldError as exc:
                errors.append(str(exc))
                continue
            values[field_name] = value
            if name == SUMMED.name:
                summary.balance_sum_cents += cast(int, value)
            elif name == KEY.name:
                key = raw
                first = self._seen.add(raw, line)
                if first is not None:
                    errors.append(f"{name}: {show_value(raw)} duplicates line {first}")
        if errors:
            return Rejection(line, key, "; ".join(errors))
        return AccountRecord.from_values({name: values[name] for name in FIELDS})
