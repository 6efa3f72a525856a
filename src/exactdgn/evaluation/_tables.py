"""Results on disk and as text: JSON with numpy values, flattened records, markdown tables."""

from __future__ import annotations

import json
import math

import numpy as np

from ..io import atomic_path

__all__ = ["flatten", "json_default", "markdown_table", "write_json"]


def json_default(o):
    """``json.dumps(default=...)`` for numpy scalars and arrays."""
    if isinstance(o, np.bool_):
        return bool(o)
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def write_json(path, obj) -> None:
    """Write ``obj`` as indented JSON to ``path`` (str or Path; numpy values converted, NaN
    allowed)."""
    text = json.dumps(obj, indent=2, default=json_default, allow_nan=True)
    with atomic_path(path) as tmp:  # never half a file, also after a Ctrl-C
        tmp.write_text(text + "\n")  # a text file ends with a newline (cat, diff, git)


def _is_number(x) -> bool:
    return isinstance(x, int | float | np.integer | np.floating)


def _plain_number(x):
    """A numpy scalar as the Python number it holds (``np.float32(0.5)`` -> ``0.5``)."""
    return x.item() if isinstance(x, np.generic) else x


def flatten(d: dict, prefix: str = "") -> dict:
    """Nested dict -> ``{"a.b": scalar}`` (short numeric lists as text; other values dropped)."""
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, np.bool_ | np.integer | np.floating):
            v = v.item()
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        elif isinstance(v, bool | int | float | str) or v is None:
            out[key] = v
        elif isinstance(v, list) and len(v) <= 8 and all(_is_number(x) for x in v):
            out[key] = "[" + ",".join(str(_plain_number(x)) for x in v) + "]"
    return out


def _fmt(v) -> str:
    v = _plain_number(v)
    if v is None:
        return ""
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if v != 0.0 and abs(v) < 1e-3:  # a small gap is not 0.0000
            return f"{v:.3g}"
        return f"{v:.4f}" if abs(v) < 1e5 else f"{v:.4g}"
    return str(v)


def _cell(text) -> str:
    """A table cell: ``|`` escaped (it would end the cell), newlines as spaces."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def markdown_table(rows: list[dict], columns: list[str] | None = None) -> str:
    """A markdown table of ``rows`` (dicts of scalars); columns in order of first appearance.

    ``columns`` (names, in order) picks and orders the columns; a row without one has an empty
    cell. With ``columns`` and no rows the table is its header; with no columns (none given
    and none in the rows, e.g. ``rows=[]``) it is the empty string.
    """
    if columns is None:
        columns = []
        for r in rows:
            for k in r:
                if k not in columns:
                    columns.append(k)
    if not columns:
        return ""
    lines = ["| " + " | ".join(_cell(c) for c in columns) + " |", "|" + "---|" * len(columns)]
    for r in rows:
        lines.append("| " + " | ".join(_cell(_fmt(r.get(c))) for c in columns) + " |")
    return "\n".join(lines)
