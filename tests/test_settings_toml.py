"""The two TOML files operators write (settings.toml, the layouts file) and how problems read.

Both are validated by pydantic models and worded by connectors/toml_settings.py; these tests
pin the shared wording, that the models and their documentation agree with the shipped file
and the layout dataclasses, and that every problem is reported at once.
"""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from connectors.files.account_layout import AccountLayout, AmountFormat, ControlRecord
from connectors.files.arrangement_file import ArrangementLayout
from connectors.files.layout_base import LayoutError
from connectors.files.layout_toml import (
    AccountTable,
    AmountsTable,
    ArrangementTable,
    ControlTable,
    PaymentTable,
    load_layouts,
)
from connectors.files.payment_layout import PaymentLayout
from connectors.toml_settings import dotted, must_be
from ivr.prompts.settings import LineSettings, SettingsError, parse_line_settings

REPO = Path(__file__).resolve().parent.parent
SHIPPED = REPO / "prompts" / "settings.toml"
CONFIGURATION_DOC = REPO / "docs" / "configuration.md"


def shipped() -> dict[str, Any]:
    with SHIPPED.open("rb") as handle:
        return tomllib.load(handle)


def problems_of(data: dict[str, Any]) -> list[str]:
    with pytest.raises(SettingsError) as info:
        parse_line_settings(data)
    return info.value.problems


def layout_problems(tmp_path: Path, text: str) -> list[str]:
    path = tmp_path / "layouts.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(LayoutError) as info:
        load_layouts(path)
    return [problem.removeprefix(f"{path}: ") for problem in info.value.problems]


def model_keys(model: type[BaseModel], prefix: str = "") -> set[str]:
    """Every dotted key a settings model reads, as the file spells it."""
    keys: set[str] = set()
    for name, field in model.model_fields.items():
        key = f"{prefix}{field.alias or name}"
        table = field.annotation
        if isinstance(table, type) and issubclass(table, BaseModel) and name != "voices":
            keys |= model_keys(table, f"{key}.")
        else:
            keys.add(key)
    return keys


def file_keys(data: dict[str, Any], prefix: str = "") -> set[str]:
    """Every dotted key in a decoded settings file; tables named by language count as one."""
    keys: set[str] = set()
    for key, value in data.items():
        dotted_key = f"{prefix}{key}"
        if isinstance(value, dict) and dotted_key not in ("voices", "pay.language"):
            keys |= file_keys(value, f"{dotted_key}.")
        else:
            keys.add(dotted_key)
    return keys


# --- the wording --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("loc", "expected"),
    [
        (("pay", "max_attempts"), "pay.max_attempts"),
        (("voices", "en-US", "voice"), 'voices."en-US".voice'),
        (("payment", "out", "columns", 2), "payment.out.columns[3]"),
        ((), "(top level)"),
    ],
)
def test_places_are_written_as_toml_writes_them(loc: tuple[str | int, ...], expected: str) -> None:
    assert dotted(loc) == expected


def test_a_wrong_value_names_what_was_expected_and_what_came() -> None:
    assert must_be("an integer", "3") == "must be an integer, got string '3'"
    assert must_be("a table", [1]) == "must be a table, got array [1]"
    assert must_be("a string", True) == "must be a string, got boolean True"


def test_both_files_word_the_same_mistake_the_same_way(tmp_path: Path) -> None:
    settings = problems_of({"input": {"max_tries": "3", "max_trys": 3}})
    layouts = layout_problems(
        tmp_path, '[account.x]\ncolumns = {account_number = 1}\nwidth = "3"\nwidht = 3\n'
    )
    assert settings == [
        "input.max_tries: must be an integer, got string '3'",
        "input.max_trys: unknown key (did you mean 'max_tries'?)",
    ]
    assert layouts == [
        "account.x.width: must be an integer, got string '3'",
        "account.x.widht: unknown key (did you mean 'width'?)",
    ]


def test_unknown_keys_are_suggested_inside_named_tables(tmp_path: Path) -> None:
    assert problems_of({"voices": {"en-US": {"voice": "x", "langauge": "en-US"}}}) == [
        "voices.\"en-US\".langauge: unknown key (did you mean 'language'?)"
    ]
    assert layout_problems(
        tmp_path, '[account.x]\ncolumns = {account_number = 1}\n[account.x.amounts]\nstyel = 1\n'
    ) == ["account.x.amounts.styel: unknown key (did you mean 'style'?)"]


def test_layout_problems_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "layouts.toml"
    path.write_text("[account.x]\nheader = 1\n", encoding="utf-8")
    with pytest.raises(LayoutError) as info:
        load_layouts(path)
    assert info.value.problems == [
        f"{path}: account.x.header: must be true or false, got integer 1",
        f"{path}: account.x.columns: is required",
    ]


