"""Validating operators' TOML files with pydantic, and the one wording of a TOML problem.

Both ``prompts/settings.toml`` and the billers' layouts file are read into pydantic models
built on ``TomlTable``; ``toml_problems`` turns a ``ValidationError`` into one line per
problem, every problem at once, each naming the table and key in TOML's own dotted form and
what was expected::

    pay.max_attempts: must be between 1 and 3, got 5
    input.max_tries: must be an integer, got string '3'
    pay.max_atempts: unknown key (did you mean 'max_attempts'?)

The file name goes in front of each line (``settings.toml: pay.max_attempts: ...``): the
prompts catalog adds it for settings.toml, ``in_file`` does it for the layouts file.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import date, datetime, time
from types import UnionType
from typing import Annotated, Final, TypeVar, Union, get_args, get_origin

from pydantic import BaseModel, BeforeValidator, ConfigDict, ValidationError
from pydantic_core import ErrorDetails, PydanticCustomError

__all__ = [
    "Array",
    "TomlTable",
    "dotted",
    "expect",
    "in_file",
    "must_be",
    "refuse",
    "toml_problems",
    "toml_type",
]

_T = TypeVar("_T")

# The error type of every problem our own validators raise (see refuse()).
_OURS: Final = "toml"

# What a value of the wrong TOML type should have been, by pydantic's error type.
_EXPECTED: Final[Mapping[str, str]] = {
    "bool_type": "true or false",
    "int_type": "an integer",
    "string_type": "a string",
    "float_type": "a number",
    "date_type": "a date",
    "list_type": "an array",
    "tuple_type": "an array",
    "dict_type": "a table",
    "model_type": "a table",
    "model_attributes_type": "a table",
}

# Keys shown without quotes. TOML also allows "-" in a bare key, but a language tag reads
# better quoted, as settings.toml writes it: voices."en-US".voice.
_BARE_KEY: Final = re.compile(r"[A-Za-z0-9_]+")


class TomlTable(BaseModel):
    """A TOML table: strict types, unknown keys refused, read-only once read."""

    # strict: a TOML string "3" is not the integer 3, and true is not 1.
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)

    def __setattr__(self, name: str, value: object) -> None:
        # Like a frozen dataclass (pydantic's own refusal is a ValidationError).
        raise AttributeError(f"{type(self).__name__} is read-only: cannot set {name!r}")


def toml_type(value: object) -> str:
    """The TOML name of ``value``'s type: operators read these messages, not programmers."""
    names: tuple[tuple[type, str], ...] = (
        (bool, "boolean"),
        (int, "integer"),
        (float, "float"),
        (str, "string"),
        (list, "array"),
        (tuple, "array"),
        (dict, "table"),
        (datetime, "date-time"),  # before date: a datetime is a date
        (date, "date"),
        (time, "time"),
    )
    return next((name for kind, name in names if isinstance(value, kind)), type(value).__name__)


def must_be(expected: str, value: object) -> str:
    """``must be EXPECTED, got TYPE VALUE``: the wording of every wrong value."""
    return f"must be {expected}, got {toml_type(value)} {value!r}"


def refuse(*problems: str, key: str | None = None) -> PydanticCustomError:
    """An error for a validator to raise: one or more problems, about ``key`` if given.

    ``key`` names a key of the table being validated, for checks that compare keys (e.g.
    ``minimum`` against ``maximum``) and so run on the whole table.
    """
    return PydanticCustomError(_OURS, "{text}", {"text": "; ".join(problems),
                                                 "problems": problems, "key": key})


def expect(expected: str, *kinds: type) -> BeforeValidator:
    """Refuse a value that is not one of ``kinds`` with ``must be EXPECTED``, as one problem.

    For values whose type pydantic would otherwise report once per alternative (a name or
    a position) or without saying what the key is for (a list of card types).
    """

    def check(value: object) -> object:
        if isinstance(value, kinds) and not (isinstance(value, bool) and bool not in kinds):
            return value
        raise refuse(must_be(expected, value))

    return BeforeValidator(check)


def _as_tuple(value: object) -> object:
    # TOML arrays arrive as lists; settings keep them as tuples so they cannot change.
    return tuple(value) if isinstance(value, list) else value


Array = Annotated[tuple[_T, ...], BeforeValidator(_as_tuple)]
"""A TOML array, kept as a tuple."""


def in_file(file: object, problems: Iterable[str]) -> list[str]:
    """``problems`` each preceded by the file they are in."""
    return [f"{file}: {problem}" for problem in problems]


def dotted(loc: Sequence[str | int]) -> str:
    """A key's place as TOML writes it: ``voices."en-US".voice``, ``columns[3]``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part + 1}]"  # operators count array items from 1
        else:
            shown = part if _BARE_KEY.fullmatch(part) else f'"{part}"'
            out = f"{out}.{shown}" if out else shown
    return out or "(top level)"


def toml_problems(
    error: ValidationError, model: type[BaseModel], where: Sequence[str | int] = ()
) -> list[str]:
    """One line per problem in ``error`` (from validating ``model``), under table ``where``."""
    lines: list[str] = []
    for detail in error.errors():
        for at, message in _wording(detail, model, tuple(detail["loc"])):
            lines.append(f"{dotted((*where, *at))}: {message}")
    return lines


def _wording(
    detail: ErrorDetails, model: type[BaseModel], loc: tuple[str | int, ...]
) -> list[tuple[tuple[str | int, ...], str]]:
    """(place, message) for each problem one pydantic error stands for."""
    kind = detail["type"]
    if kind == _OURS:
        ctx = detail.get("ctx") or {}
        key = ctx.get("key")
        at = (*loc, key) if key else loc
        return [(at, problem) for problem in ctx.get("problems", ())]
    if kind == "extra_forbidden":
        known = _known_keys(model, loc[:-1])
        hint = difflib.get_close_matches(str(loc[-1]), known, n=1)
        return [(loc, "unknown key" + (f" (did you mean {hint[0]!r}?)" if hint else ""))]
    if kind == "missing":
        return [(loc, "is required")]
    if kind in _EXPECTED:
        return [(loc, must_be(_EXPECTED[kind], detail["input"]))]
    # A check none of the models uses today: pydantic's own words are still specific.
    return [(loc, f"{detail['msg']}, got {toml_type(detail['input'])} {detail['input']!r}")]


def _known_keys(model: type[BaseModel], loc: Sequence[str | int]) -> list[str]:
    """The keys the table at ``loc`` accepts, following fields, named tables and arrays."""
    current = _unwrap(model)
    for part in loc:
        if isinstance(current, type) and issubclass(current, BaseModel):
            fields = current.model_fields
            field = next((f for name, f in fields.items() if (f.alias or name) == part), None)
            if field is None:
                return []
            current = _unwrap(field.annotation)
        elif get_origin(current) in (Mapping, dict, tuple, list):
            # ``part`` is a table's name or an array's index: go to the value type.
            current = _unwrap(get_args(current)[-1 if get_origin(current) is not tuple else 0])
        else:
            return []
    if isinstance(current, type) and issubclass(current, BaseModel):
        return [field.alias or name for name, field in current.model_fields.items()]
    return []


def _unwrap(annotation: object) -> object:
    """``annotation`` without ``Annotated[...]`` and ``| None``."""
    while True:
        origin = get_origin(annotation)
        args = [a for a in get_args(annotation) if a is not type(None)]
        if origin is Annotated or (origin in (Union, UnionType) and len(args) == 1):
            annotation = args[0]
        else:
            return annotation
