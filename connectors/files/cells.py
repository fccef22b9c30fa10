"""Text cells of delimited files we write are data, never formulas (OWASP CSV injection).

A spreadsheet runs a cell that begins with ``=``, ``+``, ``-``, ``@``, tab or carriage
return. Every text cell we write goes through ``neutralise``, which puts a single quote in
front of such a cell; spreadsheets show a cell with a leading quote as the text after it.
``restore`` undoes it when we read our own files back. Numbers our own code formats
(amounts such as ``-12.00``, counts) are not text and are written as they are.
See docs/layouts.md#formulas.
"""

from __future__ import annotations

import re

__all__ = ["FORMULA_TRIGGERS", "neutralise", "restore"]

FORMULA_TRIGGERS = "=+-@\t\r"
# A cell that is already quote(s) + trigger gets one more quote too, so that ``restore``
# can tell our quote from the value's own: the rule is reversible for every text.
_NEEDS_QUOTE = re.compile("'*[" + re.escape(FORMULA_TRIGGERS) + "]")
_QUOTED = re.compile("'+[" + re.escape(FORMULA_TRIGGERS) + "]")


def neutralise(cell: str) -> str:
    """``cell`` as a text cell no spreadsheet evaluates: ``-1-1`` becomes ``'-1-1``."""
    return "'" + cell if _NEEDS_QUOTE.match(cell) else cell


def restore(cell: str) -> str:
    """The text ``neutralise`` was given, from what it wrote."""
    return cell[1:] if _QUOTED.match(cell) else cell
