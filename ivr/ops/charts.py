"""Charts as inline SVG made on the server: no JavaScript, readable by screen readers.

Each chart has a <title> and <desc> (referenced by aria-labelledby) and text labels with the
numbers; the pages also show the same numbers in a table.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from markupsafe import Markup, escape

_WIDTH = 720
_LABEL = 200
_VALUE = 150
_ROW = 28
_BAR = 18


@dataclass(frozen=True)
class Bar:
    """One row: a label, a main value and an optional part of it drawn darker."""

    label: str
    value: float
    part: float | None = None
    text: str = ""


def bar_chart(chart_id: str, title: str, description: str, bars: Sequence[Bar]) -> Markup:
    """Horizontal bars, one per row, with the row's text at the end of its bar."""
    height = max(len(bars), 1) * _ROW + 8
    top = max((max(b.value, b.part or 0) for b in bars), default=0) or 1
    span = _WIDTH - _LABEL - _VALUE
    rows = []
    for i, bar in enumerate(bars):
        y = 4 + i * _ROW
        width = span * bar.value / top
        rows.append(
            f'<text class="chart-label" x="{_LABEL - 8}" y="{y + _BAR - 4}" '
            f'text-anchor="end">{escape(bar.label)}</text>'
            f'<rect class="bar" x="{_LABEL}" y="{y}" width="{width:.1f}" height="{_BAR}"/>')
        if bar.part is not None:
            part = span * min(bar.part, bar.value) / top
            rows.append(f'<rect class="bar-part" x="{_LABEL}" y="{y}" width="{part:.1f}" '
                        f'height="{_BAR}"/>')
        text = bar.text or _number(bar.value)
        rows.append(f'<text class="chart-value" x="{_LABEL + width + 6:.1f}" '
                    f'y="{y + _BAR - 4}">{escape(text)}</text>')
    # Safe: every text in it went through escape(); the rest are numbers and fixed markup.
    return Markup(  # noqa: S704
        f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" role="img" '
        f'viewBox="0 0 {_WIDTH} {height}" width="{_WIDTH}" height="{height}" '
        f'aria-labelledby="{chart_id}-title {chart_id}-desc">'
        f'<title id="{chart_id}-title">{escape(title)}</title>'
        f'<desc id="{chart_id}-desc">{escape(description)}</desc>'
        f'{"".join(rows)}</svg>')


def _number(value: float) -> str:
    return f"{value:.0f}" if float(value).is_integer() else f"{value:.1f}"


def percent(part: int, whole: int) -> str:
    """A share as a whole percentage ("-" when there is no whole)."""
    return f"{100 * part / whole:.0f}%" if whole else "-"