# --- every problem at once ------------------------------------------------------------------


def test_language_problems_come_with_every_other_problem() -> None:
    data = shipped()
    data["languages"] = ["en-US", "es-MX"]
    data["pay"]["max_attempts"] = 9
    data["amount"] = {"minimum": 1, "maximum": "x"}
    data["transfer"]["hours"]["mon"] = "9-5"
    assert sorted(problems_of(data)) == sorted([
        "pay.max_attempts: must be between 1 and 3, got 9",
        "amount.minimum: must be a quoted amount like \"12.34\", got integer 1",
        "amount.maximum: must be a quoted amount like \"12.34\", got string 'x'",
        "transfer.hours.mon: must be \"HH:MM-HH:MM\" (24-hour) or \"\" for closed, got '9-5'",
        "voices: no voice for language 'es-MX' (add [voices.\"es-MX\"])",
        "pay.language: no <Pay> language for 'es-MX' (add \"es-MX\" = \"...\")",
    ])


def test_checks_between_keys_of_a_table() -> None:
    assert problems_of({"ach": {"enabled": True}}) == [
        "ach.office_phone: is required when ACH is enabled"
    ]
    assert problems_of({"input": {"timeout_seconds": 30}}) == [
        "input.extended_timeout_seconds: must be at least timeout_seconds (30), got 20"
    ]
    assert problems_of({"amount": {"minimum": "0.00", "maximum": "x"}}) == [
        "amount.minimum: must be at least 0.01",
        "amount.maximum: must be a quoted amount like \"12.34\", got string 'x'",
    ]


def test_a_wrong_array_item_is_named_by_position() -> None:
    assert problems_of({"pay": {"valid_card_types": ["visa", 5, "bitcoin"]}}) == [
        "pay.valid_card_types[2]: must be a string, got integer 5"
    ]
    assert problems_of({"transfer": {"holidays": ["2026-12-25", "2026-02-30", 7]}}) == [
        "transfer.holidays: '2026-02-30' is not a date like \"2026-12-25\"",
        "transfer.holidays: 7 is not a date like \"2026-12-25\"",
    ]


# --- the models agree with the shipped file, the docs and the layout dataclasses -----------


def test_the_shipped_settings_file_sets_every_key() -> None:
    """A key added to a model is added to prompts/settings.toml too, where ops look first."""
    assert file_keys(shipped()) == model_keys(LineSettings)


def test_every_settings_key_is_documented() -> None:
    doc = CONFIGURATION_DOC.read_text(encoding="utf-8")
    section = doc[doc.index("## settings.toml"):doc.index("## How changes take effect")]
    by_table = {part.split("`")[1]: part for part in section.split("\n### ") if "`[" in part[:5]}
    missing = []
    for key in sorted(model_keys(LineSettings)):
        *tables, name = key.split(".")
        if len(tables) == 1:
            # A key of a table is a row of that table's own section.
            text = by_table.get(f"[{tables[0]}]", "")
            documented = f"| `{name}` |" in text or f"| `[{key}]" in text
        else:
            # Top-level keys, and tables of their own ([transfer.hours], [voices."<tag>"]).
            documented = f"| `{name}` |" in section or f"`[{key}" in section or (
                f"`[{'.'.join(tables)}]" in section)
        if not documented:
            missing.append(key)
    assert missing == []


def test_defaults_are_the_shipped_values_but_the_site_specific_ones() -> None:
    # warnings=False: read-only mappings are dumped as the dicts they hold.
    defaults = LineSettings.model_validate({}).model_dump(warnings=False)
    ship = parse_line_settings(shipped()).model_dump(warnings=False)
    # No default phone number (it would send callers to a stranger), no default holidays;
    # what needs a number is off without one.
    for table, keys in {"transfer": ("enabled", "number", "holidays"),
                        "ach": ("enabled", "office_phone")}.items():
        for key in keys:
            assert defaults[table].pop(key) != ship[table].pop(key)
    assert defaults == ship


@pytest.mark.parametrize(
    ("table", "built"),
    [
        (AccountTable, AccountLayout),
        (PaymentTable, PaymentLayout),
        (ArrangementTable, ArrangementLayout),
        (AmountsTable, AmountFormat),
        (ControlTable, ControlRecord),
    ],
)
def test_layout_keys_are_the_dataclass_fields(table: type[BaseModel], built: type) -> None:
    fields = {field.name for field in dataclasses.fields(built)} - {"name"}
    assert set(table.model_fields) == fields


def test_settings_are_read_only() -> None:
    settings = parse_line_settings({})
    with pytest.raises(AttributeError, match="read-only"):
        settings.amount.minimum_cents = 0
    with pytest.raises(TypeError):
        settings.pay.language["fr-CA"] = "fr-FR"  # type: ignore[index]
