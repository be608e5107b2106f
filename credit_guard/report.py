"""Usage as text: a readable table, CSV or JSON lines.

Used by ``credit-guard usage``.  Amounts are printed as their exact decimal
text (never rounded, never a float); times as ISO 8601 UTC.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from decimal import Decimal

from .errors import dumps
from .money import json_text
from .records import UsageRecord, UsageRow

__all__ = ["FORMATS", "render_records", "render_rows"]

FORMATS = ("table", "csv", "json")

_ROW_FIELDS = ("requests", "input_tokens", "output_tokens", "cached_tokens", "held", "charged")
_RECORD_FIELDS = (
    "ended_at",
    "request_id",
    "account",
    "key",
    "model",
    "route",
    "outcome",
    "input_tokens",
    "output_tokens",
    "cached_tokens",
    "held",
    "charged",
    "started_at",
)


def _cell(value: object) -> str:
    if isinstance(value, Decimal):
        return json_text(value)
    return str(value)


def render_rows(rows: Sequence[UsageRow], by: str, fmt: str) -> str:
    """A summary grouped ``by``; the table ends with a total line."""
    dicts = [row.as_json(by) for row in rows]
    fields = (by, *_ROW_FIELDS)
    if fmt == "table":
        total = UsageRow("total")
        for row in rows:
            total.requests += row.requests
            total.input_tokens += row.input_tokens
            total.output_tokens += row.output_tokens
            total.cached_tokens += row.cached_tokens
            total.held += row.held
            total.charged += row.charged
        return _table(fields, dicts, total.as_json(by) if rows else None)
    return _render(fields, dicts, fmt)


def render_records(records: Sequence[UsageRecord], fmt: str) -> str:
    """Records, one per line, newest first."""
    dicts = [record.as_json() for record in records]
    if fmt == "table":
        return _table(_RECORD_FIELDS, dicts, None)
    return _render(_RECORD_FIELDS, dicts, fmt)


def _render(fields: Sequence[str], dicts: list[dict[str, object]], fmt: str) -> str:
    if fmt == "json":
        return "".join(dumps(d).decode() + "\n" for d in dicts)
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(fields)
        for d in dicts:
            writer.writerow([_cell(d[f]) for f in fields])
        return out.getvalue()
    raise ValueError(f"format must be one of {', '.join(FORMATS)}")


def _table(fields: Sequence[str], dicts: list[dict[str, object]], total: dict[str, object] | None) -> str:
    lines = [[_cell(d[f]) for f in fields] for d in dicts]
    footer = [_cell(total[f]) for f in fields] if total is not None else None
    every = [list(fields), *lines, *([footer] if footer else [])]
    widths = [max(len(line[i]) for line in every) for i in range(len(fields))]
    # Text left, figures right.
    numeric = [f in _ROW_FIELDS or f in _RECORD_FIELDS[7:12] for f in fields]

    def show(line: list[str]) -> str:
        cells = [c.rjust(w) if n else c.ljust(w) for c, w, n in zip(line, widths, numeric, strict=True)]
        return "  ".join(cells).rstrip()

    rule = "  ".join("-" * w for w in widths)
    out = [show(list(fields)), rule, *(show(line) for line in lines)]
    if footer is not None:
        out += [rule, show(footer)]
    if not dicts:
        out.append("(no usage in this range)")
    return "\n".join(out) + "\n"
